#!/usr/bin/env python3
"""Mooncake Transfer Engine baseline for kvdist-bench.

Two processes on 127.0.0.1 (or in two network namespaces: --target-netns,
--target-host, --initiator-netns, --initiator-host), P2P handshake (metadata server string "P2PHANDSHAKE",
no etcd / HTTP metadata server): the TARGET initializes an engine, registers its
destination cache and passes "127.0.0.1:<rpc port>" (its segment name) and the
cache's address over the control socket; the INITIATOR registers its source cache
and, per layer, submits all that layer's writes as one batch
(`batch_transfer_async_write`), then waits for each layer's batch in order
(`get_batch_transfer_status`), so layers are pipelined the way SGLang/vLLM
connectors batch per layer. Variant ".../sync" uses `batch_transfer_sync_write`
per layer instead (no overlap between layers).

Variants (all are run and recorded; the fastest verified one is the headline):
  tcp/async, tcp/sync, rdma/async (no RDMA NIC here), shm/async (not in every build).
Each records the CPU seconds per timed push of both processes (cpu_initiator_s,
cpu_target_s); --zero-check zeroes and re-checks the destination around every timed push.

Run: python3 bench/peers/mooncake_bench.py --layers 32 --tensor-bytes 8388608 \
        --mode contiguous|paged --block-bytes 32768 --reps 3 --json OUT.json
Install: python3 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install mooncake-transfer-engine-non-cuda numpy
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pc = importlib.import_module("_peercommon")  # the shared harness, next to this file

SYSTEM = "mooncake-transfer-engine"
# protocol/api[/tuned]; "tuned" raises the TCP transport's per-peer queue caps the way Mooncake
# users do for many-descriptor KV pushes (default caps reject a whole 512 MiB paged push at once)
TUNED_ENV = {
    "MC_TCP_MAX_QUEUED_TRANSFERS_PER_PEER": "65535",
    "MC_TCP_MAX_PENDING_ADMISSIONS_PER_PEER": "65535",
}
DEFAULT_VARIANTS = "tcp/async/tuned,tcp/async,tcp/sync,rdma/async/tuned,shm/async/tuned"


def _engine(protocol: str, host: str = "127.0.0.1"):
    from mooncake.engine import TransferEngine

    te = TransferEngine()
    rc = te.initialize(host, "P2PHANDSHAKE", protocol, "")
    if rc != 0:
        raise RuntimeError(
            f"TransferEngine.initialize('{host}', 'P2PHANDSHAKE', '{protocol}', '') returned {rc}"
        )
    return te


class Target:
    def __init__(self, args, wl, dst):
        self.protocol = args.variant.split("/")[0]
        self.host = args.target_host
        self.te = _engine(self.protocol, self.host)
        self.dst = dst
        rc = self.te.register_memory(dst.ctypes.data, dst.nbytes)
        if rc != 0:
            raise RuntimeError(f"register_memory(dst, {dst.nbytes}) returned {rc}")

    def info(self):
        return {
            "segment": f"{self.host}:{self.te.get_rpc_port()}",
            "addr": int(self.dst.ctypes.data),
        }

    def close(self):
        self.te.unregister_memory(self.dst.ctypes.data)


class Initiator:
    def __init__(self, args, wl, src, info):
        self.protocol, self.api = args.variant.split("/")[:2]
        self.host = args.initiator_host
        self.te = _engine(self.protocol, self.host)
        self.src, self.wl = src, wl
        rc = self.te.register_memory(src.ctypes.data, src.nbytes)
        if rc != 0:
            raise RuntimeError(f"register_memory(src, {src.nbytes}) returned {rc}")
        self.seg = info["segment"]
        sbase, dbase = int(src.ctypes.data), int(info["addr"])
        # per-layer request lists, built once (the block table is known before the push)
        self.reqs = []
        for layer in range(wl.L):
            r = wl.layer_runs(layer)
            self.reqs.append(
                ((r[:, 0] + sbase).tolist(), (r[:, 1] + dbase).tolist(), r[:, 2].tolist())
            )
        self.local_rpc_port = self.te.get_rpc_port()

    def post_layer(self, layer):
        s, d, n = self.reqs[layer]
        if self.api == "sync":
            rc = self.te.batch_transfer_sync_write(self.seg, s, d, n)
            if rc != 0:
                raise RuntimeError(
                    f"batch_transfer_sync_write(layer {layer}, {len(s)} writes) returned {rc}"
                )
            return None
        bid = self.te.batch_transfer_async_write(self.seg, s, d, n)
        if not bid:
            raise RuntimeError(
                f"batch_transfer_async_write(layer {layer}, {len(s)} writes) returned {bid}"
            )
        return (layer, bid)

    def wait(self, tok, timeout):
        # get_batch_transfer_status blocks until the batch is done; Mooncake bounds it by its own
        # transfer timeout, and the orchestrator bounds the whole attempt.
        if tok is None:
            return
        layer, bid = tok
        rc = self.te.get_batch_transfer_status([bid])
        if rc != 0:
            raise RuntimeError(f"get_batch_transfer_status(layer {layer}) returned {rc}")

    def details(self):
        import importlib.metadata as md

        return {
            "transport": f"mooncake {self.protocol} transport",
            "api": (
                "batch_transfer_async_write per layer + get_batch_transfer_status"
                if self.api == "async"
                else "batch_transfer_sync_write per layer"
            ),
            "handshake": "P2PHANDSHAKE (target segment '<target host>:<rpc port>' passed over "
            "control socket)",
            "initiator_host": self.host,
            "target_segment": self.seg,
            "initiator_rpc_port": self.local_rpc_port,
            "writes_per_layer": len(self.reqs[0][0]),
            "package": "mooncake-transfer-engine-non-cuda "
            + md.version("mooncake-transfer-engine-non-cuda"),
            "env": {k: v for k, v in os.environ.items() if k.startswith("MC_")},
        }


def main():
    p = pc.make_parser(SYSTEM)
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma list of protocol/api, api = async|sync (default: %(default)s)",
    )
    args = p.parse_args()
    if args.role == "target":
        return pc.run_target(args, Target)
    if args.role == "initiator":
        return pc.run_initiator(args, Initiator)

    py = pc.pick_python(args, "mooncake.engine")
    attempts = []
    for v in args.variants.split(","):
        v = v.strip()
        env = dict(TUNED_ENV) if v.endswith("/tuned") else {}
        # failing protocols fail fast; give them a short budget
        budget = args.timeout if v.startswith("tcp") else min(args.timeout, 60)
        a = pc.run_attempt(
            os.path.abspath(__file__),
            args,
            py,
            v,
            env,
            budget,
            log_patterns=[r"[Tt]ransport", r"protocol", r"HCA", r"P2P handshake", r"^E\d{4}"],
        )
        # which transport Mooncake really installed (it falls back to TCP when it finds no RDMA HCA)
        lines = " ".join(a.get("initiator_log_lines", []))
        a["effective_transport"] = (
            "tcp (TcpTransport)"
            if "TcpTransport" in lines
            else "rdma (RdmaTransport)"
            if "RdmaTransport" in lines
            else "unknown"
        )
        a = {k: v2 for k, v2 in a.items() if k not in ("initiator_log_lines",)} | {
            "initiator_log_lines": [
                x for x in a.get("initiator_log_lines", []) if "Batch Transfer completed" not in x
            ]
        }
        attempts.append(a)
        pc.print_attempt(v, a)
    return pc.finish(SYSTEM, args, attempts, {"interpreter": py})


if __name__ == "__main__":
    sys.exit(main())
