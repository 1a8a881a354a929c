"""Runs benchmark cases: this process is the PROMPT; its DECODERs are spawned
here (local mode) or linked from elsewhere (bench/remote.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvdist.bench.caches import fill_source, hash_regions, make_cache
from kvdist.bench.cases import AUTO, Case, block_table
from kvdist.bench.channel import PipeChannel
from kvdist.bench.decoder import PROMPT_CLUSTER, WAIT_S, cpu_seconds, decoder_main

__all__ = ["CaseResult", "Session", "session_key"]

CTX = mp.get_context("spawn")


class PrefillSimulator:
    """Synchronizer: 'computes' each layer for compute_ms (sleep or real CPU work)."""

    def __init__(self, compute_ms: float, kind: str) -> None:
        self.compute_ms = compute_ms
        self.kind = kind
        self.last_ready = 0.0
        self.ready: list[float] = []  # per layer: when the layer was "written"
        self._a = np.random.default_rng(0).random((96, 96))

    def __call__(self, layer: int, timeout_ms: int | None) -> bool:
        if self.compute_ms > 0:
            end = time.monotonic() + self.compute_ms / 1000.0
            if self.kind == "cpu":
                while time.monotonic() < end:
                    self._a = np.tanh(self._a @ self._a)
            else:
                time.sleep(self.compute_ms / 1000.0)
        self.last_ready = time.monotonic()
        self.ready.append(self.last_ready)
        return True


@dataclass
class CaseResult:
    case: Case
    ok: bool
    error: str
    gbps: float  # median over reps
    gbps_best: float
    elapsed_ms: float
    exposed_ms: float | None  # layer-wise: after the last layer was ready
    layer_transfer_ms: float | None  # median per layer: synchronized -> confirmed (not pulls)
    post_overhead_us: float | None  # median per layer: synchronized -> posted (not pulls)
    puts: int | None  # None: a pull (the PROMPT's writes are not counted)
    cpu_prompt_s: float
    cpu_decoders_s: float
    verified: bool
    # Layer-wise: the compute per layer used, one layer's share of a bulk push
    # in the same session, and where the time after the last layer went.
    compute_ms_used: float | None = None
    layer_bulk_ms: float | None = None
    last_copy_ms: float | None = None  # last layer: posted -> confirmed
    handoff_us: float | None = None  # median: synchronizer returned -> kvdist saw it
    wake_us: float | None = None  # last layer confirmed -> wait() returned
    link: str = "loopback"  # what joins PROMPT and DECODERs: loopback, veth, network

    def as_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "system": "kvdist",
            "label": c.label() + ("" if self.link == "loopback" else f" via {self.link}"),
            "link": self.link,
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
            "tensor_bytes": c.tensor_bytes,
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
            "memory": c.memory,
            "lanes": c.lanes,
            "lanes_used": c.lanes_used,
            "compute_ms_used": self.compute_ms_used,
            "layer_bulk_ms": self.layer_bulk_ms,
            "exposed_per_layer": (
                self.exposed_ms / self.layer_bulk_ms
                if self.exposed_ms is not None and self.layer_bulk_ms
                else None
            ),
            "last_copy_ms": self.last_copy_ms,
            "fixed_tail_us": (
                (self.exposed_ms - self.last_copy_ms) * 1000
                if self.exposed_ms is not None and self.last_copy_ms is not None
                else None
            ),
            "handoff_us": self.handoff_us,
            "wake_us": self.wake_us,
            "per_layer_overhead_us": (
                self.handoff_us + self.post_overhead_us if self.handoff_us is not None else None
            ),
        }


def session_key(case: Case) -> tuple:
    """Cases with equal keys share processes and caches."""
    return (
        case.model,
        case.tokens,
        case.layout,
        case.block_tokens,
        case.destinations,
        case.tls,
        case.memory,
        case.lanes,
    )


@dataclass
class _Peer:
    """One DECODER of a session: its process (None: not ours), channel and cache."""

    proc: Any
    channel: Any
    cluster_id: int
    addrs: list[int]


class Session:
    """A PROMPT DataDist and its DECODERs for cases of one session_key.

    Local mode (``remote`` None): a DataDist on 127.0.0.1 and DECODER
    processes of its own, spawned here and driven over Pipes. With ``remote``
    (a :class:`kvdist.bench.remote.RemoteDecoders`): its DataDist and the
    first ``case.destinations`` of its linked DECODERs, driven over kvdist's
    peer messages; they outlive the session.
    """

    def __init__(self, case: Case, zero_check: bool = False, remote: Any = None) -> None:
        import kvdist

        self.zero_check = zero_check
        self.remote = remote
        self.kvdist = kvdist
        self.case = case
        self.link = "loopback" if remote is None else remote.link
        shape = case.cache_shape()
        num_tensors = 2 * case.model.layers
        nbytes = int(np.prod(shape)) * 2 * num_tensors
        if remote is None:
            if case.tls:
                os.environ["UCX_TLS"] = case.tls
            else:
                os.environ.pop("UCX_TLS", None)
            os.environ.setdefault("UCX_NET_DEVICES", "lo")
            self.dd = kvdist.DataDist(
                "prompt",
                PROMPT_CLUSTER,
                listen="127.0.0.1:0",
                sync_timeout_ms=60000,
                transfer_timeout_ms=60000,
                pool_bytes=nbytes + (1 << 30),
                copy_lanes=case.lanes,
            )
        else:
            self.dd = remote.dd
        self.src = make_cache(self.dd, case.memory, num_tensors, shape, case.paged)
        fill_source(self.src)
        self.peers: list[_Peer] = []
        try:
            if remote is None:
                for d in range(case.destinations):
                    conn, child = CTX.Pipe()
                    proc = CTX.Process(
                        target=decoder_main,
                        args=(child, self.dd.port, 2 + d, case.tls, nbytes + (1 << 30)),
                        daemon=True,
                    )
                    proc.start()
                    self.peers.append(_Peer(proc, PipeChannel(conn), 2 + d, []))
            else:
                for cluster_id, channel in remote.take(case.destinations):
                    self.peers.append(_Peer(None, channel, cluster_id, []))
            for peer in self.peers:
                peer.channel.send(("setup", list(shape), num_tensors, case.paged, case.memory))
            for peer in self.peers:
                try:
                    answer = peer.channel.recv(WAIT_S)
                except TimeoutError:
                    raise RuntimeError(f"decoder {peer.cluster_id} did not start") from None
                if answer[0] != "ready":
                    raise RuntimeError(f"decoder {peer.cluster_id} answered {answer[0]!r}")
                peer.addrs = list(answer[1])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for peer in self.peers:
            try:
                if peer.proc is None:  # a remote DECODER stays for the next session
                    peer.channel.send(("free",))
                    peer.channel.recv(WAIT_S)
                else:
                    peer.channel.send(("quit",))
            except (OSError, TimeoutError, self.kvdist.KvdistError):
                pass
            if peer.proc is not None:
                peer.proc.join(10)
                if peer.proc.is_alive():
                    peer.proc.kill()
        self.peers = []
        if self.remote is None:
            self.dd.close()
        else:
            self.src.free()

    def _push(
        self,
        case: Case,
        dests: list[Any],
        blocks: tuple[list[int] | None, list[int] | None],
        compute_ms: float,
        verify_blocks: Any,
    ) -> dict[str, Any]:
        """One timed push of the whole cache; the decoders' answers with it."""
        for peer in self.peers:
            peer.channel.send(
                ("run", case.model.layers, verify_blocks, case.block_bytes, self.zero_check)
            )
        for peer in self.peers:
            if _answer(peer)[0] != "armed":
                raise RuntimeError(f"decoder {peer.cluster_id} did not arm")
        sync = PrefillSimulator(compute_ms, case.compute)
        cpu0 = cpu_seconds()
        start = time.monotonic()
        task = self.dd.transfer(self.src, dests, sync, src_blocks=blocks[0], dst_blocks=blocks[1])
        code = task.wait(int(WAIT_S * 1000))
        end = time.monotonic()
        cpu = cpu_seconds() - cpu0
        answers = []
        for peer in self.peers:
            answers.append(_answer(peer))
        error = ""
        if code != 0 or any(a[1] != 0 for a in answers):
            error = f"code {code}, decoder codes {[a[1] for a in answers]}: " + "; ".join(
                m for m in task.messages() if m
            )
        return {
            "error": error,
            "start": start,
            "end": end,
            "seconds": end - start,
            "cpu": cpu,
            "answers": answers,
            "sync": sync,
            "figures": task.figures() if not error else None,
        }

    def _pull(
        self,
        case: Case,
        blocks: tuple[list[int] | None, list[int] | None],
        verify_blocks: Any,
    ) -> dict[str, Any]:
        """One timed pull of the whole cache by every DECODER at once, the
        PROMPT serving; the decoders' answers with it. Each DECODER times its
        own pull; the slowest one is the pull's time."""
        for peer in self.peers:
            peer.channel.send(
                (
                    "pull",
                    self.src.cache_id,
                    blocks[0],
                    blocks[1],
                    verify_blocks,
                    case.block_bytes,
                    self.zero_check,
                )
            )
        for peer in self.peers:
            if _answer(peer)[0] != "armed":
                raise RuntimeError(f"decoder {peer.cluster_id} did not arm")
        cpu0 = cpu_seconds()
        for peer in self.peers:
            peer.channel.send(("go",))
        pulled = [_answer(peer) for peer in self.peers]
        cpu = cpu_seconds() - cpu0
        hashes = [_answer(peer) for peer in self.peers]
        if any(p[0] != "pulled" for p in pulled) or any(h[0] != "hashes" for h in hashes):
            raise RuntimeError("a decoder answered out of turn")
        error = ""
        if any(p[1] != 0 for p in pulled):
            error = f"pull codes {[p[1] for p in pulled]}: " + "; ".join(
                p[4] for p in pulled if p[4]
            )
        # The answers in the shape of a push's: (kind, code, -, cpu, hashes).
        answers = [("done", p[1], None, p[3], h[1]) for p, h in zip(pulled, hashes)]
        return {
            "error": error,
            "seconds": max(p[2] for p in pulled),
            "cpu": cpu,
            "answers": answers,
            "figures": None,
        }

    def run(self, case: Case, reps: int, verify: bool) -> CaseResult:
        result = self._measure(case, reps, verify)
        result.link = self.link
        return result

    def _measure(self, case: Case, reps: int, verify: bool) -> CaseResult:
        layers = case.model.layers
        n = case.num_blocks
        # One call has one block mapping (as in the original API): every
        # destination of a paged push gets the same destination table.
        src_blocks = block_table(case.table, n, 1) if case.paged else None
        dst_blocks = block_table(case.table, n, 100) if case.paged else None
        blocks = (src_blocks, dst_blocks)
        dests = [self.kvdist.Destination(peer.cluster_id, peer.addrs) for peer in self.peers]
        compute_ms = case.compute_ms if case.mode == "layerwise" else 0.0
        layer_bulk_ms = None
        if case.mode == "layerwise":
            # One layer's share of a bulk push, measured here: the yardstick of
            # the exposed time, and the compute per layer of --compute-ms auto.
            bulk = []
            for _ in range(3):
                r = self._push(case, dests, blocks, 0.0, None)
                if r["error"]:
                    return _failed(case, r["error"])
                bulk.append(r["end"] - r["start"])
            layer_bulk_ms = statistics.median(bulk) * 1000 / layers
            if compute_ms == AUTO:
                compute_ms = layer_bulk_ms
        expected = None
        if verify:
            expected = hash_regions(self.src, src_blocks, case.block_bytes)
        times, exposed, transfer_ms, post_us = [], [], [], []
        last_copy, handoff, wake = [], [], []
        cpu_p, cpu_d = [], []
        puts = 0
        verified = not verify
        for rep in range(reps + 1):  # the first one is a warm-up
            check = verify and (rep == 1 or (self.zero_check and rep > 0))
            verify_blocks = (dst_blocks if case.paged else "all") if check else None
            if case.mode == "pull":
                r = self._pull(case, blocks, verify_blocks)
            else:
                r = self._push(case, dests, blocks, compute_ms, verify_blocks)
            if r["error"]:
                return _failed(case, r["error"])
            answers = r["answers"]
            if check:
                ok = all(a[4] == expected for a in answers)
                verified = ok if rep == 1 else verified and ok
            if rep == 0:
                continue
            times.append(r["seconds"])
            cpu_p.append(r["cpu"])
            cpu_d.append(sum(a[3] for a in answers))
            fig = r["figures"]
            if fig is None:  # a pull: no per-layer figures
                continue
            puts = fig["puts"]
            figs = fig["layers"]
            transfer_ms.append(
                statistics.median((f["completed_ns"] - f["synchronized_ns"]) / 1e6 for f in figs)
            )
            post_us.append(
                statistics.median((f["posted_ns"] - f["synchronized_ns"]) / 1e3 for f in figs)
            )
            if case.mode == "layerwise":
                sync = r["sync"]
                exposed.append((r["end"] - sync.last_ready) * 1000)
                base = fig["start_ns"] / 1e9  # the task's start on time.monotonic's clock
                last = figs[-1]
                last_copy.append((last["completed_ns"] - last["posted_ns"]) / 1e6)
                wake.append((r["end"] - base - last["completed_ns"] / 1e9) * 1e6)
                handoff.append(
                    statistics.median(
                        (base + f["synchronized_ns"] / 1e9 - ready) * 1e6
                        for f, ready in zip(figs, sync.ready)
                    )
                )
        total = case.bytes_per_destination * case.destinations
        if not times:
            return _failed(case, "no run")
        med = statistics.median(times)

        def median_or_none(v: list[float]) -> float | None:
            return statistics.median(v) if v else None

        return CaseResult(
            case=case,
            ok=verified,
            error="" if verified else "bytes differ at a destination",
            gbps=total / med / 1e9,
            gbps_best=total / min(times) / 1e9,
            elapsed_ms=med * 1000,
            exposed_ms=median_or_none(exposed),
            layer_transfer_ms=median_or_none(transfer_ms),
            post_overhead_us=median_or_none(post_us),
            puts=puts if case.mode != "pull" else None,
            cpu_prompt_s=statistics.median(cpu_p),
            cpu_decoders_s=statistics.median(cpu_d),
            verified=verified,
            compute_ms_used=compute_ms if case.mode == "layerwise" else None,
            layer_bulk_ms=layer_bulk_ms,
            last_copy_ms=median_or_none(last_copy),
            handoff_us=median_or_none(handoff),
            wake_us=median_or_none(wake),
        )


def _answer(peer: _Peer) -> tuple:
    try:
        return peer.channel.recv(WAIT_S)
    except TimeoutError:
        raise RuntimeError(f"decoder {peer.cluster_id} did not answer") from None


def _failed(case: Case, error: str) -> CaseResult:
    return CaseResult(case, False, error, 0, 0, 0, None, 0, 0, 0, 0, 0, False)


@contextmanager
def sessions() -> Iterator[dict[tuple, Session]]:
    """Open sessions, closed on exit."""
    open_: dict[tuple, Session] = {}
    try:
        yield open_
    finally:
        for s in open_.values():
            s.close()
