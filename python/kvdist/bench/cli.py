"""The kvdist-bench command line."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import platform
import sys
import time
from typing import Any, Callable

from kvdist.bench.baselines import LOOPBACK, PerftestPath, memcpy_baseline, perftest_baseline
from kvdist.bench.cases import AUTO, MODELS, Case, Model
from kvdist.bench.decoder import remote_decoder
from kvdist.bench.peers import find_peers_dir, peer_baseline
from kvdist.bench.remote import RemoteDecoders, split_host_port
from kvdist.bench.report import markdown_table, print_table, write_json, write_plot
from kvdist.bench.runner import Session, session_key
from kvdist.bench.targets import target_ratios

__all__ = ["main"]

# Budget of memory a session may map (source + destinations), on a 24 GiB host.
MAX_SESSION_BYTES = 12 << 30
MODES = ("bulk", "layerwise", "pull")


def _csv(kind: Any) -> Any:
    return lambda s: [kind(x) for x in s.split(",") if x]


def _compute_ms(s: str) -> float:
    return AUTO if s == "auto" else float(s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kvdist-bench",
        description="Push model-shaped KV caches from a PROMPT to DECODER processes on this "
        "host (or have the DECODERs pull them: --mode pull) and report bandwidth, "
        "exposed time and overheads, beside memcpy and "
        "ucx_perftest. With no options: a short default case (under a minute). "
        "Two hosts: --role prompt on one, --role decoder on the other; "
        "--netns emulates them on this machine (root).",
    )
    p.add_argument(
        "--model",
        type=_csv(str),
        default=["llama3-8b"],
        help=f"presets: {', '.join(MODELS)} or custom (comma list)",
    )
    p.add_argument("--layers", type=int, help="custom model: layers")
    p.add_argument("--kv-heads", type=int, help="custom model: KV heads")
    p.add_argument("--head-dim", type=int, help="custom model: head dim")
    p.add_argument("--tokens", type=_csv(int), default=[4096], help="prompt lengths, e.g. 256,4096")
    p.add_argument(
        "--layout", type=_csv(str), default=None, help="contiguous,paged (default: both)"
    )
    p.add_argument("--block-tokens", type=_csv(int), default=[16], help="paged: 16,128")
    p.add_argument(
        "--table",
        type=_csv(str),
        default=["random"],
        help="paged block tables: sequential,random,mixed",
    )
    p.add_argument("--destinations", type=_csv(int), default=[1], help="e.g. 1,2,4")
    p.add_argument(
        "--mode",
        type=_csv(str),
        default=["bulk", "layerwise"],
        help="bulk (all layers ready) and/or layerwise pushes, and/or pull (the DECODER "
        "pulls the whole cache by its cache id, the PROMPT serving; opt in)",
    )
    p.add_argument(
        "--compute-ms",
        type=_csv(_compute_ms),
        default=[AUTO],
        help="layer-wise: simulated prefill per layer, ms, or auto: as long as one layer's "
        "bulk transfer (the hard case: compute equal to transfer). E.g. auto,10",
    )
    p.add_argument(
        "--memory",
        type=_csv(str),
        default=["own"],
        help="own (kvdist's pool on both sides) and/or caller (numpy arrays registered)",
    )
    p.add_argument(
        "--lanes",
        type=_csv(int),
        default=[0],
        help="copy lanes of the PROMPT to compare, e.g. 1,2 (0: kvdist's default, one per CPU)",
    )
    p.add_argument(
        "--compute",
        choices=["sleep", "cpu"],
        default="sleep",
        help="layer-wise: sleep, or a real CPU workload (numpy)",
    )
    p.add_argument(
        "--tls",
        type=_csv(str),
        default=[""],
        help="UCX_TLS values to compare, e.g. ,tcp (empty = UCX default)",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions per case after a warm-up")
    p.add_argument(
        "--baselines",
        type=_csv(str),
        default=["memcpy", "perftest"],
        help="memcpy,perftest (empty: none)",
    )
    p.add_argument(
        "--peers",
        type=_csv(str),
        default=[],
        help="mooncake,nixl: the same writes by those libraries (needs a kvdist "
        "checkout's bench/peers and the libraries, see bench/peers/README.md)",
    )
    p.add_argument(
        "--peers-python",
        help="interpreter that has the peer libraries "
        "(default: bench/peers' choice, e.g. /tmp/peervenv/bin/python)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the byte comparison")
    p.add_argument(
        "--zero-check",
        action="store_true",
        help="zero every destination before every timed push and compare all bytes after "
        "each (kvdist and the peers; untimed)",
    )
    p.add_argument("--json", help="write all figures to this JSON file")
    p.add_argument("--plot", help="write a PNG plot to this file")
    p.add_argument("--markdown", help="write the results as a Markdown table to this file")
    p.add_argument(
        "--from-json",
        help="run nothing: report (table, --plot, --markdown) the "
        "results of an earlier --json file",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="the full matrix: all presets, 256..16384 tokens, both layouts, "
        "blocks of 16 and 128, all tables, 1/2/4 destinations",
    )
    two = p.add_argument_group(
        "two hosts",
        "the PROMPT and its DECODERs on different hosts (or namespaces): the bench's "
        "commands travel as kvdist peer messages over the link, no other port",
    )
    two.add_argument(
        "--role",
        choices=["both", "prompt", "decoder"],
        default="both",
        help="both: PROMPT and DECODERs spawned on this host (default); prompt: listen "
        "and wait for --decoders remote DECODERs; decoder: one DECODER linking to --peer",
    )
    two.add_argument("--listen", help="--role prompt: IP:PORT to listen on (port 0: any)")
    two.add_argument(
        "--decoders",
        type=int,
        help="--role prompt: DECODERs to wait for (default: the largest --destinations)",
    )
    two.add_argument("--peer", help="--role decoder: the PROMPT's HOST:PORT")
    two.add_argument(
        "--cluster-id", type=int, default=2, help="--role decoder: its cluster id (2, 3, ...)"
    )
    two.add_argument(
        "--netns",
        action="store_true",
        help="two hosts on this machine (root): the PROMPT in a hub network namespace "
        "with a bridge, each DECODER in a namespace of its own joined by a veth pair; "
        "kvdist's network path (KVDIST_NETWORK_PATH=1), ucx_perftest on the same link",
    )
    two.add_argument("--port-file", help=argparse.SUPPRESS)  # --role prompt: write the port
    two.add_argument("--link", default="network", help=argparse.SUPPRESS)  # rows' link name
    return p.parse_args(argv)


def build_cases(a: argparse.Namespace) -> list[Case]:
    if a.full:
        a.model = list(MODELS)
        a.tokens = [256, 1024, 4096, 16384]
        a.layout = ["contiguous", "paged"]
        a.block_tokens = [16, 128]
        a.table = ["sequential", "random", "mixed"]
        a.destinations = [1, 2, 4]
    models: list[Model] = []
    for name in a.model:
        if name in MODELS:
            models.append(MODELS[name])
        elif name == "custom":
            if not (a.layers and a.kv_heads and a.head_dim):
                raise SystemExit("custom model: give --layers, --kv-heads and --head-dim")
            models.append(Model("custom", a.layers, a.kv_heads, a.head_dim))
        else:
            raise SystemExit(f"unknown model {name!r}")
    layouts = a.layout or ["contiguous", "paged"]
    unknown = [m for m in a.mode if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown --mode {', '.join(unknown)} (one of {', '.join(MODES)})")
    cases = []
    for model, tokens, layout, dests, tls, memory, lanes in itertools.product(
        models, a.tokens, layouts, a.destinations, a.tls, a.memory, a.lanes
    ):
        blocks = a.block_tokens if layout == "paged" else [16]
        tables = a.table if layout == "paged" else ["sequential"]
        for block, table, mode in itertools.product(blocks, tables, a.mode):
            for compute_ms in a.compute_ms if mode == "layerwise" else [0.0]:
                case = Case(
                    model,
                    tokens,
                    layout,
                    block,
                    table,
                    dests,
                    mode,
                    compute_ms,
                    a.compute,
                    tls,
                    memory=memory,
                    lanes=lanes,
                )
                if case.bytes_per_destination * (1 + dests) > MAX_SESSION_BYTES:
                    print(
                        f"skipped (over {MAX_SESSION_BYTES >> 30} GiB): {case.label()}",
                        file=sys.stderr,
                    )
                    continue
                cases.append(case)
    # Group cases of one session together so processes and caches are reused.
    cases.sort(key=lambda c: [str(k) for k in session_key(c)])
    return cases


class Progress:
    """One status line on a terminal, plain lines otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, what: str) -> None:
        elapsed = time.monotonic() - self.start
        width = 24
        filled = width * self.done // max(1, self.total)
        bar = "#" * filled + "." * (width - filled)
        line = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s  {what[:70]}"
        if self.tty:
            print("\r" + line.ljust(120), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
        self.done += 1

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def summary(rows: list[dict[str, Any]]) -> None:
    """What a newcomer should read: what was sent, how fast, what was hidden."""
    kv = [r for r in rows if r.get("system") == "kvdist" and r.get("ok")]
    if not kv:
        return
    print("\nSummary")
    for r in kv:
        if r["mode"] in ("bulk", "pull"):
            print(
                f"  {r['label']}: {r['bytes'] / 2**20:.0f} MiB "
                f"{'pulled' if r['mode'] == 'pull' else 'pushed'} in {r['elapsed_ms']:.1f} ms "
                f"= {r['gbps']:.2f} GB/s, bytes {'verified' if r['verified'] else 'NOT verified'}"
            )
        else:
            hidden = max(0.0, 1 - r["exposed_ms"] / max(1e-9, _bulk_ms(kv, r)))
            print(
                f"  {r['label']}: decoder waited {r['exposed_ms']:.1f} ms after the last layer "
                f"was ready (one layer: {r['layer_transfer_ms']:.1f} ms); "
                f"{100 * hidden:.0f} % of the transfer hidden behind compute"
            )
    for r in rows:
        if r.get("system") in ("memcpy", "ucx_perftest") and r.get("ok"):
            print(f"  baseline {r['label']}: {r['gbps']:.2f} GB/s")
        if r.get("system") in ("nixl", "mooncake") and r.get("ok"):
            cpu = ""
            if r.get("cpu_prompt_s") is not None:
                cpu = f", CPU {r['cpu_prompt_s']:.3f}/{r['cpu_decoders_s']:.3f} s per push"
            print(f"  peer {r['label']} [{r.get('variant', '')}]: {r['gbps']:.2f} GB/s{cpu}")
    for r in kv:
        if r["mode"] == "layerwise" and r.get("fixed_tail_us") is not None:
            print(
                f"  {r['label']}: compute {r['compute_ms_used']:.2f} ms/layer, exposed "
                f"{r['exposed_per_layer']:.2f}x one layer ({r['layer_bulk_ms']:.2f} ms); after "
                f"the last layer: copy {r['last_copy_ms'] * 1000:.0f} us + fixed "
                f"{r['fixed_tail_us']:.0f} us (wake-up {r['wake_us']:.0f} us); per layer: "
                f"hand-off {r['handoff_us']:.0f} us + post {r['post_overhead_us']:.0f} us"
            )
    targets = target_ratios(rows)
    if targets:
        print("\nTargets (ratios in this run)")
        for t in targets:
            print(f"  {t['what']}: {t['ratio']:.2f} (target {t['target']})")


def _bulk_ms(rows: list[dict[str, Any]], r: dict[str, Any]) -> float:
    for b in rows:
        if b["mode"] == "bulk" and all(
            b[k] == r[k] for k in ("model", "tokens", "layout", "table", "destinations", "tls")
        ):
            return float(b["elapsed_ms"])
    return float(r["layer_transfer_ms"]) * r["layers"]


def _outputs(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown_table(rows))
        print(f"wrote {a.markdown}")
    if a.plot:
        err = write_plot(a.plot, rows)
        print(f"wrote {a.plot}" if err is None else f"no plot: {err}")


def _one(values: list[Any], option: str, default: Any) -> Any:
    """The single value of a list option (two-host modes hold one DataDist per run)."""
    if len(values) > 1:
        raise SystemExit(f"{option}: one value only with --role prompt/decoder or --netns")
    return values[0] if values else default


def baseline_plan(
    a: argparse.Namespace,
    cases: list[Case],
    path: PerftestPath = LOOPBACK,
    perftest: bool = True,
    peer_netns: dict[str, Any] | None = None,
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The baselines of a run, as (what, measure) pairs: memcpy of each bulk case's
    bytes; ucx_perftest ucp_put_bw (the put size and the whole cache) on ``path``;
    on the network path (a tcp case, or a link between namespaces or hosts)
    ucp_am_bw over tcp at each size of one layer's K tensor; the peers (pushes
    only: bulk cases; they have no pull rows)."""
    baseline_cases: dict[tuple, Case] = {}
    pushed: set[tuple] = set()  # the keys of bulk cases: the peers' rows
    for c in cases:
        if c.mode in ("bulk", "pull"):
            key = (c.model, c.tokens, c.layout, c.block_tokens, c.table, c.tls)
            # Labelled as the bulk case: a pull moves the same bytes.
            baseline_cases.setdefault(key, dataclasses.replace(c, mode="bulk"))
            if c.mode == "bulk":
                pushed.add(key)
    copy_threads = sorted({1} | {c.lanes_used for c in cases})
    network = path.name != "loopback"
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    am_sizes: set[int] = set()
    peers_dir = find_peers_dir() if a.peers else None
    if a.peers and peers_dir is None:
        print(
            "--peers: no bench/peers found from here (run from a kvdist checkout)", file=sys.stderr
        )
    if a.peers and any(c.mode == "pull" for c in cases):
        print(
            f"--peers: {', '.join(a.peers)} measured on bulk cases only (no pull rows)",
            file=sys.stderr,
        )
    for key, c in baseline_cases.items():
        if "memcpy" in a.baselines:
            for threads in copy_threads:
                plan.append(
                    (
                        f"memcpy {threads}T {c.label()}",
                        functools.partial(memcpy_baseline, c, a.reps, threads),
                    )
                )
        if perftest and "perftest" in a.baselines:
            # Between namespaces UCX would take shared memory (one host): the
            # network path's transports, as kvdist's (KVDIST_NETWORK_PATH=1).
            tls = (c.tls or "^sm") if network else c.tls
            # UCX 1.13 emulates put over tcp at tens of MB/s for large puts: on
            # the network path (tcp, or across namespaces) only the put size,
            # about 64 MiB of it.
            net_case = network or "tcp" in c.tls
            sizes = (c.put_bytes,) if net_case else (c.put_bytes, c.bytes_per_destination)
            for size in sizes:
                plan.append(
                    (
                        f"ucx_perftest ucp_put_bw {size} B",
                        functools.partial(
                            perftest_baseline,
                            c,
                            size,
                            "ucp_put_bw",
                            path,
                            tls,
                            (64 << 20) if net_case else (512 << 20),
                        ),
                    )
                )
            if net_case and c.tensor_bytes not in am_sizes:
                am_sizes.add(c.tensor_bytes)
                plan.append(
                    (
                        f"ucx_perftest ucp_am_bw {c.tensor_bytes} B",
                        functools.partial(
                            perftest_baseline, c, c.tensor_bytes, "ucp_am_bw", path, "tcp"
                        ),
                    )
                )
        for system in a.peers if peers_dir is not None and key in pushed else []:
            plan.append(
                (
                    f"{system} {c.label()}",
                    functools.partial(
                        peer_baseline,
                        system,
                        c,
                        a.reps,
                        peers_dir,
                        a.peers_python,
                        zero_check=a.zero_check,
                        netns=peer_netns,
                    ),
                )
            )
    return plan


def run_cases(
    a: argparse.Namespace, cases: list[Case], progress: Progress, remote: Any = None
) -> list[dict[str, Any]]:
    """Every case, sessions reused while their key stays the same."""
    rows: list[dict[str, Any]] = []
    session: Session | None = None
    key = None
    try:
        for case in cases:
            progress.step(case.label())
            if session_key(case) != key:
                if session is not None:
                    session.close()
                    session = None
                session = Session(case, a.zero_check, remote)
                key = session_key(case)
            rows.append(session.run(case, a.reps, not a.no_verify).as_dict())
    finally:
        if session is not None:
            session.close()
    return rows


def run_plan(plan: list[tuple[str, Callable[[], dict[str, Any]]]], progress: Progress) -> list:
    rows = []
    for what, measure in plan:
        progress.step(what)
        rows.append(measure())
    return rows


def report(
    a: argparse.Namespace,
    rows: list[dict[str, Any]],
    argv: list[str] | None,
    extra_meta: dict[str, Any] | None = None,
) -> int:
    """Table, summary, targets, JSON, Markdown and plot; 1 if a kvdist case failed."""
    print_table(rows)
    summary(rows)
    meta = {
        "command": " ".join(["kvdist-bench", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "ucx_net_devices": os.environ.get("UCX_NET_DEVICES", ""),
        **(extra_meta or {}),
    }
    meta["targets"] = target_ratios(rows)
    if a.json:
        write_json(a.json, rows, meta)
        print(f"\nwrote {a.json}")
    _outputs(a, rows)
    failed = [r for r in rows if r.get("system") == "kvdist" and not r.get("ok")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            rows = json.load(f)["results"]
        print_table(rows)
        summary(rows)
        _outputs(a, rows)
        return 0
    if a.role == "decoder":
        if not a.peer:
            raise SystemExit("--role decoder needs --peer HOST:PORT (the PROMPT's listen address)")
        host, port = split_host_port(a.peer)
        return remote_decoder(host, port, a.cluster_id, _one(a.tls, "--tls", ""))
    if a.netns:
        from kvdist.bench.twohosts import run_netns

        return run_netns(a, argv if argv is not None else sys.argv[1:])
    cases = build_cases(a)
    if not cases:
        print("no case to run", file=sys.stderr)
        return 2
    remote = None
    if a.role == "prompt":
        if not a.listen:
            raise SystemExit("--role prompt needs --listen IP:PORT")
        _one(a.lanes, "--lanes", 0)
        need = max(c.destinations for c in cases)
        if a.decoders is not None and a.decoders < need:
            raise SystemExit(f"--decoders {a.decoders}: the cases need {need}")
        if "perftest" in a.baselines:
            print(
                "--role prompt: no ucx_perftest rows (run it between the two hosts: "
                "ucx_perftest -t ucp_am_bw -s SIZE -n ITERS, server without a host)",
                file=sys.stderr,
            )
        plan = baseline_plan(a, cases, perftest=False)
        remote = RemoteDecoders(
            a.listen,
            a.decoders or need,
            tls=_one(a.tls, "--tls", ""),
            lanes=_one(a.lanes, "--lanes", 0),
            pool_bytes=max(c.bytes_per_destination for c in cases) + (1 << 30),
            link=a.link,
            port_file=a.port_file,
        )
    else:
        plan = baseline_plan(a, cases)
    progress = Progress(len(cases) + len(plan))
    try:
        rows = run_cases(a, cases, progress, remote)
    finally:
        if remote is not None:
            remote.close()
    rows += run_plan(plan, progress)
    progress.finish()
    return report(a, rows, argv)
