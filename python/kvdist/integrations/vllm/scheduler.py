"""The scheduler side of KvdistConnector (one per engine, in the engine core).

Prefiller (kv_producer): holds a request with ``do_remote_decode`` until its
decoder's ``want`` has reached the worker (or ``want_timeout_s`` passes: then
it prefills without a push), then tells the workers, step by step, which
blocks each forward writes; keeps the blocks until the push has finished.

Decoder (kv_consumer): for a request with ``do_remote_prefill``, claims all
prompt tokens as loaded asynchronously, so vLLM allocates the blocks and
parks the request; hands the block ids to the worker, which asks the
prefiller for them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from kvdist.integrations.vllm.metadata import (
    KvdistMetadata,
    KvdistWorkerMetadata,
    LoadSpec,
    PushSpec,
)
from kvdist.integrations.vllm.protocol import (
    ConnectorOptions,
    DecodeParams,
    ParamsError,
    PrefillParams,
)

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

log = logging.getLogger("kvdist.vllm")

IDLE_WAIT_MS = 20


@dataclass
class _Push:
    transfer_id: str
    num_prompt_tokens: int
    blocks: list[int] = field(default_factory=list)
    done_prefill: bool = False


class SchedulerSide:
    def __init__(self, opts: ConnectorOptions, block_size: int, producer: bool) -> None:
        self.opts = opts
        self.block_size = block_size
        self.producer = producer
        # Prefiller.
        self._wants: set[str] = set()  # transfer ids whose want the workers hold
        self._held_since: dict[str, float] = {}  # req id -> first time held
        self._pushes: dict[str, _Push] = {}  # req id -> push in progress
        self._abandoned: list[tuple[str, str, bool]] = []
        self._unfreed: set[str] = set()  # finished requests whose blocks we keep
        # Decoder.
        self._loads: list[LoadSpec] = []
        self._loading: set[str] = set()  # req ids whose cache has not arrived

    # ---- both ---------------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[Optional[int], bool]:
        if self.producer:
            return self._hold_for_want(request), False
        try:
            params = DecodeParams.parse(request.kv_transfer_params)
        except ParamsError as e:
            log.error("request %s: %s; computing its prompt locally", request.request_id, e)
            request.kv_transfer_params = None
            return 0, False
        if params is None:
            return 0, False
        count = request.num_prompt_tokens - num_computed_tokens
        return (count, True) if count > 0 else (0, False)

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        if self.producer or num_external_tokens <= 0:
            return
        params = DecodeParams.parse(request.kv_transfer_params)
        if params is None:
            return
        n = request.num_prompt_tokens
        local = n - num_external_tokens  # our own prefix-cache hit, block aligned
        first = local // self.block_size
        needed = -(-n // self.block_size)
        ids = list(blocks.get_block_ids()[0])
        self._loads.append(LoadSpec(request.request_id, params, ids[first:needed], first, n))
        self._loading.add(request.request_id)
        # Load once: a request that comes back (preempted) computes locally.
        request.kv_transfer_params = dict(request.kv_transfer_params or {})
        request.kv_transfer_params["do_remote_prefill"] = False

    def build_connector_meta(self, out: SchedulerOutput) -> KvdistMetadata:
        meta = KvdistMetadata(loads=self._loads, abandoned=self._abandoned)
        self._loads, self._abandoned = [], []
        if out.total_num_scheduled_tokens == 0:
            if self._held_since or self._loading:
                meta.idle_wait_ms = IDLE_WAIT_MS  # a message ends the wait
            elif self._unfreed or meta.abandoned:
                meta.idle_wait_ms = 1  # pushes finish without a message here
        if not self.producer:
            return meta
        for d in out.scheduled_new_reqs:
            push = self._pushes.get(d.req_id)
            if push is not None:
                push.blocks = list(d.block_ids[0])
                # From block 0: blocks from our own prefix cache were not
                # computed in this step but the decoder needs them too.
                self._plan(meta, d.req_id, push, d.num_computed_tokens, out, first_token=0)
        cached = out.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            push = self._pushes.get(req_id)
            if push is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                # Preempted: its blocks were freed and refilled; what was pushed
                # is gone. The decoder is told the transfer failed.
                if not push.done_prefill:
                    meta.abandoned.append((req_id, push.transfer_id, False))
                del self._pushes[req_id]
                continue
            if new_ids is not None:
                push.blocks.extend(new_ids[0])
            self._plan(meta, req_id, push, cached.num_computed_tokens[i], out)
        return meta

    def request_finished(self, request: Request, block_ids: Any) -> tuple[bool, Optional[dict]]:
        self._held_since.pop(request.request_id, None)
        push = self._pushes.pop(request.request_id, None)
        if push is None:
            return False, None
        if not push.done_prefill:
            self._abandoned.append((request.request_id, push.transfer_id, True))  # aborted
        self._unfreed.add(request.request_id)
        # The push may still be in flight: its outcome goes to the decoder.
        state = "in_flight" if push.done_prefill else "abandoned"
        return True, {"transfer_id": push.transfer_id, "kvdist_push": state}

    def update_connector_output(self, output: KVConnectorOutput) -> None:
        meta = getattr(output, "kv_connector_worker_meta", None)
        if isinstance(meta, KvdistWorkerMetadata):
            self._wants |= meta.wants
        for req_id in output.finished_sending or ():
            self._unfreed.discard(req_id)
        self._loading.difference_update(output.finished_recving or ())

    def has_pending_push_work(self) -> bool:
        return bool(self._unfreed or self._pushes or self._abandoned)

    # ---- prefiller ----------------------------------------------------------

    def _hold_for_want(self, request: Request) -> Optional[int]:
        req_id = request.request_id
        try:
            params = PrefillParams.parse(request.kv_transfer_params)
        except ParamsError as e:
            log.error("request %s: %s; prefilling without a push", req_id, e)
            request.kv_transfer_params = None
            return 0
        if params is None or req_id in self._pushes:
            return 0
        if params.transfer_id in self._wants:
            self._wants.discard(params.transfer_id)
            self._held_since.pop(req_id, None)
            self._pushes[req_id] = _Push(params.transfer_id, request.num_prompt_tokens)
            return 0
        since = self._held_since.setdefault(req_id, time.monotonic())
        if time.monotonic() - since < self.opts.want_timeout_s:
            return None  # ask again next step
        log.warning(
            "request %s: no decoder asked for transfer %s within %.1f s; prefilling without a push",
            req_id,
            params.transfer_id,
            self.opts.want_timeout_s,
        )
        del self._held_since[req_id]
        request.kv_transfer_params = None
        return 0

    def _plan(
        self,
        meta: KvdistMetadata,
        req_id: str,
        push: _Push,
        computed: int,
        out: SchedulerOutput,
        first_token: Optional[int] = None,
    ) -> None:
        """Pushes the blocks this step writes (tokens computed..end), from
        first_token's block if given."""
        n = push.num_prompt_tokens
        if computed >= n or push.done_prefill:
            return
        end = min(n, computed + out.num_scheduled_tokens.get(req_id, 0))
        if end <= computed:
            return
        first = (computed if first_token is None else first_token) // self.block_size
        stop = -(-end // self.block_size)
        push.done_prefill = end >= n
        meta.pushes.append(
            PushSpec(req_id, push.transfer_id, push.blocks[first:stop], first, n, push.done_prefill)
        )
