"""DataDist: one cluster's endpoint; links, caches and layer-wise pushes."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from kvdist._ucx import native
from kvdist.cache import Cache, buffer_address, check_same
from kvdist.dtypes import data_type_of
from kvdist.status import KvdistError, StatusCode

_kvdist = native()

__all__ = ["DataDist", "Destination", "LayerEvents", "Link", "Role", "Task"]

Synchronizer = Union[Callable[[int, Optional[int]], bool], Any, None]


class Role(enum.IntEnum):
    """PROMPT pushes (and listens); DECODER links to it and receives."""

    PROMPT = 1
    DECODER = 2


@dataclass(frozen=True)
class Destination:
    """Where a push goes: ``addrs`` holds K and V addresses per pushed layer
    (``tensors_per_layer * len(layers)`` entries, the destination's own
    addresses).

    ``layers``: the source layers to push (None: all); ``batch_index``: the
    source batch slice (contiguous caches).
    """

    cluster_id: int
    addrs: Sequence[int]
    layers: Optional[range] = None
    batch_index: int = 0


class Task:
    """A running push. All waits release the GIL."""

    def __init__(self, native: Any, count: int) -> None:
        self._native = native
        self._count = count

    def wait(self, timeout_ms: Optional[int] = None) -> StatusCode:
        """``WAIT_PROCESS_TIMEOUT`` while running, else the first error or ``SUCCESS``."""
        return StatusCode.of(self._native.synchronize(timeout_ms))

    def results(self, timeout_ms: Optional[int] = None) -> list[Optional[StatusCode]]:
        """One code per destination (None: never attempted)."""
        return [
            None if c is None else StatusCode.of(c) for c in self._native.get_results(timeout_ms)
        ]

    def messages(self) -> list[str]:
        """Why each destination failed ("" for success)."""
        return [self._native.result_message(i) for i in range(self._count)]

    def cancel(self) -> None:
        """Stops after the layer in progress; returns once no write can still land."""
        self._native.cancel()

    @property
    def done(self) -> bool:
        return bool(self._native.done())

    def figures(self) -> dict[str, Any]:
        """Bytes, puts, elapsed ns, and per layer: synchronized/posted/completed ns."""
        return dict(self._native.figures())


class LayerEvents:
    """A synchronizer for a compute loop: call :meth:`ready` after writing a
    layer; the push of that layer waits for it."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._ready: set[int] = set()
        self._aborted = False

    def ready(self, layer: int) -> None:
        with self._cv:
            self._ready.add(layer)
            self._cv.notify_all()

    def abort(self) -> None:
        """Makes the push fail at the next layer it waits for."""
        with self._cv:
            self._aborted = True
            self._cv.notify_all()

    def __call__(self, layer: int, timeout_ms: Optional[int]) -> bool:
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        with self._cv:
            self._cv.wait_for(lambda: layer in self._ready or self._aborted, timeout)
            return layer in self._ready and not self._aborted


class Link:
    """A link to a PROMPT; a context manager that unlinks on exit."""

    def __init__(self, owner: DataDist, cluster_id: int) -> None:
        self._owner = owner
        self.cluster_id = cluster_id

    def close(self, timeout_ms: int = 3000) -> None:
        self._owner.unlink(self.cluster_id, timeout_ms=timeout_ms)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owner.initialized and self.cluster_id in self._owner.linked:
            self.close()


def _as_callable(sync: Synchronizer) -> Callable[[int, Optional[int]], bool]:
    if sync is None:
        return lambda layer, timeout: True
    method = getattr(sync, "synchronize_layer", None)
    if method is not None:
        return method
    if callable(sync):
        return sync
    raise TypeError("synchronizer must be None, a callable or have synchronize_layer()")


class DataDist:
    """A PROMPT or DECODER endpoint, initialised on construction.

    ``listen`` ("ip:port", port 0 for any) is required for a PROMPT.
    ``sync_timeout_ms`` bounds each synchronizer call, ``transfer_timeout_ms``
    the confirmation of each layer's writes. ``copy_lanes``: threads that
    copy into DECODERs on this host (0: one per CPU, at most 8).
    ``auth_secret``: a shared secret every link must prove both ways (empty:
    ``KVDIST_AUTH_SECRET`` from the environment, else no authentication); a
    wrong or missing one fails the link with ``LLM_LINK_FAILED``. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        role: Union[Role, str],
        cluster_id: int,
        *,
        listen: str = "",
        sync_timeout_ms: int = 1000,
        transfer_timeout_ms: int = 10000,
        pool_bytes: int = 16 << 30,
        inflight_layers: int = 4,
        copy_lanes: int = 0,
        auth_secret: str = "",
    ) -> None:
        self.role = Role[role.upper()] if isinstance(role, str) else Role(role)
        self._native = _kvdist.DataDist(int(self.role), cluster_id)
        self._native.init(
            listen,
            sync_timeout_ms,
            transfer_timeout_ms,
            pool_bytes,
            inflight_layers,
            copy_lanes,
            auth_secret,
        )

    @property
    def cluster_id(self) -> int:
        return int(self._native.cluster_id)

    @property
    def port(self) -> int:
        """The listen port (PROMPT)."""
        return int(self._native.listen_port)

    @property
    def initialized(self) -> bool:
        return bool(self._native.initialized)

    def close(self) -> None:
        """Ends tasks, links and caches. Idempotent."""
        self._native.finalize()

    def __enter__(self) -> DataDist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- links --------------------------------------------------------------

    def link(self, cluster_id: int, host: str, port: int, *, timeout_ms: int = 3000) -> Link:
        """Links to the PROMPT ``cluster_id`` listening at host:port."""
        code, codes, why = self._native.link([(cluster_id, host, port)], timeout_ms)
        if codes and codes[0] != StatusCode.SUCCESS:
            raise _error(
                codes[0], f"link to cluster {cluster_id} at {host}:{port} failed: {why[0]}"
            )
        return Link(self, cluster_id)

    def unlink(self, cluster_id: int, *, timeout_ms: int = 3000) -> None:
        code, codes, why = self._native.unlink([(cluster_id, "", 0)], timeout_ms)
        if codes and codes[0] != StatusCode.SUCCESS:
            raise _error(codes[0], f"unlink from cluster {cluster_id} failed: {why[0]}")

    @property
    def linked(self) -> list[int]:
        return list(self._native.linked())

    # ---- caches -------------------------------------------------------------

    def allocate(
        self,
        num_tensors: int,
        shape: Sequence[int],
        dtype: Any = "float16",
        *,
        blocks: bool = False,
        keys: Sequence[int] = (),
    ) -> Cache:
        """A cache in memory kvdist allocates (the fastest path).

        ``keys`` (contiguous caches): request ids a peer may :meth:`pull`
        batch ``i`` by, ``keys[i]``; each is used up by its first pull, and a
        freed cache lives until its keys are.
        """
        dt = data_type_of(dtype)
        key_tuples = [(0, self.cluster_id, int(k), _NO_KEY, 0, -1, 0) for k in keys]
        cache_id, addrs = self._native.allocate(
            num_tensors, list(shape), int(dt), 1, 0, -1, blocks, key_tuples
        )
        return Cache(cache_id, tuple(shape), dt, list(addrs), blocks, self)

    def register(
        self, tensors: Sequence[Any], *, blocks: bool = False, tensors_per_layer: int = 2
    ) -> Cache:
        """A cache over caller-owned memory: numpy arrays, torch CPU tensors or
        buffers of one shape and type. They are kept alive by the cache.
        ``tensors_per_layer`` 1: each tensor is a whole layer (K and V)."""
        shape, dt = check_same(tensors)
        addrs = [buffer_address(t)[0] for t in tensors]
        cache_id, out = self._native.register(
            len(addrs), list(shape), int(dt), addrs, blocks, tensors_per_layer
        )
        return Cache(cache_id, shape, dt, list(out), blocks, self, list(tensors), tensors_per_layer)

    def _free(self, cache: Cache) -> None:
        if self.initialized:
            self._native.deallocate(cache.cache_id)

    # ---- transfers ----------------------------------------------------------

    def transfer(
        self,
        cache: Cache,
        to: Sequence[Destination],
        synchronizer: Synchronizer = None,
        *,
        src_blocks: Optional[Sequence[int]] = None,
        dst_blocks: Optional[Sequence[int]] = None,
        dst_block_bytes: Optional[int] = None,
        sync_timeout_ms: Optional[int] = None,
    ) -> Task:
        """Pushes ``cache`` layer by layer to every destination (PROMPT only).

        ``synchronizer(layer, timeout_ms) -> bool`` (or an object with
        ``synchronize_layer``, or None for "all layers ready") is called from a
        worker thread before each layer; return True once the layer is written.
        Paged caches: source block ``src_blocks[i]`` lands at destination block
        ``dst_blocks[i]`` (``dst_block_bytes`` apart; default the source's).
        Several transfers may run at once, each with its own synchronizer.
        """
        configs = [
            (
                d.cluster_id,
                [int(a) for a in d.addrs],
                None if d.layers is None else d.layers.start,
                None if d.layers is None else d.layers.stop,
                d.batch_index,
            )
            for d in to
        ]
        native = self._native.transfer(
            cache.cache_id,
            cache.num_tensors,
            list(cache.shape),
            int(cache.dtype),
            0,
            cache.addrs,
            _as_callable(synchronizer),
            configs,
            list(src_blocks or []),
            list(dst_blocks or []),
            dst_block_bytes,
            sync_timeout_ms,
            False,
            False,
            cache.tensors_per_layer,
        )
        return Task(native, len(configs))

    def pull(
        self,
        cluster_id: int,
        into: Cache,
        *,
        cache_id: Optional[int] = None,
        req_id: Optional[int] = None,
        batch_index: int = 0,
        src_batch_index: int = 0,
        layers: Optional[range] = None,
        dst_layers: Optional[range] = None,
        src_blocks: Optional[Sequence[int]] = None,
        dst_blocks: Optional[Sequence[int]] = None,
        timeout_ms: Optional[int] = None,
    ) -> None:
        """Reads a cache of linked cluster ``cluster_id`` into ``into``; returns
        once every byte is in.

        Name the source by ``cache_id`` (with ``src_batch_index``) or by a
        ``req_id`` it was allocated under. Contiguous: one batch slice of
        every tensor (or of the tensors of ``layers``, landing in
        ``dst_layers``) into batch ``batch_index``. Blocks: source block
        ``src_blocks[i]`` into ``dst_blocks[i]``, blocks of one size.
        Raises KvdistError: KV_CACHE_NOT_EXIST, PARAM_INVALID (nothing
        written), NOT_YET_LINK, LINK_FAILED, WAIT_PROCESS_TIMEOUT (after
        ``timeout_ms``, default ``sync_timeout_ms``).
        """
        if (cache_id is None) == (req_id is None):
            raise ValueError("give exactly one of cache_id and req_id")
        if cache_id is not None:
            key = (1, cluster_id, _NO_KEY, _NO_KEY, 0, int(cache_id), src_batch_index)
        else:
            key = (0, cluster_id, int(req_id or 0), _NO_KEY, 0, -1, 0)
        self._native.pull(
            key,
            (into.cache_id, into.addrs, into.num_tensors, list(into.shape), int(into.dtype), 1),
            batch_index=batch_index,
            src_layers=None if layers is None else (layers.start, layers.stop),
            dst_layers=None if dst_layers is None else (dst_layers.start, dst_layers.stop),
            tensors_per_layer=into.tensors_per_layer,
            src_blocks=list(src_blocks or []),
            dst_blocks=list(dst_blocks or []),
            timeout_ms=timeout_ms,
        )

    def wait_layer(self, cache: Cache, layer: int, timeout_ms: int) -> None:
        """Receiving side: returns once ``layer`` of ``cache`` has landed;
        raises KvdistError (TIMEOUT, or the sender's error) otherwise."""
        code = self._native.wait_layer(cache.cache_id, layer, timeout_ms)
        if code != StatusCode.SUCCESS:
            raise _error(code, f"layer {layer} of cache {cache.cache_id}")

    def reset_arrivals(self, cache: Cache) -> None:
        """Forgets arrivals before the cache receives the next request."""
        self._native.reset_arrivals(cache.cache_id)

    # ---- messages -----------------------------------------------------------

    def send(self, cluster_id: int, payload: bytes) -> None:
        """Sends a small message (at most 60 KiB) to a linked cluster, either
        direction. Raises KvdistError NOT_YET_LINK / PARAM_INVALID."""
        self._native.send_message(cluster_id, bytes(payload))

    def receive(self, max_messages: int = 64, timeout_ms: int = 0) -> list[tuple[int, bytes]]:
        """Messages received, oldest first, as (sender cluster id, payload);
        waits up to ``timeout_ms`` for the first when none is waiting."""
        return [
            (int(c), bytes(p)) for c, p in self._native.receive_messages(max_messages, timeout_ms)
        ]

    @property
    def pool_bytes_in_use(self) -> int:
        return int(self._native.pool_bytes_in_use())


_NO_KEY = 2**64 - 1


def _error(code: int, what: str) -> KvdistError:
    sc = StatusCode.of(code)
    err = KvdistError(f"{what}: {sc.name}")
    err.code = int(code)
    err.message = what
    return err
