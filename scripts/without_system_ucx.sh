#!/usr/bin/env bash
# Runs "$@" where the system's UCX does not exist: in a private mount
# namespace, Debian's UCX libraries, modules, CMake config and pkg-config
# files are hidden by an overlay of whiteouts over /usr/lib/x86_64-linux-gnu. Nothing outside changes, and
# nothing is left behind. Needs root (unshare, mount).
set -euo pipefail
exec unshare -m bash -c '
set -e
lib=/usr/lib/x86_64-linux-gnu
top=$(mktemp -d)
mkdir -p "$top/up" "$top/work"
mkdir -p "$top/up/cmake" "$top/up/pkgconfig"
for f in "$lib"/libuc[mpst]*.so* "$lib"/ucx "$lib"/cmake/ucx "$lib"/pkgconfig/ucx*.pc; do
  [ -e "$f" ] && mknod "$top/up/${f#$lib/}" c 0 0
done
mount -t overlay overlay -o "lowerdir=$lib,upperdir=$top/up,workdir=$top/work" "$lib"
exec "$@"' bash "$@"
