"""``kvdist-bench --netns``: two hosts on one machine.

This process (in the root namespace) makes a star of network namespaces
(bench/netns.py), runs the PROMPT in the hub (``--role prompt --listen
10.213.0.1:0``) and DECODER i in spoke i (``--role decoder --peer
10.213.0.1:PORT``), each with ``KVDIST_NETWORK_PATH=1`` and its own device
in ``UCX_NET_DEVICES``, then measures ucx_perftest (and Mooncake, when
asked) between the hub and the first spoke, on the same link, and reports
everything together. The namespaces are deleted however the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from kvdist.bench.baselines import PerftestPath
from kvdist.bench.netns import HUB_IP, NetnsStar, netns_unavailable, spoke_ip

__all__ = ["run_netns"]

LINK = "veth"
# Options of the parent run that the PROMPT child does not get (this process
# reports, measures the baselines and the peers).
_DROP_VALUE = {
    "--json",
    "--plot",
    "--markdown",
    "--baselines",
    "--peers",
    "--peers-python",
    "--role",
    "--listen",
    "--decoders",
    "--port-file",
    "--link",
}
_DROP_FLAG = {"--netns"}


def child_argv(argv: list[str]) -> list[str]:
    """``argv`` without the options this process keeps for itself."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _DROP_FLAG:
            continue
        if name in _DROP_VALUE:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _python(ns: str, args: list[str]) -> list[str]:
    return [*NetnsStar.exec_prefix(ns), sys.executable, "-m", "kvdist.bench", *args]


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    end = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def run_netns(a: argparse.Namespace, argv: list[str]) -> int:
    """The whole --netns run; the exit status of kvdist-bench."""
    # Imported here: cli imports this module lazily, and it imports cli.
    from kvdist.bench.cli import Progress, baseline_plan, build_cases, report, run_plan

    why = netns_unavailable()
    if why:
        print(f"kvdist-bench --netns: {why}", file=sys.stderr)
        return 2
    if a.role != "both":
        raise SystemExit("--netns runs both roles itself: leave out --role")
    tls = a.tls[0] if len(a.tls) == 1 else None
    if tls is None or len(a.lanes) != 1:
        raise SystemExit("--netns: one value of --tls and of --lanes per run")
    cases = build_cases(a)
    if not cases:
        print("no case to run", file=sys.stderr)
        return 2
    n = max(c.destinations for c in cases)
    # SIGTERM ends this process through the finally blocks below, as Ctrl-C does.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="kvbench-netns-") as tmp, NetnsStar(n) as star:
            rows = _run_star(a, argv, star, tls, n, tmp)
            if rows is None:
                return 1
            path = PerftestPath(
                name=LINK,
                host=HUB_IP,
                server_prefix=tuple(star.exec_prefix(star.hub)),
                client_prefix=tuple(star.exec_prefix(star.spokes[0])),
                server_env=tuple(star.hub_env().items()),
                client_env=tuple(star.spoke_env(0).items()),
            )
            peer_netns = {
                "link": LINK,
                "initiator_ns": star.hub,
                "initiator_host": HUB_IP,
                "target_ns": star.spokes[0],
                "target_host": spoke_ip(0),
            }
            a_base = argparse.Namespace(**vars(a))
            a_base.baselines = [b for b in a.baselines if b != "memcpy"]  # the PROMPT ran it
            plan = baseline_plan(a_base, cases, path, peer_netns=peer_netns)
            progress = Progress(len(plan))
            rows += run_plan(plan, progress)
            progress.finish()
            meta = {
                "netns": {
                    "hub": [star.hub, star.bridge, HUB_IP],
                    "spokes": [
                        [ns, dev, spoke_ip(i)]
                        for i, (ns, dev) in enumerate(zip(star.spokes, star.spoke_ends))
                    ],
                    "env": "KVDIST_NETWORK_PATH=1, UCX_NET_DEVICES=<the process's device>",
                }
            }
            return report(a, rows, argv, meta)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _run_star(
    a: argparse.Namespace, argv: list[str], star: NetnsStar, tls: str, n: int, tmp: str
) -> list[dict[str, Any]] | None:
    """The PROMPT in the hub and n DECODERs in the spokes; the PROMPT's rows."""
    port_file = os.path.join(tmp, "port")
    rows_file = os.path.join(tmp, "prompt.json")
    # A secret of this run: the links are authenticated, as between real hosts.
    base_env = dict(os.environ, KVDIST_AUTH_SECRET=secrets.token_hex(16))
    prompt_args = [
        *child_argv(argv),
        "--role",
        "prompt",
        "--listen",
        f"{HUB_IP}:0",
        "--decoders",
        str(n),
        "--port-file",
        port_file,
        "--link",
        LINK,
        "--json",
        rows_file,
        "--baselines",
        "memcpy" if "memcpy" in a.baselines else "",
    ]
    procs: list[subprocess.Popen] = []
    logs = {"prompt": os.path.join(tmp, "prompt.log")}
    try:
        with open(logs["prompt"], "w") as log:  # its table is printed here, merged
            prompt = subprocess.Popen(
                _python(star.hub, prompt_args),
                env=dict(base_env, **star.hub_env()),
                stdout=log,
                stdin=subprocess.DEVNULL,
            )
        procs.append(prompt)
        deadline = time.monotonic() + 120
        while not os.path.exists(port_file):
            if prompt.poll() is not None or time.monotonic() > deadline:
                print(
                    f"kvdist-bench --netns: the PROMPT did not start:\n{_tail(logs['prompt'])}",
                    file=sys.stderr,
                )
                return None
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.read())
        for i in range(n):
            logs[f"decoder{i}"] = os.path.join(tmp, f"decoder{i}.log")
            dec_args = ["--role", "decoder", "--peer", f"{HUB_IP}:{port}", "--cluster-id"]
            dec_args += [str(2 + i), "--tls", tls]
            with open(logs[f"decoder{i}"], "w") as log:
                procs.append(
                    subprocess.Popen(
                        _python(star.spokes[i], dec_args),
                        env=dict(base_env, **star.spoke_env(i)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        rc = prompt.wait()
        _stop(procs[1:], 15)
        if not os.path.exists(rows_file):
            print(f"kvdist-bench --netns: the PROMPT failed (exit {rc})", file=sys.stderr)
            for name, path in logs.items():
                print(f"--- {name}:\n{_tail(path)}", file=sys.stderr)
            return None
        with open(rows_file) as f:
            return list(json.load(f)["results"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
