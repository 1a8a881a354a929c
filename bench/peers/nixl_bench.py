#!/usr/bin/env python3
"""NIXL (UCX backend, DRAM) baseline for kvdist-bench.

Two processes on 127.0.0.1, one `nixl_agent` each with the UCX backend. The TARGET
registers its destination cache (one DRAM region) and sends `get_agent_metadata()` and
the cache's address over the control socket; the INITIATOR registers its source cache,
`add_remote_agent(metadata)`, and pushes every layer as one NIXL WRITE request:

  api "prepped" (how vLLM's NixlConnector does it): before the push, both sides'
      block descriptor lists are prepared once (`prep_xfer_dlist`, one descriptor per
      (tensor, block); for contiguous mode a block is the whole tensor); per layer
      `make_prepped_xfer("WRITE", local, local_idx, remote, remote_idx)` + `transfer`.
      NIXL merges descriptors that are consecutive on both sides.
  api "init" (SGLang's way): per layer `initialize_xfer("WRITE", get_xfer_descs(runs))`
      + `transfer` on the already-merged runs.

All layers are posted back to back, then each layer's request is polled with
`check_xfer_state` until DONE (bounded by --op-timeout).

Each variant (below) also says how the agents are progressed and how the UCX backend is
built: the default variants run the initiator without a progress thread, polling
`check_xfer_state` itself as nixlbench does, and the target either with a progress thread
that sleeps between events or with none, progressed by `get_new_notifs()` in a loop (as
SGLang's decode side and nixlbench's target do); some use the backend's thread pool
(`num_threads`, `split_batch_size`, as vLLM's `nixl_agent_config(num_threads=...)`). Every
variant runs; the headline is the fastest verified one, with its name and configuration.

UCX: the wheel bundles its own UCX (version recorded in the JSON); every attempt
runs with UCX_NET_DEVICES=lo and UCX_PROTO_INFO=y (the protocol table UCX prints is
captured from the child's log into the JSON). Variants may set UCX_TLS.

Run: python3 bench/peers/nixl_bench.py --python /work/vvenv/bin/python --layers 32 \
        --tensor-bytes 8388608 --mode contiguous|paged --block-bytes 32768 --reps 3 --json OUT.json
Install: python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install nixl numpy
"""

from __future__ import annotations

import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pc = importlib.import_module("_peercommon")  # the shared harness, next to this file

SYSTEM = "nixl"

# A variant is  api:tls[:option+option+...]
#   api     prepped (prep_xfer_dlist once, make_prepped_xfer per layer) | init (initialize_xfer per
#           layer on the merged runs)
#   tls     default (UCX_TLS unset) | a UCX_TLS value
#   options (none given = the library defaults: i=pt+t=pt, no backend parameters)
#     i=pt      initiator: NIXL progress thread (the Python API's default; it runs with pthrDelay=0,
#               i.e. polls its workers without ever sleeping)
#     i=poll    initiator: no progress thread; check_xfer_state polled back to back (nixlbench)
#     i=pollN   ... with an N us sleep between polls;  i=yield: os.sched_yield() between polls
#     t=pt      target: progress thread with pthrDelay=0 (the default: it spins)
#     t=ptN     target: progress thread with pthrDelay=N us: it sleeps in poll() on the UCX
#               workers' event fds and wakes on traffic or every ceil(N/1000) ms
#     t=notif   target: no progress thread; get_new_notifs() called in a loop while it waits
#               (which progresses the UCX worker: SGLang's decode side, nixlbench's target)
#     t=notifN  ... with an N us sleep between calls
#     t=none    target: no progress thread and nobody progresses it (expected to stall)
#     ntN       UCX backend num_threads=N (NIXL's thread-pool engine: N dedicated UCX workers,
#               one thread each; a request of >= split_batch_size descriptors is cut into
#               per-thread chunks posted in parallel)
#     sbN       UCX backend split_batch_size=N (NIXL's default 1024)
#     nwN       UCX backend num_workers=N
#     eh=MODE   UCX backend ucx_error_handling_mode=MODE (peer, the default, or none)
#   old names kept: "noprog-init" = i=poll100, "noprog" = i=poll100+t=none
# Backend parameters apply to both agents (as vLLM's nixl_agent_config(num_threads=...) does).
GOOD_VARIANTS = (
    "prepped:default:i=poll+t=pt1000",
    "prepped:default:i=poll+t=notif",
    "prepped:default:i=poll+t=pt1000+nt2+sb1",
    "prepped:default:i=poll50+t=pt1000+nt2+sb1",
    "prepped:default:i=yield+t=pt1000+nt2+sb1",
    "prepped:default:i=poll+t=pt1000+nt1+sb1",
    "init:default:i=poll+t=pt1000",
)
OLD_VARIANTS = (
    "prepped:default",
    "init:default",
    "prepped:default:noprog-init",
    "prepped:default:noprog",
    "prepped:tcp",
    "prepped:sm",
)
DEFAULT_VARIANTS = ",".join(GOOD_VARIANTS)
NAMED_SETS = {"good": GOOD_VARIANTS, "old": OLD_VARIANTS, "all": GOOD_VARIANTS + OLD_VARIANTS}


class Variant:
    def __init__(self, name: str):
        parts = name.split(":")
        if len(parts) < 2 or len(parts) > 3 or parts[0] not in ("prepped", "init"):
            raise ValueError(f"bad variant {name!r}: want api:tls[:options]")
        self.name = name
        self.api, self.tls = parts[0], parts[1]
        self.ini, self.ini_sleep_us = "pt", None  # initiator: "pt" | "poll" | "yield"
        self.tgt, self.tgt_delay_us = "pt", 0  # target: "pt" | "notif" | "none"
        self.backend: dict = {}
        opts = parts[2].split("+") if len(parts) == 3 and parts[2] else []
        for o in opts:
            if o == "noprog-init":
                self.ini, self.ini_sleep_us = "poll", 100
            elif o == "noprog":
                self.ini, self.ini_sleep_us, self.tgt = "poll", 100, "none"
            elif o == "i=pt":
                self.ini = "pt"
            elif o == "i=yield":
                self.ini, self.ini_sleep_us = "yield", None
            elif o.startswith("i=poll"):
                self.ini = "poll"
                self.ini_sleep_us = int(o[6:]) if o[6:] else None
            elif o.startswith("t=pt"):
                self.tgt, self.tgt_delay_us = "pt", int(o[4:] or 0)
            elif o.startswith("t=notif"):
                self.tgt, self.tgt_delay_us = "notif", int(o[7:] or 0)
            elif o == "t=none":
                self.tgt = "none"
            elif o.startswith("nt"):
                self.backend["num_threads"] = str(int(o[2:]))
            elif o.startswith("sb"):
                self.backend["split_batch_size"] = str(int(o[2:]))
            elif o.startswith("nw"):
                self.backend["num_workers"] = str(int(o[2:]))
            elif o.startswith("eh="):
                self.backend["ucx_error_handling_mode"] = o[3:]
            else:
                raise ValueError(f"bad option {o!r} in variant {name!r}")

    def describe(self) -> str:
        ini = {
            "pt": "progress thread (pthrDelay=0), check_xfer_state polled with 100 us sleeps",
            "poll": "no progress thread, check_xfer_state polled "
            + (f"with {self.ini_sleep_us} us sleeps" if self.ini_sleep_us else "back to back"),
            "yield": "no progress thread, check_xfer_state polled with sched_yield() between",
        }[self.ini]
        tgt = {
            "pt": f"progress thread, pthrDelay={self.tgt_delay_us} us"
            + (" (spins)" if not self.tgt_delay_us else " (sleeps in poll() between events)"),
            "notif": "no progress thread, get_new_notifs() in a loop"
            + (f" with {self.tgt_delay_us} us sleeps" if self.tgt_delay_us else ""),
            "none": "no progress thread, not progressed",
        }[self.tgt]
        api = (
            "prep_xfer_dlist + make_prepped_xfer per layer"
            if self.api == "prepped"
            else "initialize_xfer per layer on merged runs"
        )
        tls = "UCX_TLS unset" if self.tls == "default" else f"UCX_TLS={self.tls}"
        be = ", ".join(f"{k}={v}" for k, v in self.backend.items()) or "defaults"
        return f"{api}; {tls}; initiator: {ini}; target: {tgt}; UCX backend params: {be}"


def _agent(name: str, prog: bool, pthr_delay_us: int, backend_params: dict):
    import nixl._api as api

    # nixl_agent_config has no knob for the progress thread's delay: the Python API always sets
    # the C++ nixlAgentConfig.pthrDelay to 0. For t=ptN the binding's config field is set here
    # (the same field a C++ user sets) while the agent is built.
    bind = api.nixlBind
    real = bind.nixlAgent
    if prog and pthr_delay_us:

        def with_delay(agent_name, cfg):
            cfg.pthrDelay = pthr_delay_us
            return real(agent_name, cfg)

        bind.nixlAgent = with_delay
    try:
        agent = api.nixl_agent(name, api.nixl_agent_config(enable_prog_thread=prog, backends=[]))
    finally:
        bind.nixlAgent = real
    if "UCX" not in agent.get_plugin_list():
        raise RuntimeError(f"no UCX plugin; plugins available: {agent.get_plugin_list()}")
    agent.create_backend("UCX", dict(backend_params))
    return agent


def _ucx_version() -> dict:
    import ctypes

    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "libucp" in path or "libplugin_UCX" in path or "libucs" in path:
                libs.add(path)
    out = {"loaded": sorted(libs)}
    ucp = next((x for x in libs if "libucp" in x), None)
    if ucp:
        fn = ctypes.CDLL(ucp).ucp_get_version_string
        fn.restype = ctypes.c_char_p
        out["ucx_version"] = fn().decode()
    return out


class Target:
    def __init__(self, args, wl, dst):
        self.v = Variant(args.variant)
        self.agent = _agent(
            "kvpeer-target", self.v.tgt == "pt", self.v.tgt_delay_us, self.v.backend
        )
        self.dst = dst
        self.reg = self.agent.register_memory([(int(dst.ctypes.data), dst.nbytes, 0, "")], "DRAM")
        self.notifs = 0
        if self.v.tgt == "notif":
            self.progress = self._progress  # run_target calls it while waiting for a command

    def _progress(self):
        n = self.agent.get_new_notifs()
        if n:
            self.notifs += sum(len(x) for x in n.values())
        if self.v.tgt_delay_us:
            time.sleep(self.v.tgt_delay_us * 1e-6)

    def info(self):
        return {"meta": self.agent.get_agent_metadata(), "addr": int(self.dst.ctypes.data)}

    def close(self):
        self.agent.deregister_memory(self.reg)


class Initiator:
    def __init__(self, args, wl, src, info):
        import numpy as np

        self.v = Variant(args.variant)
        self.api = self.v.api
        self.prog = self.v.ini == "pt"
        self.agent = _agent("kvpeer-initiator", self.prog, 0, self.v.backend)
        if self.v.ini == "pt":
            self.pause = lambda: time.sleep(100e-6)
        elif self.v.ini == "yield":
            self.pause = os.sched_yield
        elif self.v.ini_sleep_us:
            d = self.v.ini_sleep_us * 1e-6
            self.pause = lambda: time.sleep(d)
        else:
            self.pause = None
        self.wl, self.src = wl, src
        sbase, dbase = int(src.ctypes.data), int(info["addr"])
        self.reg = self.agent.register_memory([(sbase, src.nbytes, 0, "")], "DRAM")
        self.remote = self.agent.add_remote_agent(info["meta"])
        if isinstance(self.remote, bytes):
            self.remote = self.remote.decode()
        t0 = time.perf_counter()
        if self.api == "prepped":
            nb, B, T = wl.nb, wl.B, wl.T
            j = np.repeat(np.arange(wl.ntensors, dtype=np.uint64), nb)
            blk = np.tile(np.arange(nb, dtype=np.uint64), wl.ntensors)
            ldesc = np.stack(
                [sbase + j * T + blk * B, np.full_like(blk, B), np.zeros_like(blk)], axis=1
            )
            rdesc = np.stack(
                [dbase + j * T + blk * B, np.full_like(blk, B), np.zeros_like(blk)], axis=1
            )
            self.local_side = self.agent.prep_xfer_dlist("NIXL_INIT_AGENT", ldesc, "DRAM")
            self.remote_side = self.agent.prep_xfer_dlist(self.remote, rdesc, "DRAM")
            self.idx = []
            for layer in range(wl.L):
                li, ri = [], []
                for t in (2 * layer, 2 * layer + 1):
                    li.append(t * nb + np.arange(nb, dtype=np.int64))
                    ri.append(t * nb + wl.perm)  # source block i -> destination block perm[i]
                self.idx.append((np.concatenate(li), np.concatenate(ri)))
        else:
            self.descs = []
            for layer in range(wl.L):
                r = wl.layer_runs(layer).astype(np.uint64)
                z = np.zeros(len(r), dtype=np.uint64)
                self.descs.append(
                    (
                        self.agent.get_xfer_descs(
                            np.stack([r[:, 0] + sbase, r[:, 2], z], axis=1), "DRAM"
                        ),
                        self.agent.get_xfer_descs(
                            np.stack([r[:, 1] + dbase, r[:, 2], z], axis=1), "DRAM"
                        ),
                    )
                )
        self.prep_s = time.perf_counter() - t0
        self.polls = 0
        self.backend_used = None

    def post_layer(self, layer):
        if self.api == "prepped":
            li, ri = self.idx[layer]
            h = self.agent.make_prepped_xfer("WRITE", self.local_side, li, self.remote_side, ri)
        else:
            ld, rd = self.descs[layer]
            h = self.agent.initialize_xfer("WRITE", ld, rd, self.remote)
        st = self.agent.transfer(h)
        if st == "ERR":
            raise RuntimeError(f"transfer(layer {layer}) returned ERR")
        return (layer, h, st)

    def wait(self, tok, timeout):
        layer, h, st = tok
        deadline = time.monotonic() + timeout
        while st != "DONE":
            st = self.agent.check_xfer_state(h)
            self.polls += 1
            if st == "ERR":
                raise RuntimeError(f"check_xfer_state(layer {layer}) returned ERR")
            if st == "DONE":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"layer {layer} not DONE after {timeout:.0f} s (state {st})")
            if self.pause is not None:
                self.pause()
        if self.backend_used is None:
            try:
                self.backend_used = self.agent.query_xfer_backend(h)
            except Exception as e:  # noqa: BLE001
                self.backend_used = f"query_xfer_backend failed: {e}"
        self.agent.release_xfer_handle(h)

    def details(self):
        import importlib.metadata as md

        pkgs = {}
        for name in ("nixl", "nixl-cu12", "nixl-cu13"):
            try:
                pkgs[name] = md.version(name)
            except md.PackageNotFoundError:
                pass
        return {
            "transport": f"NIXL UCX backend, UCX_TLS={os.environ.get('UCX_TLS', '(unset)')}",
            "config": self.v.describe(),
            "api": self.api,
            "initiator_progress_thread": self.prog,
            "initiator_poll": self.v.ini
            + (f", {self.v.ini_sleep_us} us sleep" if self.v.ini_sleep_us else ""),
            "target_progress_thread": self.v.tgt == "pt",
            "target_mode": self.v.tgt,
            "target_delay_us": self.v.tgt_delay_us,
            "backend_params_set": self.v.backend,
            "backend_params": dict(self.agent.get_backend_params("UCX")),
            "nixl_module": sys.modules["nixl._api"].__file__,
            "packages": pkgs,
            "ucx": _ucx_version(),
            "backend_of_request": str(self.backend_used),
            "remote_agent": self.remote,
            "prep_s": self.prep_s,
            "polls": self.polls,
            "writes_per_layer_requested": self.wl.writes_per_layer()
            if self.api == "init"
            else 2 * self.wl.nb,
            "env": {k: v for k, v in os.environ.items() if k.startswith(("UCX_", "NIXL_"))},
        }


def main():
    p = pc.make_parser(SYSTEM)
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma list of api:tls[:options] (see the top of this file), or one of the sets "
        f"{', '.join(NAMED_SETS)}; the headline is the fastest verified one "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--net-devices", default="lo", help="UCX_NET_DEVICES for the children (default: lo)"
    )
    args = p.parse_args()
    if args.role == "target":
        return pc.run_target(args, Target)
    if args.role == "initiator":
        return pc.run_initiator(args, Initiator)

    names = []
    for v in args.variants.split(","):
        v = v.strip()
        names += NAMED_SETS.get(v, (v,)) if v else ()
    variants = [Variant(v) for v in names]  # a bad name fails here, before anything runs
    py = pc.pick_python(args, "nixl._api")
    attempts = []
    for var in variants:
        v = var.name
        env = {"UCX_NET_DEVICES": args.net_devices, "UCX_PROTO_INFO": "y"}
        if var.tls != "default":
            env["UCX_TLS"] = var.tls
        saved = args.op_timeout
        if var.tgt == "none":
            # nobody progresses the target's UCX worker: expected to stall, so keep the wait short
            args.op_timeout = min(args.op_timeout, 10.0)
        a = pc.run_attempt(
            os.path.abspath(__file__),
            args,
            py,
            v,
            env,
            args.timeout,
            log_patterns=[r"\|", r"UCX +(ERROR|WARN)", r"nixl", r"NIXL", r"[Ee]rror"],
        )
        args.op_timeout = saved
        a["config"] = var.describe()
        # keep the UCX protocol table short: the header lines and every line naming a transport
        lines = a.get("initiator_log_lines", [])
        a["ucx_proto_info"] = [x for x in lines if "|" in x][:40]
        a["initiator_log_lines"] = [x for x in lines if "|" not in x][:20]
        a["target_log_lines"] = [x for x in a.get("target_log_lines", []) if "|" not in x][:20]
        if not a.get("ok"):
            errs = [
                x
                for x in a["initiator_log_lines"] + a["target_log_lines"]
                if "ERROR" in x or " E1" in x[:3] or x.startswith("E")
            ]
            if errs:
                a["error"] = f"{a.get('error')} (log: {' / '.join(errs[:4])})"
        attempts.append(a)
        pc.print_attempt(v, a)
    return pc.finish(SYSTEM, args, attempts, {"interpreter": py})


if __name__ == "__main__":
    sys.exit(main())
