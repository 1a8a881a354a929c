"""What the two engines tell each other, without vLLM: the request parameters
(``kv_transfer_params``), the connector's options, and the messages that
travel on the kvdist link (``DataDist.send`` / ``receive``).

The flow (docs/vllm.md): the router gives both engines the same
``transfer_id``. The decoder allocates blocks for the prompt and sends a
``want`` (its cluster id, layer addresses, block ids) to the prefiller; the
prefiller's scheduler holds the request until the ``want`` is there, then
prefills it and pushes each layer's blocks as soon as the layer is written;
after the last layer a ``done`` tells the decoder the cache is complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

__all__ = [
    "Cancel",
    "ConnectorOptions",
    "DecodeParams",
    "Done",
    "ParamsError",
    "PrefillParams",
    "Want",
    "decode_message",
]


class ParamsError(ValueError):
    """Malformed ``kv_transfer_params`` or options; names the field."""


def _field(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in d:
        raise ParamsError(f"{where}: '{key}' is missing")
    v = d[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ParamsError(f"{where}: '{key}' must be an integer, got {v!r}")
    if kind is str and (not isinstance(v, str) or not v):
        raise ParamsError(f"{where}: '{key}' must be a non-empty string, got {v!r}")
    return v


@dataclass(frozen=True)
class DecodeParams:
    """A decoder's request: its KV comes from the prefiller at
    remote_host:remote_port (kvdist listener of cluster remote_cluster_id)."""

    transfer_id: str
    remote_host: str
    remote_port: int
    remote_cluster_id: int

    @staticmethod
    def parse(params: Optional[dict[str, Any]]) -> Optional[DecodeParams]:
        """None if the request is not a remote prefill; ParamsError if it is
        one with missing or malformed fields."""
        if not params or not params.get("do_remote_prefill"):
            return None
        where = "kv_transfer_params"
        port = _field(params, "remote_port", int, where)
        if not 0 < port < 65536:
            raise ParamsError(f"{where}: 'remote_port' {port} is not a port")
        cluster = _field(params, "remote_cluster_id", int, where)
        if cluster < 0:
            raise ParamsError(f"{where}: 'remote_cluster_id' {cluster} is negative")
        return DecodeParams(
            transfer_id=_field(params, "transfer_id", str, where),
            remote_host=_field(params, "remote_host", str, where),
            remote_port=port,
            remote_cluster_id=cluster,
        )


@dataclass(frozen=True)
class PrefillParams:
    """A prefiller's request: push its KV to whoever sends a ``want`` with
    this transfer_id."""

    transfer_id: str

    @staticmethod
    def parse(params: Optional[dict[str, Any]]) -> Optional[PrefillParams]:
        if not params or not params.get("do_remote_decode"):
            return None
        return PrefillParams(_field(params, "transfer_id", str, "kv_transfer_params"))


@dataclass(frozen=True)
class ConnectorOptions:
    """``kv_connector_extra_config`` of KvdistConnector.

    cluster_id: this engine's kvdist cluster id (default: 1 for a producer, a
    random one for a consumer). listen: the producer's kvdist listen address
    (ip:port; the router hands it to decoders). want_timeout_s: how long a
    prefiller holds a request for its decoder's block ids before prefilling
    without a push. load_timeout_s: how long a decoder waits for a cache
    before failing the request's load (vLLM's kv_load_failure_policy then
    decides). transfer_timeout_ms: kvdist's deadline for one layer's writes.
    layer_timeout_ms: how long a push waits for the model to write its next
    layer (a forward that dies mid-way fails its pushes then).
    push: "layerwise" (each layer as soon as it is written) or "after_forward"
    (everything once the forward pass is over; for comparison).
    kv_in_kvdist_pool: let vLLM allocate its KV cache from kvdist's pool
    (the fast path; False registers vLLM's own memory, for comparison).
    """

    cluster_id: int
    listen: str = "127.0.0.1:26000"
    want_timeout_s: float = 5.0
    load_timeout_s: float = 30.0
    transfer_timeout_ms: int = 10000
    link_timeout_ms: int = 3000
    kv_in_kvdist_pool: bool = True
    layer_timeout_ms: int = 60000
    push: str = "layerwise"

    @staticmethod
    def parse(extra: Optional[dict[str, Any]], default_cluster_id: int) -> ConnectorOptions:
        extra = dict(extra or {})
        known = set(ConnectorOptions.__dataclass_fields__)
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ParamsError(f"kv_connector_extra_config: unknown keys {unknown}")
        extra.setdefault("cluster_id", default_cluster_id)
        opts = ConnectorOptions(**extra)
        if isinstance(opts.cluster_id, bool) or not isinstance(opts.cluster_id, int):
            raise ParamsError("kv_connector_extra_config: 'cluster_id' must be an integer")
        if opts.push not in ("layerwise", "after_forward"):
            raise ParamsError(
                "kv_connector_extra_config: 'push' must be layerwise or after_forward"
            )
        return opts


class _Message:
    """A message on the kvdist link: its dataclass fields as compact JSON."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


@dataclass
class Want(_Message):
    """Decoder -> prefiller: push transfer ``id`` into my blocks.

    addrs: my KV tensor addresses per layer (tensors_per_layer each);
    blocks: my block ids for the prompt's blocks ``first_block`` onwards
    (earlier ones I already hold from my own prefix cache); block_bytes: the
    bytes of one block of one tensor, which must equal the prefiller's.
    """

    id: str
    cluster: int
    addrs: list[int]
    block_bytes: int
    tokens: int
    first_block: int
    blocks: list[int] = field(default_factory=list)
    op: str = "want"


@dataclass
class Done(_Message):
    """Prefiller -> decoder: transfer ``id`` is complete (ok) or failed."""

    id: str
    ok: bool
    error: str = ""
    op: str = "done"


@dataclass
class Cancel(_Message):
    """Decoder -> prefiller: I gave up on transfer ``id``; stop, and answer
    with a ``done`` once no write of it can land any more."""

    id: str
    op: str = "cancel"


def decode_message(payload: bytes) -> Optional[Union[Want, Done, Cancel]]:
    """A Want, Done or Cancel, or None for anything else (a malformed or unknown
    message from a peer is ignored, never raised)."""
    try:
        d = json.loads(payload)
        if not isinstance(d, dict):
            return None
        op = d.get("op")
        if op == "want":
            w = Want(**d)
            ints = [w.cluster, w.block_bytes, w.tokens, w.first_block, *w.addrs, *w.blocks]
            if not isinstance(w.id, str) or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ints
            ):
                return None
            return w
        if op == "done":
            done = Done(**d)
            if not isinstance(done.id, str) or not isinstance(done.ok, bool):
                return None
            return done
        if op == "cancel":
            cancel = Cancel(**d)
            return cancel if isinstance(cancel.id, str) else None
    except (ValueError, TypeError):
        return None
    return None
