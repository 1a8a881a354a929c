#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job: a PROMPT and a
# DECODER process on this host; a Llama-3-8B-shaped KV cache (32 layers,
# 4096 tokens, 512 MiB) pushed layer by layer, bytes verified.
# Extra arguments go to kvdist_demo (e.g. --tls tcp, --tokens 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
"$BUILD_DIR/examples/kvdist_demo" "$@"
