"""kvdist-bench end to end on a small case: processes, bytes verified, outputs written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kvdist.bench.cases import MODELS, Case, block_table
from kvdist.bench.cli import main
from kvdist.bench.netns import netns_unavailable
from kvdist.bench.twohosts import child_argv


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


def _tiny(*extra: str) -> list[str]:
    return ["--model", "qwen2.5-7b", "--tokens", "256", "--reps", "1", *extra]


def _pull_rows(out: Path) -> list[dict]:
    rows = json.loads(out.read_text())["results"]
    return [r for r in rows if r["system"] == "kvdist" and r["mode"] == "pull"]


def test_pull_mode_verifies_every_pull(tmp_path: Path) -> None:
    """--mode pull: the DECODER pulls the PROMPT's whole cache by its cache id
    (paged: the push cases' block mapping); with --zero-check its cache is
    zeroed before every timed pull and every byte compared after it."""
    out = tmp_path / "pull.json"
    code = main(
        [
            *_tiny("--reps", "2", "--mode", "bulk,pull", "--zero-check"),
            *("--layout", "contiguous,paged", "--baselines", "", "--json", str(out)),
        ]
    )
    assert code == 0
    pulls = _pull_rows(out)
    assert sorted(r["layout"] for r in pulls) == ["contiguous", "paged"]
    for r in pulls:
        assert r["ok"] and r["verified"], r
        assert r["gbps"] > 0 and r["gbps_best"] >= r["gbps"]
        assert r["bytes"] == 2 * 28 * 256 * 4 * 128 * 2
        assert r["cpu_prompt_s"] >= 0 and r["cpu_decoders_s"] >= 0
        assert r["label"].endswith(" pull")
    # Beside the push rows of the same cases, named alike.
    bulk = json.loads(out.read_text())["results"]
    labels = {r["label"] for r in bulk if r["system"] == "kvdist"}
    assert {r["label"].replace(" pull", " bulk") for r in pulls} <= labels


def test_prompt_and_decoder_roles_over_loopback(tmp_path: Path) -> None:
    """--role prompt and --role decoder as two separate commands: the bench's
    commands travel as kvdist messages over the link, the bytes are verified."""
    out, port_file = tmp_path / "prompt.json", tmp_path / "port"
    env = dict(os.environ, UCX_NET_DEVICES="lo", UCX_TLS="tcp")
    bench = [sys.executable, "-m", "kvdist.bench"]
    prompt = subprocess.Popen(
        [
            *bench,
            *_tiny("--tls", "tcp", "--baselines", "", "--json", str(out)),
            *("--role", "prompt", "--listen", "127.0.0.1:0", "--port-file", str(port_file)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    decoder = None
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline and prompt.poll() is None:
            time.sleep(0.05)
        assert port_file.exists(), "the PROMPT did not listen"
        peer = f"127.0.0.1:{port_file.read_text()}"
        decoder = subprocess.Popen(
            [*bench, "--role", "decoder", "--peer", peer, "--cluster-id", "7", "--tls", "tcp"],
            env=env,
        )
        assert prompt.wait(60) == 0
        assert decoder.wait(20) == 0
    finally:
        for p in (prompt, decoder):
            if p is not None and p.poll() is None:
                p.kill()
    rows = json.loads(out.read_text())["results"]
    kv = [r for r in rows if r["system"] == "kvdist"]
    assert len(kv) == 4
    assert all(r["ok"] and r["verified"] and r["link"] == "network" for r in kv)


def _netns_works() -> bool:
    return netns_unavailable() == ""


@pytest.mark.skipif(not _netns_works(), reason="needs root and a working `ip netns`")
def test_netns_two_hosts(tmp_path: Path) -> None:
    """--netns: PROMPT in a hub namespace, DECODER in a spoke, over a veth pair;
    ucp_am_bw on the same link; no namespace left behind."""
    out = tmp_path / "netns.json"
    code = main(
        [
            *_tiny("--tls", "tcp", "--layout", "contiguous", "--mode", "bulk", "--json", str(out)),
            *("--baselines", "perftest", "--netns"),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    kv = [r for r in rows if r["system"] == "kvdist"]
    assert len(kv) == 1 and kv[0]["ok"] and kv[0]["verified"] and kv[0]["link"] == "veth"
    am = [r for r in rows if r.get("test") == "ucp_am_bw"]
    assert am and am[0]["ok"] and am[0]["link"] == "veth" and am[0]["put_bytes"] == 256 * 1024
    assert any("ucp_am_bw" in t["what"] for t in data["meta"]["targets"])
    mine = f"kvdist_{os.getpid()}_"
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert mine not in after.stdout


@pytest.mark.skipif(not _netns_works(), reason="needs root and a working `ip netns`")
def test_netns_pull(tmp_path: Path) -> None:
    """--mode pull between namespaces: the request and the PROMPT's writes over the veth."""
    out = tmp_path / "netns_pull.json"
    code = main(
        [
            *_tiny("--tls", "tcp", "--mode", "pull", "--zero-check", "--json", str(out)),
            *("--baselines", "", "--netns"),
        ]
    )
    assert code == 0
    pulls = _pull_rows(out)
    assert len(pulls) == 2
    assert all(r["ok"] and r["verified"] and r["gbps"] > 0 and r["link"] == "veth" for r in pulls)


def test_child_argv_keeps_the_cases() -> None:
    argv = ["--tokens", "1024", "--netns", "--json=x.json", "--plot", "p.png", "--tls", "tcp"]
    assert child_argv(argv) == ["--tokens", "1024", "--tls", "tcp"]
