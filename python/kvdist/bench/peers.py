"""Mooncake Transfer Engine and NIXL doing the same writes, via the scripts in
bench/peers/ of a kvdist checkout (they run in their own interpreter: both
libraries pull heavy dependencies, see bench/peers/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from kvdist.bench.cases import Case

__all__ = ["find_peers_dir", "peer_baseline"]

# Each library as its users run it: Mooncake's TCP transport with its queue
# limits raised (the defaults reject paged batches), NIXL's defaults.
VARIANTS = {"mooncake": "tcp/async/tuned", "nixl": "prepped:default"}


def find_peers_dir(start: Optional[str] = None) -> Optional[Path]:
    """bench/peers of the checkout containing `start` (default: the working directory)."""
    here = Path(start or ".").resolve()
    for d in [here, *here.parents]:
        if (d / "bench" / "peers" / "nixl_bench.py").exists():
            return d / "bench" / "peers"
    return None


def peer_baseline(
    system: str, case: Case, reps: int, peers_dir: Path, python: Optional[str]
) -> dict[str, Any]:
    """Runs bench/peers/<system>_bench.py on the case's layout; one result row."""
    row: dict[str, Any] = {
        "system": system,
        "label": f"{system} {case.label()}",
        "put_bytes": case.put_bytes,
        "bytes": case.bytes_per_destination,
        "layout": case.layout,
        "mode": "bulk",
        "ok": False,
    }
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
            VARIANTS[system],
            "--json",
            str(out),
        ]
        if python:
            cmd += ["--python", python]
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            row["error"] = f"{system} benchmark did not finish within 600 s"
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
    )
    return row
