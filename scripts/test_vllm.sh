#!/usr/bin/env bash
# The vLLM connector's end-to-end tests (tests/vllm): real vLLM engines in
# .venv-vllm (scripts/vllm_env.sh). Called by scripts/test.sh; runs alone
# too (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vllm_env.sh
cd tests/vllm
"$VLLM_PY" -m pytest -q "$@"
