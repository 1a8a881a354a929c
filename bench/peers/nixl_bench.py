#!/usr/bin/env python3
"""NIXL (UCX backend, DRAM) baseline for kvdist-bench.

Two processes on 127.0.0.1, one `nixl_agent` each (UCX backend, NIXL's default
progress thread on). The TARGET registers its destination cache (one DRAM
region) and sends `get_agent_metadata()` and the cache's address over the control
socket; the INITIATOR registers its source cache, `add_remote_agent(metadata)`,
and pushes every layer as one NIXL WRITE request:

  api "prepped" (how vLLM's NixlConnector does it): before the push, both sides'
      block descriptor lists are prepared once (`prep_xfer_dlist`, one descriptor per
      (tensor, block); for contiguous mode a block is the whole tensor); per layer
      `make_prepped_xfer("WRITE", local, local_idx, remote, remote_idx)` + `transfer`.
      NIXL merges descriptors that are consecutive on both sides.
  api "init": per layer `initialize_xfer("WRITE", get_xfer_descs(runs))` + `transfer`
      on the already-merged runs.

All layers are posted back to back, then each layer's request is polled with
`check_xfer_state` (100 us sleep between polls, bounded by --op-timeout).

UCX: the wheel bundles its own UCX (version recorded in the JSON); every attempt
runs with UCX_NET_DEVICES=lo and UCX_PROTO_INFO=y (the protocol table UCX prints is
captured from the child's log into the JSON). Variants set UCX_TLS.

Run: python3 bench/peers/nixl_bench.py --layers 32 --tensor-bytes 8388608 \
        --mode contiguous|paged --block-bytes 32768 --reps 3 --json OUT.json
Install: python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install nixl numpy
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peercommon as pc  # noqa: E402

SYSTEM = "nixl"
# api:UCX_TLS ("default" = UCX_TLS unset, UCX chooses)
# optional third field: "noprog" = no NIXL progress thread on either side, "noprog-init" = initiator only
# (the Python API starts it with pthrDelay=0: it keeps ~2/3 of a core busy even when idle)
DEFAULT_VARIANTS = (
    "prepped:default,init:default,prepped:default:noprog-init,prepped:default:noprog,"
    "prepped:tcp,prepped:sm"
)


def _parse_variant(v: str):
    parts = v.split(":") + [""]
    return parts[0], parts[1], parts[2]  # api, tls, progress option


def _agent(name: str, prog: bool = True):
    from nixl._api import nixl_agent, nixl_agent_config

    agent = nixl_agent(name, nixl_agent_config(enable_prog_thread=prog, backends=["UCX"]))
    if "UCX" not in agent.backends:
        raise RuntimeError(f"UCX backend not created; plugins available: {agent.get_plugin_list()}")
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
        _, _, popt = _parse_variant(args.variant)
        self.agent = _agent("kvpeer-target", prog=(popt != "noprog"))
        self.dst = dst
        self.reg = self.agent.register_memory([(int(dst.ctypes.data), dst.nbytes, 0, "")], "DRAM")

    def info(self):
        return {"meta": self.agent.get_agent_metadata(), "addr": int(self.dst.ctypes.data)}

    def close(self):
        self.agent.deregister_memory(self.reg)


class Initiator:
    def __init__(self, args, wl, src, info):
        import numpy as np

        self.api, self.tls, self.popt = _parse_variant(args.variant)
        self.prog = self.popt not in ("noprog", "noprog-init")
        self.agent = _agent("kvpeer-initiator", prog=self.prog)
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
            time.sleep(100e-6)
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
            "api": self.api,
            "initiator_progress_thread": self.prog,
            "target_progress_thread": self.popt != "noprog",
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
        help="comma list of api:tls, api = prepped|init, tls = default (UCX_TLS unset) or a UCX_TLS "
        "value (default: %(default)s)",
    )
    p.add_argument(
        "--net-devices", default="lo", help="UCX_NET_DEVICES for the children (default: lo)"
    )
    args = p.parse_args()
    if args.role == "target":
        return pc.run_target(args, Target)
    if args.role == "initiator":
        return pc.run_initiator(args, Initiator)

    py = pc.pick_python(args, "nixl._api")
    attempts = []
    for v in args.variants.split(","):
        v = v.strip()
        api, tls, _ = _parse_variant(v)
        env = {"UCX_NET_DEVICES": args.net_devices, "UCX_PROTO_INFO": "y"}
        if tls != "default":
            env["UCX_TLS"] = tls
        saved = args.op_timeout
        if v.endswith(":noprog"):
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
