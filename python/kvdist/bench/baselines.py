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
from typing import Any, Optional

import numpy as np

from kvdist.bench.cases import Case, block_table

__all__ = ["memcpy_baseline", "perftest_baseline"]


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


def perftest_baseline(case: Case, size: int) -> dict[str, Any]:
    """ucx_perftest ucp_put_bw of `size`-byte puts on the case's transport,
    between two processes on loopback (UCX-allocated buffers, one buffer
    reused every iteration: with size = the whole cache the memory footprint
    is the case's; with a small size the buffer stays in the CPU cache)."""
    exe = shutil.which("ucx_perftest")
    result: dict[str, Any] = {
        "system": "ucx_perftest",
        # ucx_perftest reuses one buffer: at sizes that fit the CPU cache it
        # measures cache, not DRAM, bandwidth.
        "label": f"ucx_perftest ucp_put_bw {size} B (one reused buffer)"
        + (f" tls={case.tls}" if case.tls else ""),
        "put_bytes": size,
        "ok": False,
    }
    if exe is None:
        result["error"] = "ucx_perftest not found (apt-get install ucx-utils)"
        return result
    env = dict(os.environ, UCX_NET_DEVICES=os.environ.get("UCX_NET_DEVICES", "lo"))
    if case.tls:
        env["UCX_TLS"] = case.tls
    else:
        env.pop("UCX_TLS", None)
    iters = int(max(6, min(20000, (512 << 20) // size)))
    port = _free_port()
    server = subprocess.Popen(
        [exe, "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        out: Optional[str] = None
        for _ in range(50):  # the server needs a moment to listen
            time.sleep(0.1)
            try:
                out = subprocess.run(
                    [
                        exe,
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-t",
                        "ucp_put_bw",
                        "-s",
                        str(size),
                        "-n",
                        str(iters),
                        "-w",
                        str(max(2, iters // 10)),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
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
        result.update(gbps=mib_s * 1048576 / 1e9, bytes=size * iters, ok=True)
        return result
    finally:
        server.kill()
        server.wait()
