"""vLLM OpenAI servers on this host for the demo and the benchmark: start
them (tiny Llama, dummy weights), wait until healthy, stream completions,
stop them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional


class Servers:
    """Started vLLM servers; a context manager that stops them all."""

    def __init__(
        self,
        model: str,
        work: Path,
        dtype: str = "float16",
        kv_cache_mib: int = 256,
        env: Optional[dict[str, str]] = None,
    ):
        self.model, self.work, self.dtype, self.kv_cache_mib = model, work, dtype, kv_cache_mib
        self.env = dict(os.environ, **(env or {}))  # every server's environment
        self.procs: dict[str, tuple[subprocess.Popen, int]] = {}

    def start(
        self, name: str, port: int, ktc: Optional[dict[str, Any]] = None, env: Optional[dict] = None
    ) -> None:
        """One server; env: variables added for this one."""
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model, "--served-model-name", "tiny", "--port", str(port),
            "--load-format", "dummy", "--skip-tokenizer-init", "--enforce-eager",
            "--dtype", self.dtype, "--max-model-len", "4096", "--block-size", "32",
            "--kv-cache-memory-bytes", str(self.kv_cache_mib << 20), "--disable-log-stats",
        ]  # fmt: skip
        if ktc is not None:
            cmd += ["--kv-transfer-config", json.dumps(ktc)]
        log = self.work / f"{name}.log"
        with open(log, "w") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(self.env, **(env or {}))
            )
        self.procs[name] = (proc, port)

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for name, (proc, port) in self.procs.items():
            while True:
                if proc.poll() is not None:
                    log = self.work / f"{name}.log"
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                    raise SystemExit(f"{name} server exited ({proc.returncode}), {log}:\n{tail}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} server not healthy within {timeout:.0f} s")
                time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the servers and every
        process they started (vLLM's engine cores), from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        todo = [proc.pid for proc, _ in self.procs.values()]
        seen, total = set(), 0.0
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError, IndexError):
                continue
        return total

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, _ in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed completion."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"completion failed: {r.status} {data[:300]!r}")
    return json.loads(data)


def stream(
    port: int, prompt: list[int], max_tokens: int, extra: Optional[dict[str, Any]] = None
) -> tuple[float, float, list[int]]:
    """(TTFT s, end-to-end s, token ids) of one streamed greedy completion."""
    body = {
        "model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "return_token_ids": True, **(extra or {}),
    }  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"completion failed: {r.status} {r.read()[:300]!r}")
    ttft, tokens = None, []
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            ids = choice.get("token_ids") or []
            if ids and ttft is None:
                ttft = time.perf_counter() - t0
            tokens += ids
    return (ttft if ttft is not None else float("nan")), time.perf_counter() - t0, tokens
