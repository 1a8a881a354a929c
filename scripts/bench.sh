#!/usr/bin/env bash
# The main job: installs this package with pip (UCX comes from PyPI with
# it: no Debian package is needed), then runs kvdist-bench: a PROMPT and a
# DECODER process on this
# host push a Llama-3-8B-shaped KV cache (4096 tokens, 512 MiB), contiguous
# and paged, bulk and layer-wise, beside memcpy and ucx_perftest.
# Arguments go to kvdist-bench (kvdist-bench --help; --full for the matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check ".[bench]"
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
kvdist-bench "$@"
