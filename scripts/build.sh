#!/usr/bin/env bash
# Installs what kvdist needs (Debian packages, as root) and builds it into
# build/. Idempotent: installs only what is missing, rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j 2
