#!/usr/bin/env bash
# Installs the Debian packages kvdist needs (as root, or with sudo); only
# what is missing.
set -euo pipefail
need=()
for pkg in build-essential cmake ninja-build pkg-config libucx-dev libssl-dev ucx-utils libgtest-dev \
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
