#!/usr/bin/env bash
# Builds the C++ tests with ASan+UBSan and with TSan (separate build folders)
# and runs them, then runs one transfer under valgrind memcheck. UCX's memory
# hooks are turned off (UCX_MEM_EVENTS=no): under TSan they crash in exiting
# threads. Fails on any sanitizer or valgrind report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} UCX_MEM_EVENTS=no
logs=$(mktemp -d)
run() {  # name, sanitizer, env...
  local name=$1 san=$2
  shift 2
  cmake -S . -B "build-$name" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKVDIST_SANITIZE="$san" \
    -DKVDIST_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "build-$name" -j 2
  env "$@" ctest --test-dir "build-$name" --output-on-failure -j 2
}
run asan address,undefined \
  ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:log_path=$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
run tsan thread \
  TSAN_OPTIONS="suppressions=$PWD/tools/sanitizers/tsan.supp:history_size=7:log_path=$logs/tsan"
# One transfer under valgrind memcheck (both processes): no definite leak,
# no invalid access.
cmake -S . -B build -G Ninja >/dev/null && cmake --build build -j 2
UCX_MEM_EVENTS=no valgrind --quiet --trace-children=yes --leak-check=full \
  --errors-for-leak-kinds=definite --error-exitcode=1 --log-file="$logs/valgrind.%p" \
  build/tests/cpp/kvdist_transfer_tests \
  --gtest_filter=TransferTest.ContiguousAllLayersArriveFromTheGivenBatch
# valgrind writes a log per process; with --quiet it holds only errors and
# warnings (e.g. "ignores shmget(shmflg) SHM_HUGETLB"): keep logs with errors.
for f in "$logs"/valgrind.*; do
  [ -e "$f" ] || continue
  grep -qvE '^==[0-9]+== (WARNING: .*)?$' "$f" || rm -f "$f"
done
# Reports of child (peer) processes do not fail their test: look for them.
if ls "$logs"/* >/dev/null 2>&1; then
  echo "sanitizer reports:"
  head -n 60 "$logs"/*
  exit 1
fi
echo "sanitizers: clean"
