"""``CacheManager``: caches, pulls and pushes in CacheManager mode.

``llm.EnableCacheManager`` = "1" (``LLMConfig.enable_cache_manager``, or
``llm.LocalCommRes``). Either side may listen and link; once linked, either
side pulls from and pushes into the other's caches. Argument checks follow
the original (hicann/hixl ``v2/cache_manager.py``) in its order; kvdist's
engine runs the calls (see ``docs/design.md``, "Pulls and cache keys").
"""

from __future__ import annotations

import json
from typing import Any

from llm_datadist import _native, _transfer
from llm_datadist import _op_checks as _ops
from llm_datadist._checks import (
    check_dict,
    check_int64,
    check_isinstance,
    check_list_uint64,
    check_uint32,
    check_uint64,
)
from llm_datadist.llm_types import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    CacheTask,
    LayerSynchronizer,
    MemInfo,
    Memtype,
    Placement,
    TransferConfig,
    TransferWithCacheKeyConfig,
)
from llm_datadist.status import LLMException, LLMStatusCode, raise_if_false, raise_if_true

__all__ = ["CacheManager", "parse_mem_pool_config"]

_NUM_TENSORS_PER_LAYER = 2


def parse_mem_pool_config(name: str, value: str) -> int:
    """Bytes of a ``llm.MemPoolConfig`` / ``llm.HostMemPoolConfig`` value:
    JSON ``{"memory_size": n, "page_shift": s}`` (s in [10, 31), default 16)."""
    try:
        config = json.loads(value)
    except ValueError:
        config = None
    raise_if_false(isinstance(config, dict), "{0} is not a JSON object: {1}", name, value)
    size = config.get("memory_size")
    shift = config.get("page_shift", 16)
    raise_if_false(
        isinstance(size, int) and not isinstance(size, bool) and size > 0,
        "{0}: memory_size must be a positive integer, got {1}",
        name,
        size,
    )
    raise_if_false(
        isinstance(shift, int) and 10 <= shift < 31,
        "{0}: page_shift must be in [10, 31), got {1}",
        name,
        shift,
    )
    raise_if_false((size >> shift) < 2**32 - 1, "{0}: memory_size >> page_shift is too large", name)
    return int(size)


def _check_range(name: str, layers: Any) -> None:
    """None, or a ``range`` of step 1 with 0 <= start < stop."""
    check_isinstance(name, layers, range)
    if layers is None:
        return
    raise_if_false(
        layers.step == 1 and 0 <= layers.start < layers.stop,
        "{0} should be a range of step 1 with 0 <= start < stop, got {1}",
        name,
        layers,
    )


class CacheManager:
    """Caches and transfers of CacheManager mode (``LLMDataDist.cache_manager``)."""

    def __init__(self, native_datadist: Any, options: dict[str, str]) -> None:
        self._native = native_datadist
        self._initialized = True
        self._device_pool = len(options.get("llm.MemPoolConfig", "")) > 0
        self._host_pool = len(options.get("llm.HostMemPoolConfig", "")) > 0
        self._remote_access = options.get("llm.EnableRemoteCacheAccessible", "0") == "1"

    def is_initialized(self) -> bool:
        """False once the owning ``LLMDataDist`` was finalised."""
        return self._initialized

    def _check_is_inited(self) -> None:
        raise_if_false(
            self._initialized,
            "CacheManager is no longer initialized; obtain a new one after LLMDataDist.init.",
            status_code=LLMStatusCode.LLM_ENGINE_FINALIZED,
        )

    # -- allocation and registration ------------------------------------------

    def _check_pool(self, cache_desc: CacheDesc) -> None:
        raise_if_false(cache_desc.num_tensors > 0, "num_tensors should be bigger than zero.")
        raise_if_false(
            (self._device_pool and cache_desc.placement == Placement.DEVICE)
            or (self._host_pool and cache_desc.placement == Placement.HOST),
            "you should config memory pool firstly and then set placement that matches it.",
        )

    def _new_cache(
        self, func: str, cache_desc: CacheDesc, blocks: bool, keys: list[Any], addrs: Any = None
    ) -> Cache:
        desc = cache_desc
        if addrs is None:
            cache_id, out = _native.call(
                func,
                f"cache_desc = {desc}",
                self._native.allocate,
                desc.num_tensors,
                list(desc.shape),
                desc.data_type.value,
                int(desc.placement),
                desc.batch_dim,
                desc.seq_len_dim_index,
                blocks,
                [_native.key_tuple(k) for k in keys],
            )
        else:
            cache_id, out = _native.call(
                func,
                f"cache_desc = {desc}",
                self._native.register,
                desc.num_tensors,
                list(desc.shape),
                desc.data_type.value,
                list(addrs),
                blocks,
            )
            if keys:
                try:
                    _native.call(
                        func,
                        f"cache_keys = {keys}",
                        self._native.bind_keys,
                        cache_id,
                        [_native.key_tuple(k) for k in keys],
                    )
                except LLMException:
                    self._native.deallocate(cache_id)
                    raise
        return Cache(cache_id, desc, list(out), self, is_blocks_cache=blocks)

    def allocate_cache(
        self, cache_desc: CacheDesc, cache_keys: list[CacheKey] | tuple[CacheKey, ...] = ()
    ) -> Cache:
        """A cache from the memory pool of its placement; key i names batch i."""
        self._check_is_inited()
        check_isinstance("cache_desc", cache_desc, CacheDesc)
        check_isinstance("cache_keys", cache_keys, [list, tuple], CacheKey)
        self._check_pool(cache_desc)
        return self._new_cache("[allocate_cache]", cache_desc, False, list(cache_keys))

    def allocate_blocks_cache(
        self, cache_desc: CacheDesc, blocks_cache_key: BlocksCacheKey | None = None
    ) -> Cache:
        """A blocks cache (``shape[0]`` blocks) from the pool of its placement."""
        self._check_is_inited()
        check_isinstance("cache_desc", cache_desc, CacheDesc)
        check_isinstance("blocks_cache_key", blocks_cache_key, BlocksCacheKey)
        self._check_pool(cache_desc)
        keys = [blocks_cache_key] if blocks_cache_key is not None else []
        return self._new_cache("[allocate_blocks_cache]", cache_desc, True, keys)

    def _register(
        self,
        func: str,
        cache_desc: CacheDesc,
        addrs: list[int],
        keys: list[Any],
        remote_accessible: bool | None,
        blocks: bool,
    ) -> Cache:
        check_isinstance("cache_desc", cache_desc, CacheDesc)
        check_isinstance("addrs", addrs, list, int)
        check_isinstance("remote_accessible", remote_accessible, bool)
        raise_if_false(addrs is not None and len(addrs) > 0, "addrs can not be empty.")
        if not blocks:
            raise_if_false(
                len(addrs) == cache_desc.num_tensors,
                "addrs num:{0} should be equal to num_tensors:{1}",
                len(addrs),
                cache_desc.num_tensors,
            )
        raise_if_true(any(addr == 0 for addr in addrs), "addrs can not contain 0.")
        # Every kvdist cache is reachable by linked peers (those that proved
        # the shared secret, where one is set): remote_accessible is checked
        # and recorded only.
        return self._new_cache(func, cache_desc, blocks, keys, addrs)

    def register_cache(
        self,
        cache_desc: CacheDesc,
        addrs: list[int],
        cache_keys: list[CacheKey] | tuple[CacheKey, ...] = (),
        remote_accessible: bool | None = None,
    ) -> Cache:
        """A cache over caller-owned memory (one address per tensor)."""
        self._check_is_inited()
        check_isinstance("cache_keys", cache_keys, [list, tuple], CacheKey)
        return self._register(
            "[register_cache]", cache_desc, addrs, list(cache_keys or ()), remote_accessible, False
        )

    def register_blocks_cache(
        self,
        cache_desc: CacheDesc,
        addrs: list[int],
        blocks_cache_key: BlocksCacheKey | None = None,
        remote_accessible: bool | None = None,
    ) -> Cache:
        """A blocks cache over caller-owned memory."""
        self._check_is_inited()
        check_isinstance("blocks_cache_key", blocks_cache_key, BlocksCacheKey)
        keys = [blocks_cache_key] if blocks_cache_key is not None else []
        return self._register(
            "[register_blocks_cache]", cache_desc, addrs, keys, remote_accessible, True
        )

    def unregister_cache(self, cache_id: int) -> None:
        """Forgets a registered cache and its keys; an unknown id is no error."""
        self._check_is_inited()
        check_isinstance("cache_id", cache_id, int, allow_none=False)
        check_int64("cache_id", cache_id)
        _native.call(
            "[unregister_cache]", f"cache_id = {cache_id}", self._native.deallocate, cache_id
        )

    def _deallocate(self, func: str, cache: Cache) -> None:
        _native.call(func, f"cache_id = {cache.cache_id}", self._native.deallocate, cache.cache_id)
        cache._tensor_addrs = []

    def deallocate_cache(self, cache: Cache) -> None:
        """Frees a cache (later, while keys still hold it or transfers use it)."""
        self._check_is_inited()
        check_isinstance("cache", cache, Cache, allow_none=False)
        raise_if_true(cache.is_blocks_cache, "cache can not be blocks cache")
        self._deallocate("[deallocate_cache]", cache)

    def deallocate_blocks_cache(self, cache: Cache) -> None:
        """Frees a blocks cache; its blocks key goes at once."""
        self._check_is_inited()
        check_isinstance("cache", cache, Cache, allow_none=False)
        raise_if_false(cache.is_blocks_cache, "cache should be blocks cache")
        self._deallocate("[deallocate_blocks_cache]", cache)

    def remove_cache_key(self, cache_key: CacheKey) -> None:
        """Unbinds a key; an unknown key is no error."""
        self._check_is_inited()
        check_isinstance("cache_key", cache_key, CacheKey)
        _native.call(
            "[remove_cache_key]",
            f"cache_key = {cache_key}",
            self._native.remove_key,
            _native.key_tuple(cache_key),
        )

    def remap_registered_memory(self, mem_infos: MemInfo | list[MemInfo]) -> None:
        """Checks ``mem_infos`` as the original; nothing to remap on a CPU host.

        The original re-registers device memory after a hardware memory error
        (UCE); process memory registered with UCX stays valid.
        """
        self._check_is_inited()
        raise_if_false(
            isinstance(mem_infos, (list, MemInfo)), "mem_infos should be a MemInfo or a list"
        )
        infos = mem_infos if isinstance(mem_infos, list) else [mem_infos]
        for info in infos:
            raise_if_false(isinstance(info, MemInfo), "mem_infos should only contain MemInfo")
            raise_if_false(info.mem_type == Memtype.MEM_TYPE_DEVICE, "mem_type should be DEVICE")
            raise_if_false(info.addr != 0, "addr can not be 0")
            raise_if_false(info.size > 0, "size should be bigger than 0")

    # -- pulls and pushes -----------------------------------------------------

    def pull_cache(
        self,
        cache_key: CacheKey | CacheKeyByIdAndIndex,
        cache: Cache,
        batch_index: int = 0,
        size: int = -1,
        **kwargs: Any,
    ) -> None:
        """Reads the peer's cache named by ``cache_key`` into batch ``batch_index`` of ``cache``."""
        self._check_is_inited()
        src_layer_range = kwargs.get("src_layer_range")
        dst_layer_range = kwargs.get("dst_layer_range")
        tensor_num_per_layer = kwargs.get("tensor_num_per_layer", _NUM_TENSORS_PER_LAYER)
        key_types: list[type] = (
            [CacheKeyByIdAndIndex] if self._remote_access else [CacheKey, CacheKeyByIdAndIndex]
        )
        check_isinstance("cache_key", cache_key, key_types, allow_none=False)
        check_isinstance("cache", cache, Cache, allow_none=False)
        check_uint32("batch_index", batch_index)
        check_int64("size", size)
        raise_if_true(cache.is_blocks_cache, "cache can not be blocks cache")
        raise_if_false(size == -1 or size > 0, "size ({0}) should be -1 or > 0", size)
        self._check_per_layer(tensor_num_per_layer)
        if isinstance(cache_key, CacheKey):
            _ops.check_key_ids(cache_key)
        _ops.check_layer_ranges(src_layer_range, dst_layer_range)
        _native.call(
            "[pull_cache]",
            f"cache_key = {cache_key}",
            self._native.pull,
            _native.key_tuple(cache_key),
            _native.cache_tuple(cache),
            batch_index=batch_index,
            size=size,
            src_layers=_native.layers(src_layer_range),
            dst_layers=_native.layers(dst_layer_range),
            tensors_per_layer=tensor_num_per_layer,
            keep_keys=self._remote_access,  # a read of the peer's cache, as the original's GET
        )

    def pull_blocks(
        self,
        src_cache_key: CacheKey | CacheKeyByIdAndIndex | BlocksCacheKey,
        dst_cache: Cache,
        src_blocks: list[int] | tuple[int, ...] | None = (),
        dst_blocks: list[int] | tuple[int, ...] = (),
        **kwargs: Any,
    ) -> None:
        """Reads source blocks ``src_blocks[i]`` into ``dst_blocks[i]`` of ``dst_cache``."""
        self._check_is_inited()
        src_layer_range = kwargs.get("src_layer_range")
        dst_layer_range = kwargs.get("dst_layer_range")
        tensor_num_per_layer = kwargs.get("tensor_num_per_layer", _NUM_TENSORS_PER_LAYER)
        check_isinstance(
            "src_cache_key", src_cache_key, [CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey]
        )
        check_isinstance("dst_cache", dst_cache, Cache)
        check_isinstance("src_blocks", src_blocks, [list, tuple], int)
        check_isinstance("dst_blocks", dst_blocks, [list, tuple], int)
        raise_if_false(dst_cache.is_blocks_cache, "dst_cache should be blocks cache")
        raise_if_false(len(dst_blocks) > 0, "dst_blocks can not be empty.")
        self._check_per_layer(tensor_num_per_layer)
        if isinstance(src_cache_key, BlocksCacheKey):
            raise_if_false(len(src_blocks or ()) > 0, "src_blocks can not be empty.")
        else:
            if isinstance(src_cache_key, CacheKey):
                _ops.check_key_ids(src_cache_key)
            raise_if_false(
                len(src_blocks or ()) > 0,
                "kvdist reads blocks of a cache by their indices: give src_blocks",
            )
        raise_if_false(
            len(src_blocks or ()) == len(dst_blocks),
            "src_blocks num:{0} should be equal to dst_blocks num:{1}",
            len(src_blocks or ()),
            len(dst_blocks),
        )
        check_list_uint64("src_blocks", list(src_blocks or ()))
        check_list_uint64("dst_blocks", list(dst_blocks))
        _ops.check_layer_ranges(src_layer_range, dst_layer_range)
        _native.call(
            "[pull_blocks]",
            f"src_cache_key = {src_cache_key}",
            self._native.pull,
            _native.key_tuple(src_cache_key),
            _native.cache_tuple(dst_cache),
            src_layers=_native.layers(src_layer_range),
            dst_layers=_native.layers(dst_layer_range),
            tensors_per_layer=tensor_num_per_layer,
            src_blocks=list(src_blocks or ()),
            dst_blocks=list(dst_blocks),
            keep_keys=True,
        )

    def _check_per_layer(self, tensor_num_per_layer: Any) -> None:
        check_uint32("tensor_num_per_layer", tensor_num_per_layer)
        raise_if_false(
            tensor_num_per_layer > 0,
            "tensor_num_per_layer ({0}) should be > 0",
            tensor_num_per_layer,
        )

    def _push_ranges(
        self, src: Cache, n: int, src_layer_range: Any, dst_layer_range: Any
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        _check_range("src_layer_range", src_layer_range)
        _check_range("dst_layer_range", dst_layer_range)
        layers = src.cache_desc.num_tensors // n
        src_range = src_layer_range if src_layer_range is not None else range(0, layers)
        dst_range = dst_layer_range if dst_layer_range is not None else range(0, layers)
        raise_if_false(
            len(src_range) == len(dst_range),
            "src_layer_range size should be equal to dst_layer_range size",
        )
        return (src_range.start, src_range.stop), (dst_range.start, dst_range.stop)

    def push_cache(
        self,
        dst_cache_key: CacheKeyByIdAndIndex,
        src_cache: Cache,
        src_batch_index: int = 0,
        src_layer_range: range | None = None,
        dst_layer_range: range | None = None,
        size: int = -1,
        tensor_num_per_layer: int = _NUM_TENSORS_PER_LAYER,
    ) -> None:
        """Writes a batch of ``src_cache`` into the peer's cache (cache id, batch)."""
        self._check_is_inited()
        raise_if_false(
            self._remote_access,
            "push_cache is only supported while enable_remote_cache_accessible is True",
        )
        check_isinstance("dst_cache_key", dst_cache_key, CacheKeyByIdAndIndex, allow_none=False)
        check_isinstance("src_cache", src_cache, Cache, allow_none=False)
        check_uint32("src_batch_index", src_batch_index)
        raise_if_true(src_cache.is_blocks_cache, "src_cache can not be blocks cache")
        self._check_per_layer(tensor_num_per_layer)
        src_range, dst_range = self._push_ranges(
            src_cache, tensor_num_per_layer, src_layer_range, dst_layer_range
        )
        check_int64("size", size)
        raise_if_false(size == -1, "size ({0}) only supports -1", size)
        _native.call(
            "[push_cache]",
            f"dst_cache_key = {dst_cache_key}",
            self._native.push,
            _native.cache_tuple(src_cache),
            _native.key_tuple(dst_cache_key),
            src_batch_index=src_batch_index,
            src_layers=src_range,
            dst_layers=dst_range,
            tensors_per_layer=tensor_num_per_layer,
        )

    def push_blocks(
        self,
        dst_cache_key: BlocksCacheKey,
        src_cache: Cache,
        src_blocks: list[int] | tuple[int, ...] | None = (),
        dst_blocks: list[int] | tuple[int, ...] = (),
        src_layer_range: range | None = None,
        dst_layer_range: range | None = None,
        tensor_num_per_layer: int = _NUM_TENSORS_PER_LAYER,
    ) -> None:
        """Writes blocks ``src_blocks[i]`` into blocks ``dst_blocks[i]`` of the
        peer's blocks cache named by ``dst_cache_key``."""
        self._check_is_inited()
        raise_if_false(
            self._remote_access,
            "push_blocks is only supported while enable_remote_cache_accessible is True",
        )
        check_isinstance("dst_cache_key", dst_cache_key, BlocksCacheKey)
        check_isinstance("src_cache", src_cache, Cache)
        check_isinstance("src_blocks", src_blocks, [list, tuple], int)
        check_isinstance("dst_blocks", dst_blocks, [list, tuple], int)
        raise_if_false(
            src_cache is not None and src_cache.is_blocks_cache, "src_cache should be blocks cache"
        )
        raise_if_false(len(dst_blocks) > 0, "dst_blocks can not be empty.")
        self._check_per_layer(tensor_num_per_layer)
        src_range, dst_range = self._push_ranges(
            src_cache, tensor_num_per_layer, src_layer_range, dst_layer_range
        )
        raise_if_false(
            len(src_blocks or ()) == len(dst_blocks),
            "src_blocks num:{0} should be equal to dst_blocks num:{1}",
            len(src_blocks or ()),
            len(dst_blocks),
        )
        _native.call(
            "[push_blocks]",
            f"dst_cache_key = {dst_cache_key}",
            self._native.push,
            _native.cache_tuple(src_cache),
            _native.key_tuple(dst_cache_key),
            src_layers=src_range,
            dst_layers=dst_range,
            tensors_per_layer=tensor_num_per_layer,
            src_blocks=list(src_blocks or ()),
            dst_blocks=list(dst_blocks),
        )

    def transfer_cache_async(
        self,
        src_cache: Cache,
        layer_synchronizer: LayerSynchronizer,
        transfer_configs: list[Any] | tuple[Any, ...],
        src_block_indices: list[int] | tuple[int, ...] | None = None,
        dst_block_indices: list[int] | tuple[int, ...] | None = None,
        dst_block_memory_size: int | None = None,
    ) -> CacheTask:
        """Pushes ``src_cache`` layer by layer; with remote cache access the
        configs are ``TransferWithCacheKeyConfig`` (destinations named by key)."""
        self._check_is_inited()
        check_isinstance("src_cache", src_cache, Cache, allow_none=False)
        raise_if_true(
            src_cache.cache_desc.placement == Placement.HOST,
            "src cache not support placement HOST",
        )
        _transfer.check_block_lists(src_block_indices, dst_block_indices, dst_block_memory_size)
        if src_block_indices:
            _transfer.check_src_blocks(src_block_indices, dst_block_indices)
        elif dst_block_indices:
            raise_if_false(
                dst_block_memory_size, "dst_block_memory_size is required for cache to blocks"
            )
        config_type = TransferWithCacheKeyConfig if self._remote_access else TransferConfig
        num_layers = _transfer.check_synchronizer_and_configs(
            layer_synchronizer,
            transfer_configs,
            config_type,
            dst_block_indices,
            dst_block_memory_size,
            src_cache.cache_desc,
        )
        configs = _transfer.native_configs(transfer_configs, num_layers, src_block_indices)
        return _transfer.start(
            self._native,
            src_cache.cache_id,
            src_cache.cache_desc,
            src_cache.tensor_addrs,
            layer_synchronizer,
            configs,
            (src_block_indices, dst_block_indices, dst_block_memory_size),
            exclusive=False,
            timeout_code=LLMStatusCode.LLM_TIMEOUT,
        )

    # -- local operations -------------------------------------------------------

    def copy_cache(
        self,
        dst: Cache,
        src: Cache,
        dst_batch_index: int = 0,
        src_batch_index: int = 0,
        offset: int = 0,
        size: int = -1,
        req_id: int | None = None,
    ) -> None:
        """Copies ``size`` bytes at ``offset`` of one batch of every tensor."""
        self._check_is_inited()
        check_isinstance("dst", dst, Cache, allow_none=False)
        check_isinstance("src", src, Cache, allow_none=False)
        check_uint32("dst_batch_index", dst_batch_index)
        check_uint32("src_batch_index", src_batch_index)
        check_uint64("offset", offset)
        check_int64("size", size)
        raise_if_true(
            dst.is_blocks_cache or src.is_blocks_cache, "copy_cache does not take blocks caches"
        )
        raise_if_false(size == -1 or size > 0, "size ({0}) should be -1 or > 0", size)
        if req_id is not None:
            check_uint64("req_id", req_id)
        _native.copy_cache(
            self._native, dst, src, dst_batch_index, src_batch_index, offset, size, req_id
        )

    def copy_blocks(self, cache: Cache, copy_block_info: dict[int, list[int]]) -> None:
        """Copies block ``src`` to each block of ``copy_block_info[src]`` in ``cache``."""
        self._check_is_inited()
        check_isinstance("cache", cache, Cache, allow_none=False)
        check_isinstance("copy_block_info", copy_block_info, dict, allow_none=False)
        check_dict("copy_block_info", copy_block_info, int, list)
        raise_if_false(cache.is_blocks_cache, "cache should be blocks cache")
        pairs = [(s, d) for s, dsts in copy_block_info.items() for d in dsts]
        for s, d in pairs:
            check_uint64("src_block", s)
            check_uint64("dst_block", d)
        _native.copy_blocks(self._native, cache, pairs)

    def swap_blocks(self, src_cache: Cache, dst_cache: Cache, src_to_dst: dict[int, int]) -> None:
        """Copies blocks between a HOST cache and a DEVICE blocks cache, either way."""
        self._check_is_inited()
        check_isinstance("src_cache", src_cache, Cache, allow_none=False)
        check_isinstance("dst_cache", dst_cache, Cache, allow_none=False)
        raise_if_false(
            src_cache.is_blocks_cache and dst_cache.is_blocks_cache,
            "src_cache and dst_cache should be blocks caches",
        )
        _ops.check_swap_caches(src_cache, dst_cache, src_to_dst, Cache)
        _native.swap_blocks(self._native, src_cache, dst_cache, src_to_dst)
