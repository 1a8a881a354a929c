#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (CTest: unit tests and
# real-process transfer tests over loopback UCX).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2 "$@"
