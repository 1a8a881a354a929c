"""Tables for people, JSON for machines, a PNG plot."""

from __future__ import annotations

import json
from typing import Any, Optional

__all__ = ["markdown_table", "print_table", "write_json", "write_plot"]


def _fmt(v: Optional[float], unit: str = "", digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results, one line per measured case or baseline."""
    print(f"\n{'case':<62} {'GB/s':>7} {'exposed':>9} {'layer':>8} {'post':>8} {'cpu P/D':>11}")
    for r in rows:
        if not r.get("ok") and r.get("error"):
            print(f"{r['label']:<62} error: {r['error']}")
            continue
        exposed = r.get("exposed_ms")
        cpu = f"{r['cpu_prompt_s']:.2f}/{r['cpu_decoders_s']:.2f}s" if "cpu_prompt_s" in r else ""
        # A layer-wise run's duration is mostly the simulated compute.
        gbps = None if r.get("mode") == "layerwise" else r.get("gbps")
        print(
            f"{r['label'][:62]:<62} {_fmt(gbps) if gbps is not None else '':>7} "
            f"{_fmt(exposed, 'ms', 1) if exposed is not None else '':>9} "
            f"{_fmt(r.get('layer_transfer_ms'), 'ms', 1) if 'layer_transfer_ms' in r else '':>8} "
            f"{_fmt(r.get('post_overhead_us'), 'us', 0) if 'post_overhead_us' in r else '':>8} "
            f"{cpu:>11}"
        )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (docs/benchmarks.md)."""
    out = [
        "| case | GB/s | exposed after last layer | per-layer transfer | post overhead "
        "| puts | CPU prompt / decoders | bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if not r.get("ok"):
            out.append(f"| {r['label']} | error: {r.get('error', '')} | | | | | | |")
            continue
        layerwise = r.get("mode") == "layerwise"
        gbps = "" if layerwise else f"{r['gbps']:.2f}"
        exposed = f"{r['exposed_ms']:.1f} ms" if r.get("exposed_ms") is not None else ""
        layer = f"{r['layer_transfer_ms']:.1f} ms" if r.get("layer_transfer_ms") is not None else ""
        post = f"{r['post_overhead_us']:.0f} µs" if r.get("post_overhead_us") is not None else ""
        puts = "" if r.get("puts") is None else str(r["puts"])
        cpu = (
            f"{r['cpu_prompt_s']:.2f} / {r['cpu_decoders_s']:.2f} s" if "cpu_prompt_s" in r else ""
        )
        verified = "verified" if r.get("verified") else ""
        out.append(
            f"| {r['label']} | {gbps} | {exposed} | {layer} | {post} | {puts} | {cpu} | {verified} |"
        )
    return "\n".join(out) + "\n"


def write_json(path: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)


def write_plot(path: str, rows: list[dict[str, Any]]) -> Optional[str]:
    """Bandwidth against put size per system, and exposed time layer-wise vs
    the bulk transfer time. Returns an error string if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'kvdist[bench]')"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    systems: dict[str, list[tuple[int, float]]] = {}
    pulls = False
    for r in rows:
        if r.get("ok") and r.get("gbps") and r.get("mode", "bulk") in ("bulk", "pull"):
            name = r["system"]
            if name == "kvdist":
                pull = r.get("mode") == "pull"
                pulls = pulls or pull
                name = f"kvdist{' pull' if pull else ''} {r['layout']}" + (
                    f" {r['table']}" if r.get("table") else ""
                )
            systems.setdefault(name, []).append((r["put_bytes"], r["gbps"]))
    for name, points in sorted(systems.items()):
        points.sort()
        ax1.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("bytes per put (tensor or block)")
    ax1.set_ylabel("GB/s")
    ax1.set_title("Bulk push and pull bandwidth" if pulls else "Bulk push bandwidth")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    labels, bulk_ms, exposed_ms = [], [], []
    bulk = {
        (r["model"], r["tokens"], r["layout"], r.get("table"), r["destinations"]): r
        for r in rows
        if r.get("system") == "kvdist" and r.get("mode") == "bulk" and r.get("ok")
    }
    for r in rows:
        if r.get("system") != "kvdist" or r.get("mode") != "layerwise" or not r.get("ok"):
            continue
        key = (r["model"], r["tokens"], r["layout"], r.get("table"), r["destinations"])
        if key in bulk:
            labels.append(f"{r['tokens']}tok {r['layout'][:4]} x{r['destinations']}")
            bulk_ms.append(bulk[key]["elapsed_ms"])
            exposed_ms.append(r["exposed_ms"])
    xs = range(len(labels))
    ax2.bar([x - 0.2 for x in xs], bulk_ms, 0.4, label="bulk: whole transfer after prefill")
    ax2.bar([x + 0.2 for x in xs], exposed_ms, 0.4, label="layer-wise: exposed after last layer")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax2.set_ylabel("ms")
    ax2.set_title("Time the decoder waits after prefill")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
