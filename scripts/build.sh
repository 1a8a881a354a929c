#!/usr/bin/env bash
# Installs what kvdist needs (Debian packages, as root) and builds it into
# build/. Idempotent: installs only what is missing, rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in build-essential cmake ninja-build pkg-config libucx-dev ucx-utils libgtest-dev \
           googletest iproute2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j 2
