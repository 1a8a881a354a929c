"""Shared helpers of the llm_datadist tests: peer processes, patterns, ports.

A DECODER peer (``decoder_peer.py``) runs in its own process, as the
original's one-LLMDataDist-per-process rule requires, and talks JSON lines
over its stdin/stdout.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

HELPERS_DIR = Path(__file__).resolve().parent
PEER_TIMEOUT_S = 30.0


def child_env() -> dict[str, str]:
    """Environment for peer processes: loopback UCX and this process's import path."""
    env = dict(os.environ)
    env.setdefault("UCX_NET_DEVICES", "lo")
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_script(script: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Runs ``python -c script args`` (an LLMDataDist of its own: one per
    process) and returns its captured output."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout_s,
        check=False,
    )


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pattern(tensor_index: int, size: int, seed: int = 0) -> bytes:
    """Deterministic, tensor-specific bytes (no two tensors alike)."""
    base = (tensor_index * 31 + seed * 17 + 1) % 251
    return bytes((base + i * 7) % 251 for i in range(size))


def write_bytes(addr: int, data: bytes) -> None:
    """Copies ``data`` to process address ``addr``."""
    ctypes.memmove(addr, data, len(data))


def read_bytes(addr: int, size: int) -> bytes:
    """Reads ``size`` bytes at process address ``addr``."""
    return ctypes.string_at(addr, size)


class DecoderPeer:
    """A DECODER ``LLMDataDist`` in a child process.

    ``spec``: ``{"cluster_id": int, "prompts": [[cluster_id, ip, port], ...],
    "caches": [{"blocks": bool, "num_tensors": n, "shape": [...],
    "dtype": "DT_FLOAT16"}, ...], "options": {extra init options}}``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS_DIR / "decoder_peer.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        hello = self._read()
        if "error" in hello:
            self.close()
            raise RuntimeError(f"decoder peer failed to start: {hello['error']}")
        self.caches: list[dict[str, Any]] = hello["caches"]
        self.link: list[Any] = hello["link"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"decoder peer exited (rc={self.proc.poll()})")
        return dict(json.loads(line))

    def request(self, **command: Any) -> dict[str, Any]:
        """Sends one command and returns the peer's answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def addrs(self, cache: int = 0) -> list[int]:
        """Tensor addresses of the peer's cache ``cache``."""
        return list(self.caches[cache]["addrs"])

    def tensor_size(self, cache: int = 0) -> int:
        """Bytes of one tensor of the peer's cache ``cache``."""
        return int(self.caches[cache]["size"])

    def dump(self, cache: int = 0) -> list[bytes]:
        """Every tensor of the peer's cache ``cache``."""
        answer = self.request(cmd="dump", cache=cache)
        return [base64.b64decode(t) for t in answer["data"]]

    def clear(self, cache: int = 0) -> None:
        """Zeroes the peer's cache ``cache``."""
        self.request(cmd="clear", cache=cache)

    def close(self, unlink: bool = False) -> dict[str, Any]:
        """Finalises (after unlinking if ``unlink``) and waits for the peer.

        Returns the peer's last answer (``{}`` if it died).
        """
        answer: dict[str, Any] = {}
        try:
            if self.proc.poll() is None:
                answer = self.request(cmd="quit", unlink=unlink)
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=PEER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return answer
