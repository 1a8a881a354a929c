"""``KvCacheManager``: caches and the layer-wise push in KvCacheManager mode.

Reference §9 and §10. The Python-level checks of ``transfer_cache_async``
run in the original's order with its exception classes before kvdist's
native engine (which validates again, with kvdist's own checks) is called.
"""

from __future__ import annotations

import threading
from typing import Any

from llm_datadist import _native, _transfer
from llm_datadist import _op_checks as _ops
from llm_datadist._checks import (
    check_dict,
    check_int32,
    check_int64,
    check_isinstance,
    check_list_uint64,
    check_uint32,
    check_uint64,
)
from llm_datadist.configs import LLMRole
from llm_datadist.llm_types import (
    BlocksCacheKey,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    CacheTask,
    KvCache,
    LayerSynchronizer,
    Placement,
    Tensor,
    TensorDesc,
    TransferConfig,
)
from llm_datadist.status import (
    LLMStatusCode,
    raise_if_false,
    raise_if_true,
)

__all__ = ["KvCacheManager"]

_NUM_TENSORS_PER_LAYER = 2


def _check_block_indices(arg_name: str, arg_value: Any) -> None:
    if arg_value is not None:
        check_isinstance(arg_name, arg_value, [list, tuple], int)
        check_list_uint64(arg_name, arg_value)


class KvCacheManager:
    """Allocates caches and pushes them layer by layer (KvCacheManager mode).

    Obtained from ``LLMDataDist.kv_cache_manager`` after ``init``.
    """

    def __init__(self, native_datadist: Any, role: LLMRole) -> None:
        self._native = native_datadist
        self._role = role
        self._initialized = True
        self._pull_lock = threading.Lock()

    def is_initialized(self) -> bool:
        """False once the owning ``LLMDataDist`` was finalised."""
        return self._initialized

    def _check_is_inited(self) -> None:
        raise_if_false(
            self._initialized,
            "KvCacheManager is no longer initialized; "
            "obtain a new instance after LLMDataDist.init.",
            status_code=LLMStatusCode.LLM_ENGINE_FINALIZED,
        )

    def _check_role(self, func_name: str, role: LLMRole) -> None:
        raise_if_false(self._role == role, "{0} is not supported by {1}", func_name, self._role)

    def _switch_role(self, role: LLMRole) -> None:
        self._role = role

    # -- allocation --------------------------------------------------------

    def _allocate(
        self, func_name: str, cache_desc: CacheDesc, blocks: bool, keys: list[Any]
    ) -> KvCache:
        raise_if_false(cache_desc.num_tensors > 0, "num_tensors should be bigger than zero.")
        raise_if_false(
            cache_desc.placement == Placement.DEVICE, "Only support allocate device cache."
        )
        cache_id, addrs = _native.call(
            func_name,
            f"cache_desc = {cache_desc}",
            self._native.allocate,
            cache_desc.num_tensors,
            list(cache_desc.shape),
            cache_desc.data_type.value,
            int(cache_desc.placement),
            cache_desc.batch_dim,
            cache_desc.seq_len_dim_index,
            blocks,
            [_native.key_tuple(key) for key in keys],
        )
        cache = KvCache(cache_id, cache_desc, [list(addrs)], self)
        cache._is_blocks = blocks
        return cache

    def allocate_cache(
        self, cache_desc: CacheDesc, cache_keys: list[CacheKey] | tuple[CacheKey, ...] = ()
    ) -> KvCache:
        """Allocates a contiguous cache (``Placement.DEVICE``: process memory on CPU hosts).

        ``cache_keys`` (PROMPT only): key i names batch i for DECODERs'
        ``pull_cache`` (a key with ``req_id=2**64-1`` skips its batch). A
        freed cache lives on until each key was pulled or removed.
        """
        self._check_is_inited()
        check_isinstance("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_isinstance("cache_keys", cache_keys, [list, tuple], CacheKey)
        raise_if_true(
            bool(cache_keys) and self._role != LLMRole.PROMPT,
            "cache_keys is only supported by LLMRole.PROMPT, current role is {0}",
            self._role,
        )
        return self._allocate("[allocate_cache]", cache_desc, False, list(cache_keys))

    def allocate_blocks_cache(
        self, cache_desc: CacheDesc, blocks_cache_key: BlocksCacheKey | None = None
    ) -> KvCache:
        """Allocates a blocks (PA) cache: ``shape[0]`` is the number of blocks."""
        self._check_is_inited()
        check_isinstance("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_isinstance("blocks_cache_key", blocks_cache_key, BlocksCacheKey)
        raise_if_true(
            blocks_cache_key is not None and self._role != LLMRole.PROMPT,
            "blocks_cache_key is only supported by LLMRole.PROMPT, current role is {0}",
            self._role,
        )
        keys = [blocks_cache_key] if blocks_cache_key is not None else []
        return self._allocate("[allocate_blocks_cache]", cache_desc, True, keys)

    def deallocate_cache(self, cache: KvCache) -> None:
        """Frees a cache; a no-op if already freed.

        Returns at once; memory an unfinished transfer still reads or writes
        goes back to the pool only when no write into it can still land.
        """
        self._check_is_inited()
        check_isinstance("cache", cache, KvCache, allow_none=False)
        raise_if_true(cache.cache_desc.placement == Placement.HOST, "Only support device cache.")
        if not cache._valid:
            return
        _native.call(
            "[deallocate_cache]",
            f"cache_id = {cache.cache_id}",
            self._native.deallocate,
            cache.cache_id,
        )
        cache._valid = False
        cache._per_device_tensor_addrs = []  # as the original: the addresses are gone

    # -- layer-wise push ---------------------------------------------------

    def transfer_cache_async(
        self,
        src_cache: KvCache,
        layer_synchronizer: LayerSynchronizer,
        transfer_configs: list[TransferConfig] | tuple[TransferConfig, ...],
        src_block_indices: list[int] | tuple[int, ...] | None = None,
        dst_block_indices: list[int] | tuple[int, ...] | None = None,
        dst_block_memory_size: int | None = None,
    ) -> CacheTask:
        """Pushes ``src_cache`` layer by layer to the configs' destinations (PROMPT only).

        ``layer_synchronizer.synchronize_layer(layer, None)`` is called once
        per transferred layer, in ascending order, from a kvdist worker
        thread. Returns a ``CacheTask`` at once.
        """
        self._check_is_inited()
        # 1. role, 2. source cache
        self._check_role("transfer_cache_async", LLMRole.PROMPT)
        check_isinstance("src_cache", src_cache, KvCache, allow_none=False)
        # 3. block index lists, 4. destination block size
        _transfer.check_block_lists(src_block_indices, dst_block_indices, dst_block_memory_size)
        # 5. block combinations
        if src_block_indices:
            _transfer.check_src_blocks(src_block_indices, dst_block_indices)
        else:
            raise_if_true(
                dst_block_indices is not None, "transfer from cache to blocks is not supported"
            )
        # 6. synchronizer, 7. configs, 8. block size use, 9. layers
        num_layers = _transfer.check_synchronizer_and_configs(
            layer_synchronizer,
            transfer_configs,
            TransferConfig,
            dst_block_indices,
            dst_block_memory_size,
            src_cache.cache_desc,
        )
        # 10. per config
        configs = _transfer.native_configs(transfer_configs, num_layers, src_block_indices)
        addrs = src_cache.per_device_tensor_addrs[0] if src_cache.per_device_tensor_addrs else []
        return _transfer.start(
            self._native,
            src_cache.cache_id,
            src_cache.cache_desc,
            addrs,
            layer_synchronizer,
            configs,
            (src_block_indices, dst_block_indices, dst_block_memory_size),
            exclusive=True,
            timeout_code=LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT,
        )

    # -- pulls and keys (DECODER pulls what a PROMPT keeps under keys) ------

    def remove_cache_key(self, cache_key: CacheKey) -> None:
        """Unbinds a key (PROMPT only); an unknown key is no error (as the original).

        A cache freed with ``deallocate_cache`` goes back to the pool once
        none of its keys is left.
        """
        self._check_is_inited()
        self._check_role("[remove_cache_key]", LLMRole.PROMPT)
        check_isinstance("cache_key", cache_key, CacheKey)
        _native.call(
            "[remove_cache_key]",
            f"cache_key = {cache_key}",
            self._native.remove_key,
            _native.key_tuple(cache_key),
        )

    def pull_cache(
        self,
        cache_key: CacheKey | CacheKeyByIdAndIndex,
        kv_cache: KvCache,
        batch_index: int = 0,
        size: int = -1,
        **kwargs: Any,
    ) -> None:
        """Reads a PROMPT's cache named by ``cache_key`` into ``kv_cache`` (DECODER only).

        ``batch_index`` is the batch of ``kv_cache`` it lands in; ``size``
        is bytes per tensor (-1: the batch slice less ``dst_cache_offset``).
        Keyword arguments as the original: ``src_layer_range``,
        ``dst_layer_range``, ``src_cache_offset``, ``dst_cache_offset``,
        ``tensor_num_per_layer``. Returns once every byte is in, or raises
        (``LLM_WAIT_PROCESS_TIMEOUT`` after ``llm.SyncKvCacheWaitTime``).
        A request key is used up by a successful pull without offsets.
        """
        self._check_is_inited()
        tensor_num_per_layer = kwargs.get("tensor_num_per_layer", _NUM_TENSORS_PER_LAYER)
        src_layer_range = kwargs.get("src_layer_range")
        dst_layer_range = kwargs.get("dst_layer_range")
        self._check_role("[pull_cache]", LLMRole.DECODER)
        check_isinstance("cache_key", cache_key, [CacheKey, CacheKeyByIdAndIndex])
        check_isinstance("kv_cache", kv_cache, KvCache, allow_none=False)
        raise_if_true(_ops.is_cpu_cache(kv_cache), "Only support device cache")
        check_int64("size", size)
        check_uint32("batch_index", batch_index)
        raise_if_false(
            size == -1 or size > 0,
            "[pull_cache] param check failed, size ({0}) is invalid, should be = -1 or > 0",
            size,
        )
        src_offset = _ops.offset_or_default("src_cache_offset", kwargs.get("src_cache_offset"))
        dst_offset = _ops.offset_or_default("dst_cache_offset", kwargs.get("dst_cache_offset"))
        if isinstance(cache_key, CacheKey):
            _ops.check_key_ids(cache_key)
        _ops.check_tensor_num_per_layer("pull_cache", tensor_num_per_layer, kv_cache)
        _ops.check_layer_ranges(src_layer_range, dst_layer_range)
        with self._pull_lock:  # one pull at a time, as the original's host
            _native.call(
                "[pull_cache]",
                f"cache_key = {cache_key}",
                self._native.pull,
                _native.key_tuple(cache_key),
                _native.cache_tuple(kv_cache),
                batch_index=batch_index,
                size=size,
                src_offset=None if src_offset < 0 else src_offset,
                dst_offset=None if dst_offset < 0 else dst_offset,
                src_layers=_native.layers(src_layer_range),
                dst_layers=_native.layers(dst_layer_range),
                tensors_per_layer=tensor_num_per_layer,
            )

    def pull_blocks(
        self,
        prompt_cache_key: BlocksCacheKey,
        decoder_kv_cache: KvCache,
        prompt_blocks: list[int],
        decoder_blocks: list[int],
        **kwargs: Any,
    ) -> None:
        """Reads PROMPT blocks ``prompt_blocks[i]`` into ``decoder_blocks[i]`` (DECODER only).

        Both caches' blocks must be of one size. Keyword arguments:
        ``src_layer_range``, ``dst_layer_range``, ``tensor_num_per_layer``.
        """
        self._check_is_inited()
        tensor_num_per_layer = kwargs.get("tensor_num_per_layer", _NUM_TENSORS_PER_LAYER)
        src_layer_range = kwargs.get("src_layer_range")
        dst_layer_range = kwargs.get("dst_layer_range")
        self._check_role("[pull_blocks]", LLMRole.DECODER)
        check_isinstance("prompt_cache_key", prompt_cache_key, BlocksCacheKey)
        check_isinstance("decoder_kv_cache", decoder_kv_cache, KvCache, allow_none=False)
        check_isinstance("prompt_blocks", prompt_blocks, list, int, allow_none=False)
        check_isinstance("decoder_blocks", decoder_blocks, list, int, allow_none=False)
        raise_if_true(_ops.is_cpu_cache(decoder_kv_cache), "Only support device cache")
        raise_if_false(len(prompt_blocks) > 0, "prompt_blocks can not be empty.")
        raise_if_false(len(decoder_blocks) > 0, "decoder_blocks can not be empty.")
        raise_if_false(
            len(prompt_blocks) == len(decoder_blocks),
            "Param prompt_blocks and decoder_blocks size should be same.",
        )
        _ops.check_tensor_num_per_layer("pull_blocks", tensor_num_per_layer, decoder_kv_cache)
        _ops.check_layer_ranges(src_layer_range, dst_layer_range)
        for name, blocks in (("prompt_blocks", prompt_blocks), ("decoder_blocks", decoder_blocks)):
            check_list_uint64(name, blocks)
        with self._pull_lock:
            _native.call(
                "[pull_blocks]",
                f"prompt_cache_key = {prompt_cache_key}",
                self._native.pull,
                _native.key_tuple(prompt_cache_key),
                _native.cache_tuple(decoder_kv_cache),
                src_layers=_native.layers(src_layer_range),
                dst_layers=_native.layers(dst_layer_range),
                tensors_per_layer=tensor_num_per_layer,
                src_blocks=list(prompt_blocks),
                dst_blocks=list(decoder_blocks),
            )

    # -- local operations ----------------------------------------------------

    def copy_cache(
        self,
        dst: KvCache,
        src: KvCache,
        dst_batch_index: int = 0,
        src_batch_index: int = 0,
        offset: int = 0,
        size: int = -1,
        req_id: int | None = None,
    ) -> None:
        """Copies ``size`` bytes (-1: the rest of the slice) at ``offset`` of one
        batch of every ``src`` tensor to the same offset of a batch of ``dst``.

        ``req_id`` is only logged (as the original).
        """
        self._check_is_inited()
        check_isinstance("dst", dst, KvCache, allow_none=False)
        raise_if_true(_ops.is_cpu_cache(dst), "Only support device cache")
        check_isinstance("src", src, KvCache, allow_none=False)
        raise_if_true(_ops.is_cpu_cache(src), "Only support device cache")
        check_uint32("dst_batch_index", dst_batch_index)
        check_uint32("src_batch_index", src_batch_index)
        check_uint64("offset", offset)
        check_int64("size", size)
        raise_if_false(
            size == -1 or size > 0,
            "[copy_cache] param check failed, size ({0}) is invalid, should be = -1 or > 0",
            size,
        )
        check_isinstance("req_id", req_id, int)
        _native.copy_cache(
            self._native, dst, src, dst_batch_index, src_batch_index, offset, size, req_id
        )

    def copy_blocks(self, cache: KvCache, copy_block_info: dict[int, list[int]]) -> None:
        """Copies block ``src`` to each block of ``copy_block_info[src]``, within ``cache``.

        Every pair is checked before anything is copied.
        """
        self._check_is_inited()
        check_isinstance("cache", cache, KvCache, allow_none=False)
        check_isinstance("copy_block_info", copy_block_info, dict, allow_none=False)
        check_dict("copy_block_info", copy_block_info, int, list)
        raise_if_true(_ops.is_cpu_cache(cache), "Only support device cache")
        pairs = []
        for src_block, dst_blocks in copy_block_info.items():
            check_uint64("src_block", src_block)
            for dst_block in dst_blocks:
                check_uint64("dst_block", dst_block)
                pairs.append((src_block, dst_block))
        _native.copy_blocks(self._native, cache, pairs)

    def swap_blocks(self, src: KvCache, dst: KvCache, src_to_dst: dict[int, int]) -> None:
        """Copies blocks between a HOST cache (``KvCache.create_cpu_cache``) and a
        DEVICE cache of this manager, either way."""
        self._check_is_inited()
        check_isinstance("src", src, KvCache, allow_none=False)
        check_isinstance("dst", dst, KvCache, allow_none=False)
        _ops.check_swap_caches(src, dst, src_to_dst)
        _native.swap_blocks(self._native, src, dst, src_to_dst)

    def get_cache_tensors(self, cache: KvCache, tensor_index: int = 0) -> list[Any]:
        """A copy of tensor ``tensor_index`` of ``cache``: one ``Tensor`` (one device)."""
        self._check_is_inited()
        check_isinstance("cache", cache, KvCache, allow_none=False)
        check_int32("tensor_index", tensor_index)
        raise_if_false(
            0 <= tensor_index < cache.cache_desc.num_tensors,
            "[get_cache_tensors] param check failed, tensor_index ({0}) out of range, [0, {1})",
            tensor_index,
            cache.cache_desc.num_tensors,
        )
        raw = _native.call(
            "[get_cache_tensors]",
            f"cache_id = {cache.cache_id}, tensor_index = {tensor_index}",
            self._native.read_tensor,
            _native.cache_tuple(cache),
            tensor_index,
        )
        import numpy as np

        from llm_datadist import data_type as dt

        desc = cache.cache_desc
        array = np.frombuffer(bytearray(raw), dtype=dt.dtype_to_np_dtype[desc.data_type])
        tensor_desc = TensorDesc(desc.data_type, list(desc.shape))
        return [Tensor(array.reshape(desc.shape), tensor_desc)]
