"""Access to kvdist's native binding: its errors translated, its argument
shapes (keys, caches, layer ranges), and the local cache operations both
managers hand to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from llm_datadist.llm_types import (
    INVALID_ID,
    BlocksCacheKey,
    Cache,
    CacheKey,
    CacheKeyByIdAndIndex,
    KvCache,
)
from llm_datadist.status import LLMException, LLMStatusCode, code_2_status

T = TypeVar("T")


def load() -> Any:
    """Returns ``kvdist._kvdist``; ``LLMException(LLM_FAILED)`` if it cannot be imported."""
    try:
        from kvdist import _kvdist
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LLMException(
            f"kvdist native module (kvdist._kvdist) is not available: {exc}",
            status_code=LLMStatusCode.LLM_FAILED,
        ) from exc
    return _kvdist


def call(func_name: str, info: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls ``func``; a ``KvdistError`` becomes ``LLMException`` in the original's format.

    ``"{func_name} failed, error code is {LLMStatusCode.X}, {info}."`` where
    ``info`` is the caller's context followed by kvdist's message.
    """
    native = load()
    try:
        return func(*args, **kwargs)
    except native.KvdistError as exc:
        status = code_2_status(int(getattr(exc, "code", LLMStatusCode.LLM_FAILED)))
        message = str(getattr(exc, "message", "") or exc).rstrip(".")
        detail = f"{info}, {message}" if info else message
        raise LLMException(
            f"{func_name} failed, error code is {status}, {detail}.", status_code=status
        ) from None


def key_tuple(key: CacheKey | CacheKeyByIdAndIndex | BlocksCacheKey) -> tuple[int, ...]:
    """The native binding's (kind, cluster, req_id, prefix_id, model_id, cache_id, batch)."""
    if isinstance(key, CacheKeyByIdAndIndex):
        return (1, key.cluster_id, INVALID_ID, INVALID_ID, 0, key.cache_id, key.batch_index)
    if isinstance(key, BlocksCacheKey):
        return (2, key.cluster_id, INVALID_ID, INVALID_ID, key.model_id, -1, 0)
    return (0, key.cluster_id, key.req_id, key.prefix_id, key.model_id, -1, 0)


def cache_tuple(cache: KvCache | Cache) -> tuple[Any, ...]:
    """The native binding's (cache_id, addrs, num_tensors, shape, dtype, placement)."""
    desc = cache.cache_desc
    if isinstance(cache, Cache):
        addrs = cache.tensor_addrs
    else:
        addrs = cache.per_device_tensor_addrs[0] if cache.per_device_tensor_addrs else []
    return (
        cache.cache_id,
        list(addrs),
        desc.num_tensors,
        list(desc.shape),
        desc.data_type.value,
        int(desc.placement),
    )


def layers(layers: range | None) -> tuple[int, int] | None:
    """A layer range as (start, stop); None or empty: every tensor (as the original)."""
    if layers is None or len(layers) == 0:
        return None
    return (layers.start, layers.stop)


def copy_cache(
    native: Any,
    dst: KvCache | Cache,
    src: KvCache | Cache,
    dst_batch_index: int,
    src_batch_index: int,
    offset: int,
    size: int,
    req_id: int | None,
) -> None:
    """copy_cache of either manager, its arguments checked."""
    call(
        "[copy_cache]",
        f"dst = {dst.cache_id}, src = {src.cache_id}, req_id = {req_id}",
        native.copy_cache,
        cache_tuple(dst),
        cache_tuple(src),
        dst_batch_index,
        src_batch_index,
        offset,
        size,
    )


def copy_blocks(native: Any, cache: KvCache | Cache, pairs: list[tuple[int, int]]) -> None:
    """copy_blocks of either manager, its (src, dst) pairs checked."""
    call(
        "[copy_blocks]",
        f"cache id is:{cache.cache_id}",
        native.copy_blocks,
        cache_tuple(cache),
        pairs,
    )


def swap_blocks(
    native: Any, src: KvCache | Cache, dst: KvCache | Cache, src_to_dst: dict[int, int]
) -> None:
    """swap_blocks of either manager, its arguments checked."""
    call(
        "[swap_blocks]",
        "swap blocks failed",
        native.swap_blocks,
        cache_tuple(src),
        cache_tuple(dst),
        list(src_to_dst.items()),
    )
