"""Shared harness for the peer baselines (Mooncake TE, NIXL) of kvdist-bench.

Three processes per attempt:
  * the orchestrator (the script the user runs; imports no transfer library,
    so a crash or hang inside a library cannot stop it from writing JSON),
  * a TARGET child (owns the destination cache, verifies the bytes),
  * an INITIATOR child (owns the source cache, pushes it layer by layer).
The children talk over a multiprocessing.connection socket on 127.0.0.1;
every wait has a deadline, and the orchestrator kills both children when the
attempt's time is up.

Workload (same bytes, same block layout as kvdist-bench):
  a cache of L layers, each layer = K and V tensors of T bytes; tensor j = 2*l + kv
  lives at offset j*T of one contiguous buffer on both sides.
  contiguous: one write of T bytes per tensor (2*L writes).
  paged:      each tensor = T/B blocks of B bytes; source block i goes to destination
              block perm[i] (one random permutation = the sequence's block table, the
              same for every layer); runs with consecutive src AND dst are merged.

Per attempt: 1 warm-up push (then the target checks every byte), --reps timed pushes, each
with the CPU seconds both children spent on it (time.process_time around the push, all
threads); --zero-check zeroes the destination before and checks it after every timed push.
The orchestrator runs every variant and reports the fastest verified one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

AUTHKEY = b"kvdist-peers"
VENV_PY = "/tmp/peervenv/bin/python"


# --------------------------------------------------------------------------- args


def make_parser(system: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=f"{system} baseline for kvdist-bench (two processes on 127.0.0.1)"
    )
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--tensor-bytes", type=int, default=8 << 20)
    p.add_argument("--mode", choices=["contiguous", "paged"], default="contiguous")
    p.add_argument("--block-bytes", type=int, default=32 << 10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        help="seconds allowed per attempt (setup + warm-up + reps + verify)",
    )
    p.add_argument(
        "--op-timeout",
        type=float,
        default=60.0,
        help="seconds allowed for one layer's writes to complete",
    )
    p.add_argument(
        "--python",
        default=None,
        help="interpreter for the children (default: this one if it can import the "
        f"library, else {VENV_PY})",
    )
    p.add_argument("--no-memcpy", action="store_true", help="skip the memcpy reference")
    p.add_argument(
        "--zero-check",
        action="store_true",
        help="the target zeroes the destination before every timed push and checks every byte "
        "after it (outside the timing); one failed check marks the variant unverified",
    )
    p.add_argument(
        "--target-netns",
        default="",
        help="run the target inside this network namespace (ip netns exec; root)",
    )
    p.add_argument(
        "--initiator-netns",
        default="",
        help="run the initiator inside this network namespace (ip netns exec; root)",
    )
    p.add_argument(
        "--target-host",
        default="127.0.0.1",
        help="the target's address: its control socket and its library listen there",
    )
    p.add_argument(
        "--initiator-host", default="127.0.0.1", help="the initiator's address, for its library"
    )
    # internal (children)
    p.add_argument(
        "--role",
        choices=["orchestrator", "target", "initiator"],
        default="orchestrator",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--ctrl-file", default="", help=argparse.SUPPRESS)
    p.add_argument("--result-file", default="", help=argparse.SUPPRESS)
    return p


# --------------------------------------------------------------------------- workload


class Workload:
    def __init__(self, layers: int, tensor_bytes: int, mode: str, block_bytes: int, seed: int):
        import numpy as np

        self.L, self.T, self.mode, self.seed = layers, tensor_bytes, mode, seed
        self.ntensors = 2 * layers
        self.total = self.ntensors * tensor_bytes
        if mode == "paged":
            if block_bytes <= 0 or tensor_bytes % block_bytes:
                raise ValueError("tensor-bytes must be a multiple of block-bytes")
            self.B = block_bytes
            self.nb = tensor_bytes // block_bytes
            self.perm = np.random.default_rng(seed + 1).permutation(self.nb).astype(np.int64)
        else:
            self.B = tensor_bytes
            self.nb = 1
            self.perm = np.zeros(1, dtype=np.int64)
        # block-level pairs and merged runs for one tensor (relative offsets)
        src_blk = np.arange(self.nb, dtype=np.int64)
        dst_blk = self.perm
        self.tensor_block_pairs = (src_blk * self.B, dst_blk * self.B)
        runs = []  # (src_off, dst_off, len) within a tensor
        i = 0
        while i < self.nb:
            j = i + 1
            while j < self.nb and dst_blk[j] == dst_blk[j - 1] + 1:
                j += 1
            runs.append((int(src_blk[i]) * self.B, int(dst_blk[i]) * self.B, (j - i) * self.B))
            i = j
        self.tensor_runs = np.array(runs, dtype=np.int64).reshape(-1, 3)

    def layer_runs(self, layer: int):
        """Nx3 int64 array (src_off, dst_off, len) of the merged writes of one layer (K then V)."""
        import numpy as np

        out = []
        for j in (2 * layer, 2 * layer + 1):
            r = self.tensor_runs.copy()
            r[:, 0] += j * self.T
            r[:, 1] += j * self.T
            out.append(r)
        return np.concatenate(out)

    def writes_per_layer(self) -> int:
        return 2 * len(self.tensor_runs)

    def make_source(self):
        import numpy as np

        return np.frombuffer(
            bytearray(np.random.default_rng(self.seed).bytes(self.total)), dtype=np.uint8
        )

    def expected(self):
        """The destination's bytes after a push (kept once built: the target checks many times)."""
        import numpy as np

        if getattr(self, "_expected", None) is None:
            src = self.make_source()
            if self.mode == "contiguous":
                self._expected = src
            else:
                s3 = src.reshape(self.ntensors, self.nb, self.B)
                exp = np.empty_like(s3)
                exp[:, self.perm, :] = s3
                self._expected = exp.reshape(-1)
        return self._expected

    def verify(self, dst) -> bool:
        import numpy as np

        return bool(np.array_equal(dst, self.expected()))

    def describe(self) -> dict:
        return {
            "layers": self.L,
            "tensor_bytes": self.T,
            "mode": self.mode,
            "block_bytes": self.B if self.mode == "paged" else None,
            "total_bytes": self.total,
            "writes_per_layer": self.writes_per_layer(),
            "writes_total": self.writes_per_layer() * self.L,
            "merged_runs_per_tensor": len(self.tensor_runs),
            "blocks_per_tensor": int(self.nb),
        }


def memcpy_reference(wl: Workload, src, reps: int) -> dict:
    """Single-thread numpy copyto of exactly the same writes (same runs), median of reps after a warm-up."""
    import numpy as np

    dst = np.zeros(wl.total, dtype=np.uint8)
    runs = [wl.layer_runs(layer) for layer in range(wl.L)]

    def once():
        t0 = time.perf_counter()
        for r in runs:
            for so, do, n in r.tolist():
                np.copyto(dst[do : do + n], src[so : so + n])
        return time.perf_counter() - t0

    once()
    ts = [once() for _ in range(reps)]
    ok = wl.verify(dst)
    return {
        "gbps_median": wl.total / statistics.median(ts) / 1e9,
        "gbps_best": wl.total / min(ts) / 1e9,
        "times_s": ts,
        "verified": ok,
    }


# --------------------------------------------------------------------------- control channel


def target_listen(ctrl_file: str, host: str = "127.0.0.1"):
    from multiprocessing.connection import Listener

    lst = Listener((host, 0), authkey=AUTHKEY)
    tmp = ctrl_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(lst.address[1]))
    os.replace(tmp, ctrl_file)
    return lst


def accept_with_timeout(lst, timeout: float):
    import socket as _s

    lst._listener._socket.settimeout(timeout)
    try:
        return lst.accept()
    except _s.timeout:
        raise TimeoutError(f"no initiator connected within {timeout:.0f} s")


def initiator_connect(ctrl_file: str, timeout: float, host: str = "127.0.0.1"):
    from multiprocessing.connection import Client

    deadline = time.monotonic() + timeout
    while not os.path.exists(ctrl_file):
        if time.monotonic() > deadline:
            raise TimeoutError("target never published its control port")
        time.sleep(0.05)
    with open(ctrl_file) as f:
        port = int(f.read())
    return Client((host, port), authkey=AUTHKEY)


def recv(conn, timeout: float, what: str):
    if not conn.poll(timeout):
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
    msg = conn.recv()
    if isinstance(msg, dict) and msg.get("error"):
        raise RuntimeError(f"peer failed during {what}: {msg['error']}")
    return msg


# --------------------------------------------------------------------------- child roles


def cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (the library's progress and
    worker threads included); the quantity os.times() gives, at clock_gettime resolution."""
    return time.process_time()


def wait_command(conn, tgt, timeout: float):
    """The next command from the initiator. A target whose library needs its caller to progress
    it (tgt.progress, e.g. NIXL without a progress thread) is progressed while it waits."""
    progress = getattr(tgt, "progress", None)
    if progress is None:
        return recv(conn, timeout, "initiator command")
    deadline = time.monotonic() + timeout
    while not conn.poll(0):
        progress()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for initiator command")
    return recv(conn, 1, "initiator command")


def run_target(args, make_target):
    """make_target(args, wl, dst) -> object with .info() (picklable), .close() and optionally
    .progress() (called in a loop while the target waits for a command)."""
    import numpy as np

    conn = None
    tgt = None
    lst = target_listen(args.ctrl_file, args.target_host)
    try:
        conn = accept_with_timeout(lst, args.timeout)
        wl = Workload(args.layers, args.tensor_bytes, args.mode, args.block_bytes, args.seed)
        dst = np.zeros(wl.total, dtype=np.uint8)  # touched: pages resident before any write
        try:
            tgt = make_target(args, wl, dst)
            conn.send({"info": tgt.info()})
        except Exception as e:
            conn.send({"error": f"{type(e).__name__}: {e}"})
            raise
        cpu0 = None
        while True:
            msg = wait_command(conn, tgt, args.timeout)
            cmd = msg.get("cmd")
            if cmd == "zero":
                dst[:] = 0
                conn.send({"ok": True})
            elif cmd == "verify":
                t0 = time.perf_counter()
                ok = wl.verify(dst)
                conn.send(
                    {
                        "verified": ok,
                        "verify_s": time.perf_counter() - t0,
                        "nonzero_bytes": int(np.count_nonzero(dst)),
                    }
                )
            elif cmd == "begin":  # a timed push starts (after the zeroing, if asked)
                if msg.get("zero"):
                    dst[:] = 0
                cpu0 = cpu_seconds()
                conn.send({"ok": True})
            elif cmd == "end":  # the timed push is over: its CPU time, then the check if asked
                cpu = cpu_seconds() - cpu0
                out = {"cpu_s": cpu}
                if msg.get("check"):
                    out["verified"] = wl.verify(dst)
                    if not out["verified"]:
                        out["nonzero_bytes"] = int(np.count_nonzero(dst))
                conn.send(out)
            elif cmd == "bye":
                conn.send({"ok": True})
                break
        with contextlib.suppress(Exception):
            tgt.close()
    finally:
        if conn is not None:
            conn.close()
        lst.close()


def run_initiator(args, make_initiator):
    """make_initiator(args, wl, src, target_info) -> object with post_layer(l) -> token,
    wait(token, timeout), details() -> dict, close()."""
    res = {"ok": False}
    conn = None
    try:
        conn = initiator_connect(args.ctrl_file, min(60.0, args.timeout), args.target_host)
        wl = Workload(args.layers, args.tensor_bytes, args.mode, args.block_bytes, args.seed)
        src = wl.make_source()
        info = recv(conn, min(120.0, args.timeout), "target setup")["info"]
        t_setup = time.perf_counter()
        ini = make_initiator(args, wl, src, info)
        res["setup_s"] = time.perf_counter() - t_setup

        def push():
            t0 = time.perf_counter()
            toks = [ini.post_layer(layer) for layer in range(wl.L)]
            t_posted = time.perf_counter()
            for tok in toks:
                ini.wait(tok, args.op_timeout)
            t1 = time.perf_counter()
            return t1 - t0, t_posted - t0

        conn.send({"cmd": "zero"})
        recv(conn, 60, "zero ack")
        warm, _ = push()
        conn.send({"cmd": "verify"})
        v = recv(conn, 120, "verification")
        res["verified"] = v["verified"]
        res["verify_detail"] = v
        res["warmup_s"] = warm
        times, post_times, cpu_ini, cpu_tgt, checks = [], [], [], [], []
        for _ in range(args.reps):
            conn.send({"cmd": "begin", "zero": args.zero_check})
            recv(conn, 60, "begin ack")
            c0 = cpu_seconds()
            t, tp = push()
            cpu_ini.append(cpu_seconds() - c0)
            conn.send({"cmd": "end", "check": args.zero_check})
            e = recv(conn, 120, "end of push")
            cpu_tgt.append(e["cpu_s"])
            if args.zero_check:
                checks.append(bool(e["verified"]))
                if not e["verified"]:
                    res.setdefault("zero_check_failures", []).append(e)
            times.append(t)
            post_times.append(tp)
        if args.zero_check:
            res["zero_check"] = checks
            res["verified"] = bool(res["verified"] and all(checks))
        res["times_s"] = times
        res["post_times_s"] = post_times
        res["gbps_median"] = wl.total / statistics.median(times) / 1e9
        res["gbps_best"] = wl.total / min(times) / 1e9
        # CPU seconds per timed push (user + system, all threads of the process)
        res["cpu_initiator_per_push_s"] = cpu_ini
        res["cpu_target_per_push_s"] = cpu_tgt
        res["cpu_initiator_s"] = statistics.median(cpu_ini)
        res["cpu_target_s"] = statistics.median(cpu_tgt)
        res["details"] = ini.details()
        conn.send({"cmd": "bye"})
        recv(conn, 30, "bye ack")
        with contextlib.suppress(Exception):
            ini.close()
        res["ok"] = True
    except BaseException as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-3000:]
        with contextlib.suppress(Exception):
            if conn is not None:
                conn.send({"error": res["error"]})
    with open(args.result_file + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(args.result_file + ".tmp", args.result_file)
    os._exit(0)  # skip library destructors that may block


# --------------------------------------------------------------------------- orchestrator


def pick_python(args, probe_import: str) -> str:
    if args.python:
        return args.python
    try:
        __import__(probe_import)
        return sys.executable
    except Exception:  # noqa: BLE001
        return VENV_PY if os.path.exists(VENV_PY) else sys.executable


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def scan_log(path: str, patterns, limit: int = 60) -> list:
    """Lines of a child's log that match any regex in patterns (deduplicated, in order)."""
    import re

    seen, out = set(), []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip()
                key = re.sub(r"^[IWEF]\d{4} [\d:.]+ +\d+ ", "", line)
                if key in seen or not any(re.search(p, line) for p in patterns):
                    continue
                seen.add(key)
                out.append(line[:300])
                if len(out) >= limit:
                    break
    except OSError:
        pass
    return out


def run_attempt(
    script: str, args, python: str, variant: str, env_extra: dict, timeout: float, log_patterns=()
) -> dict:
    """Run one target+initiator pair; always returns a dict (never raises, never hangs)."""
    work = tempfile.mkdtemp(prefix="kvpeer-")
    ctrl, result = os.path.join(work, "ctrl"), os.path.join(work, "result.json")
    env = dict(os.environ)
    env.update(env_extra)
    common = [
        python,
        script,
        "--layers",
        str(args.layers),
        "--tensor-bytes",
        str(args.tensor_bytes),
        "--mode",
        args.mode,
        "--block-bytes",
        str(args.block_bytes),
        "--reps",
        str(args.reps),
        "--seed",
        str(args.seed),
        "--timeout",
        str(timeout),
        "--op-timeout",
        str(args.op_timeout),
        "--variant",
        variant,
        "--ctrl-file",
        ctrl,
        "--result-file",
        result,
        "--target-host",
        args.target_host,
        "--initiator-host",
        args.initiator_host,
    ]
    if args.no_memcpy:
        common.append("--no-memcpy")
    if args.zero_check:
        common.append("--zero-check")
    logs = {r: os.path.join(work, f"{r}.log") for r in ("target", "initiator")}
    procs = {}
    t0 = time.monotonic()
    out = {"variant": variant, "env": env_extra, "python": python, "logdir": work}
    if args.target_netns or args.initiator_netns:
        out["netns"] = {
            "target": [args.target_netns, args.target_host],
            "initiator": [args.initiator_netns, args.initiator_host],
        }
    try:
        for role in ("target", "initiator"):
            with open(logs[role], "w") as log:  # the child keeps its own copy of the descriptor
                ns = args.target_netns if role == "target" else args.initiator_netns
                prefix = ["ip", "netns", "exec", ns] if ns else []
                procs[role] = subprocess.Popen(
                    prefix + common + ["--role", role],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
        deadline = t0 + timeout + 15
        while time.monotonic() < deadline:
            if procs["initiator"].poll() is not None:
                break
            time.sleep(0.1)
        else:
            out["error"] = f"attempt timed out after {timeout + 15:.0f} s (killed)"
        # give the target a moment to leave on its own
        t_end = time.monotonic() + 10
        while procs["target"].poll() is None and time.monotonic() < t_end:
            time.sleep(0.1)
    finally:
        for role, p in procs.items():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            out[f"{role}_rc"] = p.returncode
    out["wall_s"] = time.monotonic() - t0
    if os.path.exists(result):
        with open(result) as f:
            r = json.load(f)
        out.update({k: v for k, v in r.items() if k not in out or k == "error"})
    elif "error" not in out:
        out["error"] = f"initiator exited rc={out.get('initiator_rc')} without a result"
    if not out.get("ok"):
        out.setdefault("error", "unknown failure")
        for role in ("target", "initiator"):
            rc = out.get(f"{role}_rc")
            last = [x for x in _tail(logs[role], 3000).splitlines() if x.strip()]
            exc = [
                x for x in last if x and not x.startswith((" ", "[", "Traceback")) and "Error" in x
            ]
            if rc not in (0, None) or exc:
                out["error"] += f" (| {role} rc={rc}: {(exc or last or [''])[-1].strip()[:400]})"
        out["initiator_log_tail"] = _tail(logs["initiator"], 3000)
        out["target_log_tail"] = _tail(logs["target"], 3000)
    out["logs"] = logs
    if log_patterns:
        out["initiator_log_lines"] = scan_log(logs["initiator"], log_patterns)
        out["target_log_lines"] = scan_log(logs["target"], log_patterns)
    return out


def print_attempt(variant: str, attempt: dict) -> None:
    """One line per tried configuration: its bandwidth, or why it failed."""
    outcome = (
        f"{attempt['gbps_median']:.2f} GB/s (best {attempt['gbps_best']:.2f}), CPU/push "
        f"initiator {attempt['cpu_initiator_s']:.3f} s, target {attempt['cpu_target_s']:.3f} s, "
        f"verified={attempt.get('verified')}"
        if attempt.get("ok")
        else f"FAILED: {str(attempt.get('error'))[:200]}"
    )
    print(f"  attempt {variant}: {outcome}", flush=True)


def finish(system: str, args, attempts: list, extra: dict) -> int:
    import importlib.util  # noqa: F401  (keep the orchestrator free of numpy/library imports)

    wl_desc = {
        "layers": args.layers,
        "tensor_bytes": args.tensor_bytes,
        "block_bytes": args.block_bytes if args.mode == "paged" else None,
        "total_bytes": 2 * args.layers * args.tensor_bytes,
    }
    # the headline is the fastest (median) variant whose bytes were verified; only when none was
    # verified does the fastest working one stand in, marked verified=False
    ok = [a for a in attempts if a.get("ok")]
    good = [a for a in ok if a.get("verified")] or ok
    best = max(good, key=lambda a: a["gbps_median"]) if good else None
    res = {
        "system": system,
        "mode": args.mode,
        **wl_desc,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": {"node": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "reps": args.reps,
    }
    if not args.no_memcpy:
        # single-thread numpy copyto of the same writes, run here after every child has exited
        # (the libraries' progress threads would otherwise compete for the CPUs)
        try:
            wl = Workload(args.layers, args.tensor_bytes, args.mode, args.block_bytes, args.seed)
            res["memcpy"] = memcpy_reference(wl, wl.make_source(), args.reps)
            res["memcpy_gbps_median"] = res["memcpy"]["gbps_median"]
        except Exception as e:  # noqa: BLE001
            res["memcpy"] = {"error": f"{type(e).__name__}: {e}"}
    if best:
        res.update(
            {
                "gbps_median": best["gbps_median"],
                "gbps_best": best["gbps_best"],
                "verified": best.get("verified", False),
                "variant": best["variant"],
                "config": best.get("config"),
                "cpu_initiator_s": best.get("cpu_initiator_s"),
                "cpu_target_s": best.get("cpu_target_s"),
                "zero_check": bool(args.zero_check),
                "times_s": best.get("times_s"),
                "setup_s": best.get("setup_s"),
                "transport": best.get("effective_transport")
                or best.get("details", {}).get("transport"),
                "details": best.get("details"),
            }
        )
    else:
        res.update(
            {
                "gbps_median": None,
                "gbps_best": None,
                "verified": False,
                "error": " | ".join(f"[{a['variant']}] {a.get('error')}" for a in attempts),
            }
        )
    res["attempts"] = attempts
    res.update(extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if best:
        others = ", ".join(
            f"{a['variant']}: "
            + (
                f"{a['gbps_median']:.2f} GB/s" + ("" if a.get("verified") else " UNVERIFIED")
                if a.get("ok")
                else "FAILED"
            )
            for a in attempts
        )
        mc = (
            f", memcpy {res['memcpy_gbps_median']:.2f} GB/s"
            if res.get("memcpy_gbps_median")
            else ""
        )
        print(
            f"{system} {args.mode}: {res['gbps_median']:.2f} GB/s median (best {res['gbps_best']:.2f}), "
            f"{res['total_bytes'] / 2**20:.0f} MiB, verified={res['verified']}, "
            f"CPU/push {res['cpu_initiator_s']:.3f} s initiator + {res['cpu_target_s']:.3f} s target, "
            f"best of {len(attempts)}: {best['variant']}{mc} [attempts: {others}]"
        )
    else:
        print(f"{system} {args.mode}: FAILED: {res['error'][:500]}")
    return 0
