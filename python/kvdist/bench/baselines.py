"""Baselines measured in the same run: memcpy of the same bytes and ucx_perftest."""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvdist.bench.cases import Case, block_table

__all__ = ["LOOPBACK", "PerftestPath", "memcpy_baseline", "perftest_baseline"]


def memcpy_baseline(case: Case, reps: int, threads: int = 1) -> dict[str, Any]:
    """`threads` threads copy the same bytes with the same layout (numpy
    copyto, which releases the GIL and calls glibc's memcpy; block tables as
    the case's) into a separate buffer; the tensors are split among them."""
    layers = case.model.layers
    if case.paged:
        src = np.zeros((2 * layers, case.num_blocks, case.block_bytes), dtype=np.uint8)
        dst = np.zeros_like(src)
        s_idx = np.array(block_table(case.table, case.num_blocks, 1))
        d_idx = np.array(block_table(case.table, case.num_blocks, 100))
    else:
        src = np.zeros((2 * layers, case.tensor_bytes), dtype=np.uint8)
        dst = np.zeros_like(src)
    src[...] = 1

    def copy(part: range) -> None:
        for t in part:
            if case.paged:
                dst[t][d_idx] = src[t][s_idx]
            else:
                np.copyto(dst[t], src[t])

    parts = [range(i, 2 * layers, threads) for i in range(threads)]
    times = []
    with ThreadPoolExecutor(threads) as pool:
        for rep in range(reps + 1):
            start = time.perf_counter()
            list(pool.map(copy, parts))
            if rep > 0:
                times.append(time.perf_counter() - start)
    total = case.bytes_per_destination
    med = statistics.median(times)
    return {
        "system": "memcpy",
        "label": f"memcpy {threads}T {case.label()}",
        "threads": threads,
        "model": case.model.name,
        "tokens": case.tokens,
        "layout": case.layout,
        "table": case.table if case.paged else None,
        "put_bytes": case.put_bytes,
        "bytes": total,
        "gbps": total / med / 1e9,
        "gbps_best": total / min(times) / 1e9,
        "ok": True,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PerftestPath:
    """Where ucx_perftest's server and client run, and the link between them:
    loopback by default; the netns star's hub and first spoke with --netns."""

    name: str = "loopback"
    host: str = "127.0.0.1"  # the server's address, as the client dials it
    server_prefix: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", hub)
    client_prefix: tuple[str, ...] = ()
    server_env: tuple[tuple[str, str], ...] = ()
    client_env: tuple[tuple[str, str], ...] = ()


LOOPBACK = PerftestPath()


def perftest_baseline(
    case: Case,
    size: int,
    test: str = "ucp_put_bw",
    path: PerftestPath = LOOPBACK,
    tls: str | None = None,
    budget_bytes: int = 512 << 20,
) -> dict[str, Any]:
    """ucx_perftest `test` (ucp_put_bw, ucp_am_bw) of `size`-byte messages on
    `tls` (default: the case's transport) between two processes on `path`
    (UCX-allocated buffers, one buffer reused every iteration: with size =
    the whole cache the memory footprint is the case's; with a small size the
    buffer stays in the CPU cache). Iterations: about ``budget_bytes`` in all."""
    tls = case.tls if tls is None else tls
    exe = shutil.which("ucx_perftest")
    result: dict[str, Any] = {
        "system": "ucx_perftest",
        "test": test,
        # ucx_perftest reuses one buffer: at sizes that fit the CPU cache it
        # measures cache, not DRAM, bandwidth.
        "label": f"ucx_perftest {test} {size} B (one reused buffer)"
        + (f" tls={tls}" if tls else "")
        + ("" if path.name == "loopback" else f" via {path.name}"),
        "put_bytes": size,
        "tls": tls,
        "link": path.name,
        "ok": False,
    }
    if exe is None:
        result["error"] = "ucx_perftest not found (apt-get install ucx-utils)"
        return result
    env = dict(os.environ, UCX_NET_DEVICES=os.environ.get("UCX_NET_DEVICES", "lo"))
    if tls:
        env["UCX_TLS"] = tls
    else:
        env.pop("UCX_TLS", None)
    iters = int(max(6, min(20000, budget_bytes // size)))
    port = _free_port()
    server = subprocess.Popen(
        [*path.server_prefix, exe, "-p", str(port)],
        env=dict(env, **dict(path.server_env)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out: str | None = None
        for _ in range(50):  # the server needs a moment to listen
            time.sleep(0.1)
            try:
                out = subprocess.run(
                    [
                        *path.client_prefix,
                        exe,
                        path.host,
                        "-p",
                        str(port),
                        "-t",
                        test,
                        "-s",
                        str(size),
                        "-n",
                        str(iters),
                        "-w",
                        str(max(2, iters // 10)),
                    ],
                    env=dict(env, **dict(path.client_env)),
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                ).stdout
            except subprocess.TimeoutExpired:
                result["error"] = "ucx_perftest timed out"
                return result
            if "Final:" in out:
                break
        match = re.search(r"Final:\s+(.*)", out or "")
        if not match:
            result["error"] = "no result from ucx_perftest"
            return result
        cols = match.group(1).split()
        mib_s = float(cols[5])  # bandwidth overall, MiB/s
        result.update(gbps=mib_s * 1048576 / 1e9, bytes=size * iters, iters=iters, ok=True)
        return result
    finally:
        server.kill()
        server.wait()
