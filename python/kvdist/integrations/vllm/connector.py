"""KvdistConnector: vLLM's KV connector (v1) over kvdist, layer-wise push.

Load it as a third-party connector::

    KVTransferConfig(kv_connector="KvdistConnector",
                     kv_connector_module_path="kvdist.integrations.vllm",
                     kv_role="kv_producer" | "kv_consumer",
                     kv_connector_extra_config={"listen": "127.0.0.1:26000"})

The class only routes vLLM's calls to the scheduler side or the worker side
(scheduler.py, worker.py); the flow is in docs/vllm.md.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any, Optional

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from kvdist.integrations.vllm.metadata import KvdistMetadata
from kvdist.integrations.vllm.protocol import ConnectorOptions
from kvdist.integrations.vllm.scheduler import SchedulerSide
from kvdist.integrations.vllm.worker import WorkerSide

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

log = logging.getLogger("kvdist.vllm")

_DEFAULT_CLUSTER = random.SystemRandom().randrange(2, 1 << 62)


def _log_like_vllm() -> None:
    """kvdist's log lines where vLLM's go, at vLLM's level."""
    ours, theirs = logging.getLogger("kvdist"), logging.getLogger("vllm")
    if not ours.handlers and theirs.handlers:
        for h in theirs.handlers:
            ours.addHandler(h)
        ours.setLevel(theirs.level)
        ours.propagate = False


class KvdistConnector(KVConnectorBase_V1):
    def __init__(
        self,
        vllm_config: VllmConfig,
        role: KVConnectorRole,
        kv_cache_config: Optional[KVCacheConfig] = None,
    ) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        _log_like_vllm()
        ktc = vllm_config.kv_transfer_config
        producer = ktc.kv_role == "kv_producer"
        if ktc.kv_role not in ("kv_producer", "kv_consumer"):
            raise ValueError(
                f"KvdistConnector: kv_role must be kv_producer or kv_consumer, got {ktc.kv_role}"
            )
        if vllm_config.parallel_config.tensor_parallel_size != 1:
            raise ValueError("KvdistConnector: tensor parallelism is not supported yet")
        default_cluster = 1 if producer else _DEFAULT_CLUSTER
        opts = ConnectorOptions.parse(ktc.kv_connector_extra_config, default_cluster)
        self._scheduler: Optional[SchedulerSide] = None
        self._worker: Optional[WorkerSide] = None
        if role == KVConnectorRole.SCHEDULER:
            block_size = vllm_config.cache_config.block_size
            self._scheduler = SchedulerSide(opts, block_size, producer)
        else:
            self._worker = WorkerSide(opts, producer)

    @property
    def requires_kv_delivery(self) -> bool:
        return self._kv_transfer_config.is_kv_producer

    # ---- worker -------------------------------------------------------------

    def get_mem_pool_context(self):
        return self._worker.allocation_context() if self._worker else None

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._worker.register_kv_caches(kv_caches)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        if not self._worker.producer and self.has_connector_metadata():
            self._worker.start_load_kv(self._meta())

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # a decoder's loads complete between steps (asynchronous)

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        if self._worker.producer and self.has_connector_metadata():
            meta = self._meta()
            if meta.pushes:
                self._worker.save_kv_layer(layer_name, meta)

    def wait_for_save(self) -> None:
        if self._worker.producer:
            self._worker.wait_for_save(self._meta() if self.has_connector_metadata() else None)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str], set[str]]:
        wait_ms = self._meta().idle_wait_ms if self.has_connector_metadata() else 0
        sending, recving = self._worker.get_finished(finished_req_ids, wait_ms)
        return sending or None, recving or None

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_load_errors() if self._worker else set()

    def build_connector_worker_meta(self):
        return self._worker.take_new_wants() if self._worker.producer else None

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()

    def _meta(self) -> KvdistMetadata:
        meta = self._get_connector_metadata()
        assert isinstance(meta, KvdistMetadata)
        return meta

    # ---- scheduler ----------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[Optional[int], bool]:
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        self._scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        return self._scheduler.build_connector_meta(scheduler_output)

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        self._scheduler.update_connector_output(connector_output)

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, Optional[dict[str, Any]]]:
        return self._scheduler.request_finished(request, block_ids)

    def has_pending_push_work(self) -> bool:
        return self._scheduler is not None and self._scheduler.has_pending_push_work()
