#!/usr/bin/env bash
# Builds the libFuzzer targets of the decoders that read peers' bytes
# (net::decode, core::decode_note, the pull requests) with clang (-fsanitize=fuzzer,address,
# undefined) into build-fuzz/, and runs each for FUZZ_SECONDS (default 30).
# Installs clang if missing. Fails on any crash, leak or sanitizer report;
# prints the executions of each target.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
command -v clang++ >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
}
SECONDS_EACH=${FUZZ_SECONDS:-30}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DKVDIST_FUZZ=ON -DKVDIST_BUILD_TESTS=OFF \
  -DKVDIST_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-fuzz -j 2 --target kvdist_fuzz_wire kvdist_fuzz_note
for target in wire note; do
  corpus=build-fuzz/corpus-$target
  mkdir -p "$corpus"
  log=build-fuzz/fuzz-$target.log
  if ! "build-fuzz/tests/fuzz/kvdist_fuzz_$target" -max_total_time="$SECONDS_EACH" \
      -max_len=4096 -print_final_stats=1 -artifact_prefix=build-fuzz/ "$corpus" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target failed (crash input under build-fuzz/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  echo "fuzz: $target: $runs executions in ${SECONDS_EACH} s, no crash ($(ls "$corpus" | wc -l) corpus inputs)"
done
