#!/usr/bin/env bash
# Installs everything, builds, and runs every test:
#   1. CTest: C++ unit tests and real-process transfer tests (loopback UCX);
#   2. pytest: the Python packages (kvdist, llm_datadist) installed with
#      `pip install ".[test]"`, between real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2

PIP="python3 -m pip"
$PIP install -q --disable-pip-version-check ".[test]"
# torch tensors are tested when torch is there; 2.13.0 is the CPU build on this machine kind.
python3 -c "import torch" 2>/dev/null || $PIP install -q --disable-pip-version-check "torch==2.13.0" \
  || echo "torch not installable here: its tests are skipped"
cd tests/python
python3 -m pytest -q "$@"
