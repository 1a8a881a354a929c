"""Argument checks of the KvCacheManager operations (pull, copy, swap, cache
tensors): the original's checks in the original's order, so a call fails
with the same exception and code as there before kvdist runs it."""

from __future__ import annotations

from typing import Any

from llm_datadist._checks import check_int64, check_isinstance, check_uint32
from llm_datadist.llm_types import INVALID_ID, CacheKey, KvCache, Placement
from llm_datadist.status import raise_if_false, raise_if_true


def is_cpu_cache(cache: KvCache) -> bool:
    """A cache over host memory the caller owns (``create_cpu_cache``)."""
    return cache.cache_desc.placement == Placement.HOST


def offset_or_default(name: str, value: Any, default: int = -1) -> int:
    """An optional offset: None -> default; otherwise an int64 >= 0."""
    if value is None:
        return default
    check_int64(name, value)
    if value < 0:
        raise ValueError(f"{name}'s value:{value} is invalid, should be >= 0")
    return value


def check_key_ids(key: CacheKey) -> None:
    """Exactly one of req_id and prefix_id names something."""
    req_valid = key.req_id != INVALID_ID
    prefix_valid = key.prefix_id != INVALID_ID
    raise_if_true(
        not req_valid and not prefix_valid,
        "one of req id and prefix id should contain valid value:[0, 2**64-1), "
        "req id:{0},prefix id{1}.",
        key.req_id,
        key.prefix_id,
    )
    raise_if_true(
        req_valid and prefix_valid,
        "only one of req id and prefix id should contain valid value:[0, 2**64-1), "
        "req id:{0}, prefix id{1}.",
        key.req_id,
        key.prefix_id,
    )


def check_tensor_num_per_layer(func: str, value: Any, cache: KvCache) -> None:
    check_uint32("tensor_num_per_layer", value)
    raise_if_false(
        value > 0,
        "[{0}] param check failed, tensor_num_per_layer ({1}) is invalid, should [1, {2}]",
        func,
        value,
        cache.cache_desc.num_tensors,
    )


def check_layer_ranges(src: Any, dst: Any) -> None:
    """``range`` objects (or None) of step 1, first and last layer uint32."""
    check_isinstance("src_layer_range", src, range)
    check_isinstance("dst_layer_range", dst, range)
    for name, layers in (("src_layer_range", src), ("dst_layer_range", dst)):
        raise_if_true(
            layers is not None and layers.step != 1,
            "param check failed, {0} step must be 1.",
            name,
        )
    for name, layers in (("src_layer_range", src), ("dst_layer_range", dst)):
        if layers is None or len(layers) == 0:
            continue
        raise_if_true(layers[0] < 0, "{0} is invalid, the start value:{1} is < 0", name, layers[0])
        check_uint32(name, layers[0])
        check_uint32(name, layers[-1])


def check_swap_caches(src: Any, dst: Any, src_to_dst: Any, cache_type: type = KvCache) -> None:
    """Same block size and tensor count, block indices inside both, and one
    side on the host, the other not (caches of ``cache_type``: KvCache, or
    CacheManager mode's Cache)."""
    check_isinstance("src", src, cache_type)
    check_isinstance("dst", dst, cache_type)
    check_isinstance("src_to_dst", src_to_dst, dict, int)
    src_block = src.cache_desc.size // src.cache_desc.batch_size
    dst_block = dst.cache_desc.size // dst.cache_desc.batch_size
    raise_if_false(
        src_block == dst_block,
        "src block size:{0} and dst block size:{1} must be equal",
        src_block,
        dst_block,
    )
    raise_if_false(
        src.cache_desc.num_tensors == dst.cache_desc.num_tensors,
        "src num_tensors:{0} and dst num_tensors:{1} must be equal",
        src.cache_desc.num_tensors,
        dst.cache_desc.num_tensors,
    )
    for s, d in src_to_dst.items():
        raise_if_false(
            0 <= s < src.cache_desc.batch_size,
            "src_block_index:{0} must be in [0, {1})",
            s,
            src.cache_desc.batch_size,
        )
        raise_if_false(
            0 <= d < dst.cache_desc.batch_size,
            "dst_block_index:{0} must be in [0, {1})",
            d,
            dst.cache_desc.batch_size,
        )
    swap_in = is_cpu_cache(src) and not is_cpu_cache(dst)
    swap_out = not is_cpu_cache(src) and is_cpu_cache(dst)
    raise_if_false(
        swap_in or swap_out,
        "swap src placement:{0} to dst placement:{1} is not support",
        src.cache_desc.placement,
        dst.cache_desc.placement,
    )
