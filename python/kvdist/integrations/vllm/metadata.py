"""What the scheduler side hands its workers each step, and what workers
hand back (vLLM's KVConnectorMetadata / KVConnectorWorkerMetadata)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorMetadata,
    KVConnectorWorkerMetadata,
)

from kvdist.integrations.vllm.protocol import DecodeParams


@dataclass
class LoadSpec:
    """Decoder: ask the prefiller for the prompt's blocks from first_block on."""

    req_id: str
    params: DecodeParams
    block_ids: list[int]  # blocks first_block .. of the prompt
    first_block: int
    num_prompt_tokens: int


@dataclass
class PushSpec:
    """Prefiller: this step writes blocks first_block .. of the request's
    prompt; push them layer by layer. last: the prompt is complete after it."""

    req_id: str
    transfer_id: str
    block_ids: list[int]  # local blocks first_block ..
    first_block: int
    num_prompt_tokens: int
    last: bool


@dataclass
class KvdistMetadata(KVConnectorMetadata):
    loads: list[LoadSpec] = field(default_factory=list)
    pushes: list[PushSpec] = field(default_factory=list)
    # Prefiller: (request id, transfer id, blocks held for us) of pushes
    # abandoned before the prompt was complete: aborted (vLLM holds the blocks
    # until we report the request) or preempted (its blocks are gone already).
    abandoned: list[tuple[str, str, bool]] = field(default_factory=list)
    # The engine has nothing to compute this step and keeps stepping only
    # for us: the worker waits up to this long for a message (a want, a
    # done) instead of letting the engine loop spin on the CPU the model
    # needs (two engines share the cores of one host).
    idle_wait_ms: int = 0


@dataclass
class KvdistWorkerMetadata(KVConnectorWorkerMetadata):
    """Prefiller workers -> scheduler: transfer ids whose ``want`` arrived."""

    wants: set[str] = field(default_factory=set)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        if isinstance(other, KvdistWorkerMetadata):
            return KvdistWorkerMetadata(self.wants | other.wants)
        return self
