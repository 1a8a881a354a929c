#!/usr/bin/env bash
# Installs the Debian packages the C++ build and tests use (as root, or with
# sudo); only what is missing. The Python package needs none of them: its
# UCX comes from PyPI (libucx-cu12).
set -euo pipefail
need=()
for pkg in build-essential cmake ninja-build pkg-config libucx-dev ucx-utils libgtest-dev \
           googletest iproute2 clang-format valgrind; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
