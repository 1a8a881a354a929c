"""kvdist-bench end to end on a small case: processes, bytes verified, outputs written."""

from __future__ import annotations

import json
from pathlib import Path

from kvdist.bench.cases import MODELS, Case, block_table
from kvdist.bench.cli import main


def test_block_tables_are_permutations() -> None:
    for kind in ("sequential", "random", "mixed"):
        table = block_table(kind, 100, 7)
        assert sorted(table) == list(range(100)), kind
    assert block_table("random", 100, 7) != list(range(100))


def test_case_sizes() -> None:
    c = Case(MODELS["llama3-8b"], 4096)
    assert c.tensor_bytes == 8 << 20
    assert c.bytes_per_destination == 512 << 20
    p = Case(MODELS["llama3-8b"], 4096, layout="paged", block_tokens=16)
    assert p.block_bytes == 32 << 10
    assert p.num_blocks == 256


def test_small_run_verifies_bytes_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "--model",
            "qwen2.5-7b",
            "--tokens",
            "256",
            "--table",
            "mixed",
            "--destinations",
            "2",
            "--compute-ms",
            "2",
            "--reps",
            "1",
            "--baselines",
            "memcpy",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["results"]
    kv = [r for r in rows if r["system"] == "kvdist"]
    assert len(kv) == 4  # contiguous and paged, bulk and layer-wise
    assert all(r["ok"] and r["verified"] for r in kv)
    assert all(r["bytes"] == 2 * 28 * 256 * 4 * 128 * 2 * 2 for r in kv)
    assert any(r["system"] == "memcpy" for r in rows)
    # The saved results can be reported again without running anything.
    md = tmp_path / "bench.md"
    assert main(["--from-json", str(out), "--markdown", str(md)]) == 0
    table = md.read_text()
    assert table.startswith("| case |")
    assert table.count("verified") == 4
