#!/usr/bin/env bash
# Fails if clang-format (Google base, 100 columns: .clang-format) would
# change any C++ file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh  # brings clang-format
bad=()
while IFS= read -r f; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.h' '*.cc')
if [ ${#bad[@]} -gt 0 ]; then
  echo "clang-format would change: ${bad[*]}"
  exit 1
fi
echo "clang-format: clean"
