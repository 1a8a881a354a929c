"""The worker side of KvdistConnector (one per model runner).

Both roles let vLLM allocate its KV cache from kvdist's pool (vLLM's
``get_mem_pool_context`` hook: the one backing buffer vLLM allocates comes
from kvdist's shared memory), then register vLLM's per-layer tensors as
views of it, no copy; writes into them take kvdist's fastest same-host path
(docs/vllm.md). Where vLLM allocated the cache itself, its tensors are
registered in place (a slower path on UCX 1.13). Both talk over one kvdist
link per prefiller/decoder pair.

Prefiller: each forward's pushes start at the first ``save_kv_layer`` call;
every later call releases that layer to all of them (``LayerEvents``), so
layer l moves while the model computes layer l + 1. A request's push ends
with a ``done`` message to its decoder once every layer's writes are
confirmed there.

Decoder: asks the prefiller for a request's blocks (``want``), reports the
request as received when the ``done`` arrives, and reports its blocks as
failed when the ``done`` says so, the link drops or ``load_timeout_s``
passes (after asking the prefiller to cancel and confirm).
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import kvdist
from kvdist.integrations.vllm.metadata import KvdistMetadata, KvdistWorkerMetadata, PushSpec
from kvdist.integrations.vllm.protocol import (
    Cancel,
    ConnectorOptions,
    Done,
    Want,
    decode_message,
)

log = logging.getLogger("kvdist.vllm")


def _layout(tensors: list[Any]) -> tuple[list[Any], int]:
    """kvdist tensors and tensors per layer for vLLM's per-layer KV tensors:
    [2, blocks, ...] (K and V apart) or [blocks, ...] (K and V in one block,
    the CPU backend's [blocks, heads, block_size, 2 * head])."""
    first = tensors[0]
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"KV cache on {t.device}: kvdist's vLLM connector needs host memory")
        if not t.is_contiguous() or t.shape != first.shape or t.dtype != first.dtype:
            raise ValueError("KV caches of all layers need one contiguous shape and dtype")
    if first.dim() == 5 and first.shape[0] == 2:
        return [kv for t in tensors for kv in (t[0], t[1])], 2
    return list(tensors), 1


class _AllocateFromKvdist:
    """While vLLM allocates its KV cache: the backing buffer it asks for
    (``torch.zeros(n, dtype=torch.int8)`` on the CPU) comes from kvdist's
    pool. Anything else passes through."""

    def __new__(cls, worker: WorkerSide) -> AbstractContextManager:
        import torch
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if (
                    func is torch.zeros
                    and worker.backing is None
                    and len(args) == 1
                    and isinstance(args[0], int)
                    and kwargs.get("dtype") == torch.int8
                    and torch.device(kwargs.get("device") or "cpu").type == "cpu"
                    and set(kwargs) <= {"dtype", "device"}
                ):
                    return worker.allocate_backing(args[0])
                return func(*args, **kwargs)

        return Mode()


def _push_figures(transfer_id: str, task: kvdist.Task) -> str:
    """One log line on how much of the push the forward hid: its bytes, the
    time its layers' writes took, and how long after the model wrote the
    last layer the push was complete (the part the forward did not hide).
    For a chunked prompt, the last chunk's push."""
    f = task.figures()
    layers = f["layers"]
    if not layers:
        return f"kvdist push {transfer_id}: nothing to write"
    writes_ms = sum(max(0, x["completed_ns"] - x["posted_ns"]) for x in layers) / 1e6
    last = max(layers, key=lambda x: x["layer"])
    tail_ms = max(0, last["completed_ns"] - last["synchronized_ns"]) / 1e6
    return (
        f"kvdist push {transfer_id}: {f['bytes'] / 2**20:.2f} MiB in {len(layers)} layers, "
        f"writes {writes_ms:.3f} ms in all, complete {tail_ms:.3f} ms after the last layer "
        f"was written"
    )


@dataclass
class _Outgoing:
    """A prefiller request's push: its decoder's want and the tasks so far."""

    want: Optional[Want]
    cluster: int
    transfer_id: str
    tasks: list[kvdist.Task] = field(default_factory=list)
    complete: bool = False  # the prompt's last blocks were pushed
    error: str = ""
    finished: bool = False  # vLLM finished the request (its blocks wait for us)
    reported: bool = False  # done sent
    report_sending: bool = True  # vLLM waits for it in get_finished (not if preempted)


@dataclass
class _Incoming:
    req_id: str
    cluster: int
    block_ids: list[int]
    deadline: float
    cancel_sent: bool = False


class WorkerSide:
    def __init__(self, opts: ConnectorOptions, producer: bool) -> None:
        self.opts = opts
        self.producer = producer
        self.dd: Optional[kvdist.DataDist] = None
        self.cache: Optional[kvdist.Cache] = None
        self.layer_index: dict[str, int] = {}
        self.block_bytes = 0
        self.backing: Optional[kvdist.Cache] = None  # vLLM's KV memory, if ours
        # Prefiller.
        self._wants: dict[str, tuple[Want, int, float]] = {}  # id -> want, sender, arrival
        self._new_wants: set[str] = set()
        self._out: dict[str, _Outgoing] = {}  # req id -> push
        self._events: Optional[kvdist.LayerEvents] = None
        # Decoder.
        self._in: dict[str, _Incoming] = {}  # transfer id -> load
        self._recved: set[str] = set()
        self._bad_blocks: set[int] = set()

    # ---- set-up -------------------------------------------------------------

    def _start(self, pool_bytes: int = 1 << 30) -> kvdist.DataDist:
        if self.dd is None:
            o = self.opts
            self.dd = kvdist.DataDist(
                "prompt" if self.producer else "decoder",
                o.cluster_id,
                listen=o.listen if self.producer else "",
                transfer_timeout_ms=o.transfer_timeout_ms,
                sync_timeout_ms=o.layer_timeout_ms,
                pool_bytes=pool_bytes,
            )
        return self.dd

    def allocation_context(self) -> Optional[AbstractContextManager]:
        return _AllocateFromKvdist(self) if self.opts.kv_in_kvdist_pool else None

    def allocate_backing(self, nbytes: int) -> Any:
        """vLLM's KV cache memory, from kvdist's pool, zeroed, as an int8 tensor."""
        import torch

        self.backing = self._start(pool_bytes=nbytes + (64 << 20)).allocate(1, (nbytes,), "uint8")
        buf = torch.from_numpy(self.backing.tensor(0)).view(torch.int8)
        buf.zero_()
        return buf

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        names = list(kv_caches)
        tensors, per_layer = _layout([kv_caches[n] for n in names])
        self.layer_index = {n: i for i, n in enumerate(names)}
        self.cache = self._start().register(tensors, blocks=True, tensors_per_layer=per_layer)
        self.block_bytes = self.cache.tensor_bytes // self.cache.shape[0]
        log.info(
            "kvdist %s cluster %d: %d layers, %d blocks of %d bytes per tensor, %s",
            "prefiller" if self.producer else "decoder",
            self.opts.cluster_id,
            len(names),
            self.cache.shape[0],
            self.block_bytes,
            "in kvdist's pool" if self.backing is not None else "vLLM's memory registered in place",
        )

    def shutdown(self) -> None:
        if self._events is not None:
            self._events.abort()
        if self.dd is not None:
            for t in [t for out in self._out.values() for t in out.tasks]:
                t.cancel()
            for cluster in self.dd.linked:
                with contextlib.suppress(kvdist.KvdistError):
                    self.dd.unlink(cluster)
            if self.backing is None:
                self.dd.close()
                self.dd = None
            # else: vLLM's tensors live in kvdist's memory and may outlive
            # this call; the memory goes with the process.

    # ---- prefiller ----------------------------------------------------------

    def save_kv_layer(self, layer_name: str, meta: KvdistMetadata) -> None:
        idx = self.layer_index.get(layer_name)
        if idx is None or self.opts.push == "after_forward":
            return
        if self._events is None:
            self._start_pushes(meta)
        self._events.ready(idx)

    def wait_for_save(self, meta: Optional[KvdistMetadata]) -> None:
        # Pushing after the forward (push="after_forward"), or a forward that
        # wrote KV without our per-layer hooks: everything is written by now.
        if self._events is None and meta is not None and meta.pushes:
            self._start_pushes(meta)
            for i in range(len(self.layer_index)):
                self._events.ready(i)
        self._events = None  # pushes keep running; the next step gets its own
        # Every step, forward or not (an abort often comes in a step without one).
        for req_id, transfer_id, held in meta.abandoned if meta is not None else ():
            out = self._outgoing(req_id, transfer_id)
            out.error = out.error or "the prefiller dropped the request (preempted or aborted)"
            out.finished = out.finished or not held  # preempted: nobody waits for its blocks
            out.report_sending = held

    def _start_pushes(self, meta: KvdistMetadata) -> None:
        self._events = kvdist.LayerEvents()
        self._poll_messages()
        for spec in meta.pushes:
            self._push(spec)

    def _outgoing(self, req_id: str, transfer_id: str) -> _Outgoing:
        out = self._out.get(req_id)
        if out is None:
            entry = self._wants.pop(transfer_id, None)
            want, cluster = (entry[0], entry[1]) if entry else (None, -1)
            out = _Outgoing(want, cluster, transfer_id)
            if want is None:
                out.error = f"no want for transfer {transfer_id}"
            self._out[req_id] = out
        return out

    def _push(self, spec: PushSpec) -> None:
        out = self._outgoing(spec.req_id, spec.transfer_id)
        out.complete = out.complete or spec.last
        if out.error:
            return
        w = out.want
        problem = ""
        if w.tokens != spec.num_prompt_tokens:
            problem = f"decoder has {w.tokens} prompt tokens, prefiller {spec.num_prompt_tokens}"
        elif w.block_bytes != self.block_bytes or len(w.addrs) != len(self.cache.addrs):
            problem = (
                f"decoder cache ({len(w.addrs)} tensors, {w.block_bytes}-byte blocks) differs "
                f"from prefiller's ({len(self.cache.addrs)}, {self.block_bytes})"
            )
        src: list[int] = []
        dst: list[int] = []
        for i, block in enumerate(spec.block_ids):
            j = spec.first_block + i - w.first_block
            if j < 0:
                continue  # the decoder holds it already (its own prefix cache)
            if j >= len(w.blocks):
                problem = problem or f"decoder sent {len(w.blocks)} blocks, block {j} needed"
                break
            src.append(block)
            dst.append(w.blocks[j])
        if problem:
            out.error = problem
            return
        if not src:
            return
        try:
            task = self.dd.transfer(
                self.cache,
                [kvdist.Destination(out.cluster, w.addrs)],
                self._events,
                src_blocks=src,
                dst_blocks=dst,
            )
        except kvdist.KvdistError as e:
            out.error = f"push refused: {e}"
            return
        out.tasks.append(task)

    def _finish_pushes(self, finished_req_ids: set[str]) -> set[str]:
        sending: set[str] = set()
        for req_id in finished_req_ids:
            if req_id in self._out:
                self._out[req_id].finished = True
        for req_id, out in list(self._out.items()):
            if not out.reported and (out.error or out.complete or out.finished):
                if not all(t.done for t in out.tasks):
                    continue
                error = out.error
                for t in out.tasks:
                    if not error and t.wait(0) != kvdist.StatusCode.SUCCESS:
                        error = "push failed: " + "; ".join(m for m in t.messages() if m)
                if not error and not out.complete:
                    error = "the prefiller dropped the request before its prompt was complete"
                self._send(out.cluster, Done(out.transfer_id, not error, error))
                if error:
                    log.warning("transfer %s (request %s): %s", out.transfer_id, req_id, error)
                elif out.tasks:
                    log.info("%s", _push_figures(out.transfer_id, out.tasks[-1]))
                out.reported = True
            if out.reported and out.finished:
                if out.report_sending:
                    sending.add(req_id)
                del self._out[req_id]
        return sending

    # ---- decoder ------------------------------------------------------------

    def start_load_kv(self, meta: KvdistMetadata) -> None:
        for spec in meta.loads:
            p = spec.params
            deadline = time.monotonic() + self.opts.load_timeout_s
            load = _Incoming(spec.req_id, p.remote_cluster_id, spec.block_ids, deadline)
            self._in[p.transfer_id] = load
            want = Want(
                id=p.transfer_id,
                cluster=self.opts.cluster_id,
                addrs=list(self.cache.addrs),
                block_bytes=self.block_bytes,
                tokens=spec.num_prompt_tokens,
                first_block=spec.first_block,
                blocks=spec.block_ids,
            )
            try:
                if p.remote_cluster_id not in self.dd.linked:
                    self.dd.link(
                        p.remote_cluster_id,
                        p.remote_host,
                        p.remote_port,
                        timeout_ms=self.opts.link_timeout_ms,
                    )
                self.dd.send(p.remote_cluster_id, want.encode())
            except kvdist.KvdistError as e:
                self._fail_load(p.transfer_id, f"cannot reach prefiller: {e}")

    def _fail_load(self, transfer_id: str, why: str) -> None:
        load = self._in.pop(transfer_id)
        log.warning("transfer %s (request %s) failed: %s", transfer_id, load.req_id, why)
        self._bad_blocks.update(load.block_ids)
        self._recved.add(load.req_id)

    def _check_loads(self) -> None:
        now = time.monotonic()
        linked = set(self.dd.linked) if self._in else set()
        for tid, load in list(self._in.items()):
            if load.cluster not in linked:
                self._fail_load(tid, f"link to prefiller cluster {load.cluster} is down")
            elif now > load.deadline + self.opts.load_timeout_s:
                self._fail_load(tid, "the prefiller neither pushed nor confirmed a cancel")
            elif now > load.deadline and not load.cancel_sent:
                # Ask the prefiller to stop; its done (after no write of the
                # transfer can land any more) frees the blocks.
                load.cancel_sent = True
                self._send(load.cluster, Cancel(tid))

    # ---- both ---------------------------------------------------------------

    def _send(self, cluster: int, msg: Union[Done, Cancel]) -> None:
        try:
            self.dd.send(cluster, msg.encode())
        except kvdist.KvdistError as e:
            log.warning("message to cluster %d lost: %s", cluster, e)

    def _poll_messages(self, wait_ms: int = 0) -> None:
        if self.dd is None:
            return
        for sender, payload in self.dd.receive(256, wait_ms):
            msg = decode_message(payload)
            if isinstance(msg, Want) and self.producer:
                if msg.cluster != sender:
                    log.warning(
                        "want from cluster %d names cluster %d; ignored", sender, msg.cluster
                    )
                    continue
                self._wants[msg.id] = (msg, sender, time.monotonic())
                self._new_wants.add(msg.id)
            elif isinstance(msg, Cancel) and self.producer:
                self._cancel(msg.id)
            elif isinstance(msg, Done) and not self.producer:
                load = self._in.get(msg.id)
                if load is None or load.cluster != sender:
                    continue
                if msg.ok:
                    del self._in[msg.id]
                    self._recved.add(load.req_id)
                else:
                    self._fail_load(msg.id, msg.error)
            else:
                log.warning("unexpected message from cluster %d ignored", sender)
        # Wants nobody pushed for (the prefiller gave up on the request).
        stale = time.monotonic() - self.opts.want_timeout_s - self.opts.load_timeout_s
        for tid in [t for t, (_, _, at) in self._wants.items() if at < stale]:
            del self._wants[tid]

    def _cancel(self, transfer_id: str) -> None:
        for out in self._out.values():
            if out.transfer_id == transfer_id and not out.reported:
                for t in out.tasks:
                    t.cancel()
                out.error = out.error or "cancelled by the decoder"
        if transfer_id in self._wants:
            _, sender, _ = self._wants.pop(transfer_id)
            self._send(sender, Done(transfer_id, False, "cancelled before the push started"))

    def get_finished(
        self, finished_req_ids: set[str], wait_ms: int = 0
    ) -> tuple[set[str], set[str]]:
        """wait_ms: block up to that long for the first message (an idle
        engine step; the message, not the timeout, normally ends it)."""
        if self.dd is None:
            return set(), set()
        self._poll_messages(wait_ms)
        if self.producer:
            return self._finish_pushes(finished_req_ids), set()
        self._check_loads()
        recved, self._recved = self._recved, set()
        return set(), recved

    def take_load_errors(self) -> set[int]:
        bad, self._bad_blocks = self._bad_blocks, set()
        return bad

    def take_new_wants(self) -> Optional[KvdistWorkerMetadata]:
        self._poll_messages()
        if not self._new_wants:
            return None
        wants, self._new_wants = self._new_wants, set()
        return KvdistWorkerMetadata(wants)
