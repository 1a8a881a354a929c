"""kvdist-vllm-bench: TTFT and end-to-end latency of vLLM on this host,
per prompt length, for

- single: one vLLM server (no disaggregation; the floor);
- kvdist: prefill + decode servers, KvdistConnector, layer-wise push;
- kvdist-after: the same, pushing once the prefill forward is over;
- nixl: prefill + decode servers with vLLM's NixlConnector (UCX backend,
  host buffers), driven the way vLLM's own proxy drives it (prefill first,
  its kv_transfer_params to the decoder, which pulls).

Every system runs the same tiny Llama (dummy weights, float16) and the same
token-id prompts; tokens are compared with the single server's. Writes JSON
and, with matplotlib, a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from kvdist.integrations.vllm.demo import start_disaggregated
from kvdist.integrations.vllm.servers import Servers, post, stream
from kvdist.integrations.vllm.tiny_model import write_tiny_llama

SYSTEMS = ("single", "kvdist", "kvdist-after", "nixl")

Request = Callable[[list[int], int], tuple[float, float, list[int]]]


def _nixl(servers: Servers, base: int) -> Request:
    pp, dp = base, base + 1
    ktc = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cpu"}
    for name, port, side in (("prefill", pp, base + 10), ("decode", dp, base + 11)):
        servers.start(name, port, ktc, {"VLLM_NIXL_SIDE_CHANNEL_PORT": str(side)})
    servers.wait_healthy()

    def request(prompt: list[int], max_tokens: int) -> tuple[float, float, list[int]]:
        t0 = time.perf_counter()
        first = post(pp, {
            "model": "tiny", "prompt": prompt, "max_tokens": 1, "temperature": 0,
            "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False,
                                   "remote_engine_id": None, "remote_block_ids": None,
                                   "remote_host": None, "remote_port": None},
        })  # fmt: skip
        params = first.get("kv_transfer_params")
        ttft, total, tokens = stream(dp, prompt, max_tokens, {"kv_transfer_params": params})
        lead = time.perf_counter() - t0 - total
        return ttft + lead, total + lead, tokens

    return request


PUSH_LINE = re.compile(
    r"kvdist push \S+: ([\d.]+) MiB in \d+ layers, writes ([\d.]+) ms in all, "
    r"complete ([\d.]+) ms after the last layer"
)


def push_figures(log: Path) -> list[tuple[float, float, float]]:
    """(MiB, ms of writes, ms after the last layer) of each push, in order,
    from the prefill server's log (kvdist systems)."""
    if not log.exists():
        return []
    return [tuple(map(float, m.groups())) for m in PUSH_LINE.finditer(log.read_text())]


def start(system: str, servers: Servers, base: int) -> Request:
    if system == "single":
        servers.start("single", base)
        servers.wait_healthy()
        return lambda prompt, n: stream(base, prompt, n)
    if system in ("kvdist", "kvdist-after"):
        push = "after_forward" if system == "kvdist-after" else "layerwise"
        port, _ = start_disaggregated(servers, base, push)
        return lambda prompt, n: stream(port, prompt, n)
    if system == "nixl":
        return _nixl(servers, base)
    raise SystemExit(f"unknown system {system}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("UCX_NET_DEVICES", "lo")
    work = Path(tempfile.mkdtemp(prefix="kvdist-vllm-bench-"))
    lengths = [int(x) for x in args.tokens.split(",")]
    model = write_tiny_llama(
        str(work / "tiny-llama"), layers=args.layers, kv_heads=args.kv_heads, head_dim=args.head_dim
    )
    kv_bytes = args.layers * args.kv_heads * args.head_dim * 2 * 2  # K and V, fp16
    print(f"KV cache: {kv_bytes} bytes per token, {kv_bytes * max(lengths) / 2**20:.0f} MiB at "
          f"{max(lengths)} tokens", flush=True)  # fmt: skip
    rng = random.Random(0)
    prompts = {n: [[rng.randrange(1, 500) for _ in range(n)] for _ in range(args.reps)]
               for n in lengths}  # fmt: skip
    out: dict[str, Any] = {
        "config": vars(args),
        "kv_bytes_per_token": kv_bytes,
        "logs": str(work),
        "systems": {},
    }
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    for k, system in enumerate(args.systems.split(",")):
        sub = work / system
        sub.mkdir()
        print(f"{system}: starting (logs in {sub})", flush=True)
        rows = []
        with Servers(model, sub, args.dtype, args.kv_cache_mib, env=server_env) as servers:
            request = start(system, servers, args.base_port + 20 * k)
            for _ in range(2):
                request([rng.randrange(1, 500) for _ in range(64)], 2)  # warm-up
            for n in lengths:
                cpu0 = servers.cpu_seconds()
                runs = [request(p, args.max_tokens) for p in prompts[n]]
                cpu = (servers.cpu_seconds() - cpu0) / len(runs)
                row = {
                    "tokens": n,
                    "ttft_ms": statistics.median(r[0] for r in runs) * 1e3,
                    "e2e_ms": statistics.median(r[1] for r in runs) * 1e3,
                    "ttft_all_ms": [r[0] * 1e3 for r in runs],
                    "server_cpu_s": cpu,
                    "generated": [r[2] for r in runs],
                }
                rows.append(row)
                print(f"  {n:>6} tokens: TTFT {row['ttft_ms']:8.1f} ms, "
                      f"end-to-end {row['e2e_ms']:8.1f} ms, servers' CPU {cpu:6.2f} s "
                      "per request", flush=True)  # fmt: skip
        pushes = push_figures(sub / "prefill.log")[2:]  # after the two warm-ups
        if len(pushes) == len(lengths) * args.reps:
            for i, row in enumerate(rows):
                mine = pushes[i * args.reps : (i + 1) * args.reps]
                row["push_mib"] = mine[0][0]
                row["push_writes_ms"] = statistics.median(x[1] for x in mine)
                row["push_exposed_ms"] = statistics.median(x[2] for x in mine)
                print(f"  {row['tokens']:>6} tokens: push {row['push_mib']:.1f} MiB, writes "
                      f"{row['push_writes_ms']:.2f} ms, complete {row['push_exposed_ms']:.2f} ms "
                      "after the last layer was written")  # fmt: skip
        out["systems"][system] = rows
    ref = out["systems"].get("single")
    if ref:
        for system, rows in out["systems"].items():
            same = sum(a["generated"] == b["generated"] for a, b in zip(rows, ref))
            out.setdefault("tokens_equal_single", {})[system] = f"{same}/{len(rows)} lengths"
    return out


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for system, rows in result["systems"].items():
        xs = [r["tokens"] for r in rows]
        axes[0].plot(xs, [r["ttft_ms"] for r in rows], marker="o", label=system)
        axes[1].plot(xs, [r["e2e_ms"] for r in rows], marker="o", label=system)
    for ax, title in zip(axes, ("TTFT", "end-to-end")):
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("ms (median)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    cfg = result["config"]
    env = " ".join(cfg["server_env"]) or "default server environment"
    fig.suptitle(f"vLLM on this host, tiny Llama ({cfg['layers']} layers, "
                 f"{result['kv_bytes_per_token'] >> 10} KiB KV/token, {cfg['dtype']}), "
                 f"{cfg['max_tokens']} new tokens; {env}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--tokens", default="128,512,1024,2048")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--kv-cache-mib", type=int, default=256, help="per server")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--base-port", type=int, default=8300)
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment of every vLLM server, e.g. VLLM_CPU_OMP_THREADS_BIND=0 (repeatable)",
    )
    p.add_argument("--json", default="vllm-bench.json")
    p.add_argument("--plot", default="vllm-bench.png")
    args = p.parse_args(argv)
    result = run(args)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"tokens equal to the single server's: {result.get('tokens_equal_single')}")
    print(f"wrote {args.json}")
    try:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    except ImportError:
        print("matplotlib is missing: no plot")


if __name__ == "__main__":
    main()
