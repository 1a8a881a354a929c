"""Mooncake Transfer Engine and NIXL doing the same writes, via the scripts in
bench/peers/ of a kvdist checkout (they run in their own interpreter: both
libraries pull heavy dependencies, see bench/peers/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kvdist.bench.cases import Case

__all__ = ["find_peers_dir", "peer_baseline"]

# Each library at its best as its users run it. Mooncake: its TCP transport with the
# queue limits raised (the defaults reject paged batches). NIXL: several configurations
# (bench/peers/nixl_bench.py names them), the script reports the fastest verified one:
# the initiator without a progress thread polling check_xfer_state itself (as nixlbench
# does), the target's progress thread sleeping between events (pthrDelay 1 ms) instead of
# spinning, and the UCX backend's thread pool (num_threads=2, every request split).
VARIANTS = {
    "mooncake": "tcp/async/tuned",
    "nixl": "prepped:default:i=poll+t=pt1000,"
    "prepped:default:i=poll+t=pt1000+nt2+sb1,"
    "prepped:default:i=poll50+t=pt1000+nt2+sb1,"
    "prepped:default:i=yield+t=pt1000+nt2+sb1,"
    "init:default:i=poll+t=pt1000",
}
ATTEMPT_TIMEOUT_S = 180  # per variant; the script kills an attempt that runs longer


def find_peers_dir(start: str | None = None) -> Path | None:
    """bench/peers of the checkout containing `start` (default: the working directory)."""
    here = Path(start or ".").resolve()
    for d in [here, *here.parents]:
        if (d / "bench" / "peers" / "nixl_bench.py").exists():
            return d / "bench" / "peers"
    return None


def peer_baseline(
    system: str,
    case: Case,
    reps: int,
    peers_dir: Path,
    python: str | None,
    zero_check: bool = False,
    variants: str | None = None,
    netns: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Runs bench/peers/<system>_bench.py on the case's layout; one result row: the
    fastest verified variant, its name and CPU seconds per push (cpu_prompt_s: the
    initiator, cpu_decoders_s: the target). zero_check: the target zeroes its cache
    before every timed push and checks every byte after it. netns: the target
    and the initiator in network namespaces (keys target_ns, target_host,
    initiator_ns, initiator_host; Mooncake only): its TCP over the same link."""
    row: dict[str, Any] = {
        "system": system,
        "label": f"{system} {case.label()}",
        "put_bytes": case.put_bytes,
        "bytes": case.bytes_per_destination,
        "model": case.model.name,
        "tokens": case.tokens,
        "layout": case.layout,
        "table": case.table if case.paged else None,
        "mode": "bulk",
        "ok": False,
    }
    if netns is not None:
        if system != "mooncake":
            row["error"] = f"{system} is not wired to run across --netns"
            return row
        row["label"] += f" via {netns.get('link', 'veth')}"
        row["link"] = netns.get("link", "veth")
    variants = variants or VARIANTS[system]
    budget = 120 + (ATTEMPT_TIMEOUT_S + 30) * len(variants.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [
            sys.executable,
            str(peers_dir / f"{system}_bench.py"),
            "--layers",
            str(case.model.layers),
            "--tensor-bytes",
            str(case.tensor_bytes),
            "--mode",
            case.layout,
            "--block-bytes",
            str(case.block_bytes),
            "--reps",
            str(reps),
            "--no-memcpy",
            "--variants",
            variants,
            "--timeout",
            str(ATTEMPT_TIMEOUT_S),
            "--json",
            str(out),
        ]
        if python:
            cmd += ["--python", python]
        if zero_check:
            cmd.append("--zero-check")
        for key, option in (
            ("target_ns", "--target-netns"),
            ("target_host", "--target-host"),
            ("initiator_ns", "--initiator-netns"),
            ("initiator_host", "--initiator-host"),
        ):
            if netns and netns.get(key):
                cmd += [option, netns[key]]
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            row["error"] = f"{system} benchmark did not finish within {budget} s"
            return row
        if not out.exists():
            row["error"] = f"{system} benchmark wrote no result"
            return row
        result = json.loads(out.read_text())
    if result.get("error") or not result.get("verified"):
        row["error"] = str(result.get("error") or "bytes not verified")[:300]
        return row
    row.update(
        ok=True,
        gbps=result["gbps_median"],
        gbps_best=result["gbps_best"],
        transport=result.get("transport", ""),
        variant=result.get("variant", ""),
        config=result.get("config") or "",
        zero_check=bool(result.get("zero_check")),
    )
    if result.get("cpu_initiator_s") is not None:
        # CPU seconds per push, user + system of all threads, the keys kvdist's rows use
        row["cpu_prompt_s"] = result["cpu_initiator_s"]
        row["cpu_decoders_s"] = result["cpu_target_s"]
    return row
