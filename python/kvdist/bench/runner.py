"""Runs benchmark cases: this process is the PROMPT, DECODERs are spawned."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from kvdist.bench.cases import Case, block_table

__all__ = ["CaseResult", "Session", "session_key"]

CTX = mp.get_context("spawn")
WAIT_S = 120.0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _hash_regions(cache: Any, blocks: Optional[Sequence[int]], block_bytes: int) -> list[str]:
    """Per tensor: a digest of the whole tensor, or of its blocks in table order."""
    out = []
    for i in range(cache.num_tensors):
        raw = cache.tensor(i).view(np.uint8).reshape(-1)
        h = hashlib.blake2b(digest_size=8)
        if blocks is None:
            h.update(raw.data)
        else:
            for b in blocks:
                h.update(raw[b * block_bytes : (b + 1) * block_bytes].data)
        out.append(h.hexdigest())
    return out


def decoder_main(
    conn: Connection,
    port: int,
    cluster_id: int,
    shape: tuple[int, ...],
    num_tensors: int,
    paged: bool,
    tls: str,
) -> None:
    """A DECODER: links, allocates the destination cache, then serves commands."""
    if tls:
        os.environ["UCX_TLS"] = tls
    import kvdist

    nbytes = int(np.prod(shape)) * 2 * num_tensors
    with kvdist.DataDist(
        "decoder", cluster_id, transfer_timeout_ms=60000, pool_bytes=nbytes + (1 << 30)
    ) as dd:
        dd.link(1, "127.0.0.1", port, timeout_ms=10000)
        cache = dd.allocate(num_tensors, shape, "bfloat16", blocks=paged)
        for i in range(num_tensors):
            cache.tensor(i)[...] = 0  # first touch before timing
        conn.send(("ready", cache.addrs))
        while True:
            msg = conn.recv()
            if msg[0] == "quit":
                break
            if msg[0] == "run":
                _, layers, verify_blocks, block_bytes = msg
                dd.reset_arrivals(cache)
                conn.send(("armed",))
                cpu0 = _cpu_seconds()
                arrivals = []
                error = 0
                for layer in range(layers):
                    try:
                        dd.wait_layer(cache, layer, int(WAIT_S * 1000))
                    except kvdist.KvdistError as e:
                        error = e.code
                        break
                    arrivals.append(time.monotonic())
                cpu = _cpu_seconds() - cpu0
                hashes = None
                if verify_blocks is not None:
                    blocks = None if verify_blocks == "all" else verify_blocks
                    hashes = _hash_regions(cache, blocks, block_bytes)
                conn.send(("done", error, arrivals, cpu, hashes))


class PrefillSimulator:
    """Synchronizer: 'computes' each layer for compute_ms (sleep or real CPU work)."""

    def __init__(self, compute_ms: float, kind: str) -> None:
        self.compute_ms = compute_ms
        self.kind = kind
        self.last_ready = 0.0
        self._a = np.random.default_rng(0).random((96, 96))

    def __call__(self, layer: int, timeout_ms: Optional[int]) -> bool:
        if self.compute_ms > 0:
            end = time.monotonic() + self.compute_ms / 1000.0
            if self.kind == "cpu":
                while time.monotonic() < end:
                    self._a = np.tanh(self._a @ self._a)
            else:
                time.sleep(self.compute_ms / 1000.0)
        self.last_ready = time.monotonic()
        return True


@dataclass
class CaseResult:
    case: Case
    ok: bool
    error: str
    gbps: float  # median over reps
    gbps_best: float
    elapsed_ms: float
    exposed_ms: Optional[float]  # layer-wise: after the last layer was ready
    layer_transfer_ms: float  # median per layer: synchronized -> confirmed
    post_overhead_us: float  # median per layer: synchronized -> posted
    puts: int
    cpu_prompt_s: float
    cpu_decoders_s: float
    verified: bool

    def as_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "system": "kvdist",
            "label": c.label(),
            "model": c.model.name,
            "layers": c.model.layers,
            "tokens": c.tokens,
            "layout": c.layout,
            "block_tokens": c.block_tokens if c.paged else None,
            "table": c.table if c.paged else None,
            "destinations": c.destinations,
            "mode": c.mode,
            "compute_ms": c.compute_ms,
            "compute": c.compute,
            "tls": c.tls,
            "put_bytes": c.put_bytes,
            "bytes": c.bytes_per_destination * c.destinations,
            "ok": self.ok,
            "error": self.error,
            "gbps": self.gbps,
            "gbps_best": self.gbps_best,
            "elapsed_ms": self.elapsed_ms,
            "exposed_ms": self.exposed_ms,
            "layer_transfer_ms": self.layer_transfer_ms,
            "post_overhead_us": self.post_overhead_us,
            "puts": self.puts,
            "cpu_prompt_s": self.cpu_prompt_s,
            "cpu_decoders_s": self.cpu_decoders_s,
            "verified": self.verified,
        }


def session_key(case: Case) -> tuple:
    """Cases with equal keys share processes and caches."""
    return (case.model, case.tokens, case.layout, case.block_tokens, case.destinations, case.tls)


class Session:
    """A PROMPT DataDist and its DECODER processes for cases of one session_key."""

    def __init__(self, case: Case) -> None:
        import kvdist

        if case.tls:
            os.environ["UCX_TLS"] = case.tls
        else:
            os.environ.pop("UCX_TLS", None)
        os.environ.setdefault("UCX_NET_DEVICES", "lo")
        self.kvdist = kvdist
        self.case = case
        shape = case.cache_shape()
        num_tensors = 2 * case.model.layers
        nbytes = int(np.prod(shape)) * 2 * num_tensors
        self.dd = kvdist.DataDist(
            "prompt",
            1,
            listen="127.0.0.1:0",
            sync_timeout_ms=60000,
            transfer_timeout_ms=60000,
            pool_bytes=nbytes + (1 << 30),
        )
        self.src = self.dd.allocate(num_tensors, shape, "bfloat16", blocks=case.paged)
        for i in range(num_tensors):
            t = self.src.tensor(i).reshape(-1)
            t[...] = (np.arange(t.size, dtype=np.uint32) * 2654435761 + i).astype(np.uint16)
        self.peers: list[tuple[Any, Connection, list[int]]] = []
        try:
            for d in range(case.destinations):
                conn, child = CTX.Pipe()
                proc = CTX.Process(
                    target=decoder_main,
                    args=(child, self.dd.port, 2 + d, shape, num_tensors, case.paged, case.tls),
                    daemon=True,
                )
                proc.start()
                if not conn.poll(WAIT_S):
                    raise RuntimeError("a decoder did not start")
                tag, addrs = conn.recv()
                self.peers.append((proc, conn, addrs))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for proc, conn, _ in self.peers:
            try:
                conn.send(("quit",))
            except OSError:
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.peers = []
        self.dd.close()

    def run(self, case: Case, reps: int, verify: bool) -> CaseResult:
        layers = case.model.layers
        n = case.num_blocks
        # One call has one block mapping (as in the original API): every
        # destination of a paged push gets the same destination table.
        src_blocks = block_table(case.table, n, 1) if case.paged else None
        dst_blocks = block_table(case.table, n, 100) if case.paged else None
        dests = [
            self.kvdist.Destination(2 + d, addrs) for d, (_, _, addrs) in enumerate(self.peers)
        ]
        expected = None
        if verify:
            expected = _hash_regions(self.src, src_blocks, case.block_bytes)
        times, exposed, transfer_ms, post_us = [], [], [], []
        cpu_p, cpu_d = [], []
        puts = 0
        verified = not verify
        error = ""
        for rep in range(reps + 1):  # the first one is a warm-up
            check = verify and rep == 1
            for _, conn, _ in self.peers:
                verify_blocks = (dst_blocks if case.paged else "all") if check else None
                conn.send(("run", layers, verify_blocks, case.block_bytes))
            for _, conn, _ in self.peers:
                if not conn.poll(WAIT_S) or conn.recv()[0] != "armed":
                    raise RuntimeError("a decoder did not answer")
            sync = PrefillSimulator(
                case.compute_ms if case.mode == "layerwise" else 0, case.compute
            )
            cpu0 = _cpu_seconds()
            start = time.monotonic()
            tasks = [
                self.dd.transfer(
                    self.src, dests, sync, src_blocks=src_blocks, dst_blocks=dst_blocks
                )
            ]
            codes = [t.wait(int(WAIT_S * 1000)) for t in tasks]
            end = time.monotonic()
            cpu_p.append(_cpu_seconds() - cpu0)
            answers = []
            for _, conn, _ in self.peers:
                if not conn.poll(WAIT_S):
                    raise RuntimeError("a decoder did not finish")
                answers.append(conn.recv())
            if any(c != 0 for c in codes) or any(a[1] != 0 for a in answers):
                error = f"codes {codes}, decoder codes {[a[1] for a in answers]}: " + "; ".join(
                    m for t in tasks for m in t.messages() if m
                )
                break
            if check:
                verified = all(a[4] == expected for a in answers)
            if rep == 0:
                continue
            times.append(end - start)
            cpu_d.append(sum(a[3] for a in answers))
            if case.mode == "layerwise":
                exposed.append((end - sync.last_ready) * 1000)
            fig = tasks[0].figures()
            puts = fig["puts"]
            per_layer = [
                (layer["completed_ns"] - layer["synchronized_ns"]) / 1e6 for layer in fig["layers"]
            ]
            posted = [
                (layer["posted_ns"] - layer["synchronized_ns"]) / 1e3 for layer in fig["layers"]
            ]
            transfer_ms.append(statistics.median(per_layer))
            post_us.append(statistics.median(posted))
        total = case.bytes_per_destination * case.destinations
        if error or not times:
            return CaseResult(case, False, error or "no run", 0, 0, 0, None, 0, 0, 0, 0, 0, False)
        med = statistics.median(times)
        return CaseResult(
            case=case,
            ok=verified,
            error="" if verified else "bytes differ at a destination",
            gbps=total / med / 1e9,
            gbps_best=total / min(times) / 1e9,
            elapsed_ms=med * 1000,
            exposed_ms=statistics.median(exposed) if exposed else None,
            layer_transfer_ms=statistics.median(transfer_ms),
            post_overhead_us=statistics.median(post_us),
            puts=puts,
            cpu_prompt_s=statistics.median(cpu_p),
            cpu_decoders_s=statistics.median(cpu_d),
            verified=verified,
        )


@contextmanager
def sessions() -> Iterator[dict[tuple, Session]]:
    """Open sessions, closed on exit."""
    open_: dict[tuple, Session] = {}
    try:
        yield open_
    finally:
        for s in open_.values():
            s.close()
