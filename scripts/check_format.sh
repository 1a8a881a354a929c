#!/usr/bin/env bash
# Fails if clang-format (Google base, 100 columns: .clang-format) would
# change any C++ file.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-format >/dev/null
}
bad=$(git ls-files '*.h' '*.cc' | xargs clang-format --dry-run --Werror 2>&1 | grep -o '^[^:]*:' | sort -u || true)
if [ -n "$bad" ]; then
  echo "clang-format would change: $bad"
  exit 1
fi
echo "clang-format: clean"
