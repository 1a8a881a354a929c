"""The steps of ``transfer_cache_async`` that KvCacheManager and CacheManager
share: the block-list checks, the per-config checks (the original's order and
messages), and handing the task to kvdist's engine."""

from __future__ import annotations

from typing import Any

from llm_datadist import _native
from llm_datadist._checks import check_isinstance, check_list_uint64, check_uint64
from llm_datadist.llm_types import CacheDesc, CacheTask, LayerSynchronizer, TransferConfig
from llm_datadist.status import LLMStatusCode, raise_if_false

NUM_TENSORS_PER_LAYER = 2


def check_block_lists(
    src_block_indices: Any, dst_block_indices: Any, dst_block_memory_size: Any
) -> None:
    """Block index lists (dst first, as the original) and the block size."""
    for name, indices in (
        ("dst_block_indices", dst_block_indices),
        ("src_block_indices", src_block_indices),
    ):
        if indices is not None:
            check_isinstance(name, indices, [list, tuple], int)
            check_list_uint64(name, indices)
    if dst_block_memory_size is not None:
        check_uint64("dst_block_memory_size", dst_block_memory_size)


def check_src_blocks(src_block_indices: Any, dst_block_indices: Any) -> None:
    """Blocks to blocks only, pair by pair."""
    raise_if_false(dst_block_indices, "transfer from blocks to cache is not supported")
    raise_if_false(
        len(src_block_indices) == len(dst_block_indices),
        "num_block_indices mismatches, src_num = {0}, dst_num = {1}",
        len(src_block_indices),
        len(dst_block_indices),
    )


def check_synchronizer_and_configs(
    layer_synchronizer: Any,
    transfer_configs: Any,
    config_type: type,
    dst_block_indices: Any,
    dst_block_memory_size: Any,
    desc: CacheDesc,
) -> int:
    """Steps after the block checks; returns the source's layer count."""
    check_isinstance("layer_synchronizer", layer_synchronizer, LayerSynchronizer, allow_none=False)
    check_isinstance(
        "transfer_configs", transfer_configs, [list, tuple], config_type, allow_none=False
    )
    raise_if_false(
        dst_block_indices or dst_block_memory_size in (None, 0),
        "dst_block_memory_size ({0}) is neither None nor 0 while dst is not blocks",
        dst_block_memory_size,
    )
    raise_if_false(
        desc.num_tensors % NUM_TENSORS_PER_LAYER == 0,
        "cache_desc.num_tensors ({0}) is not even",
        desc.num_tensors,
    )
    return desc.num_tensors // NUM_TENSORS_PER_LAYER


def native_configs(
    transfer_configs: Any, num_layers: int, src_blocks: Any
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """Checks each config and returns the engine's configs, and per config the
    (key, destination layers) of one addressed by key (None otherwise).
    An empty ``src_layer_range`` of a ``TransferConfig`` becomes all layers."""
    out: list[tuple[Any, ...]] = []
    keys: list[Any] = []
    for config in transfer_configs:
        if isinstance(config, TransferConfig) and config.src_layer_range is None:
            config.src_layer_range = range(0, num_layers)
        layers = config.src_layer_range or range(0, num_layers)
        if src_blocks:
            raise_if_false(
                config.src_batch_index == 0,
                "Invalid TransferConfig, src_batch_index ({0}) != 0 while src is blocks",
                config.src_batch_index,
            )
        raise_if_false(
            0 <= layers.start < layers.stop <= num_layers,
            "src_layer_range: {0} out of range, src_layer_num = {1}",
            layers,
            num_layers,
        )
        if not isinstance(config, TransferConfig):  # addressed by key
            dst = config.dst_layer_range
            out.append(
                (config.dst_cluster_id, [], layers.start, layers.stop, config.src_batch_index)
            )
            keys.append((_native.key_tuple(config.cache_key), (dst.start, dst.stop)))
            continue
        expected = len(layers) * NUM_TENSORS_PER_LAYER
        raise_if_false(
            len(config.dst_addrs) == expected,
            "expect {0} dst_addrs, but len(dst_addrs) = {1}, range = {2}",
            expected,
            len(config.dst_addrs),
            layers,
        )
        dst_addrs = list(config.dst_addrs)
        out.append(
            (config.dst_cluster_id, dst_addrs, layers.start, layers.stop, config.src_batch_index)
        )
        keys.append(None)
    return out, keys


def start(
    native: Any,
    cache_id: int,
    desc: CacheDesc,
    addrs: list[int],
    layer_synchronizer: LayerSynchronizer,
    configs: tuple[list[tuple[Any, ...]], list[Any]],
    blocks: tuple[Any, Any, Any],
    exclusive: bool,
    timeout_code: LLMStatusCode,
) -> CacheTask:
    """Hands the task to the engine; ``synchronize_layer(i, None)`` as the original."""

    def synchronize(layer_index: int, _timeout_ms: int | None) -> bool:
        return bool(layer_synchronizer.synchronize_layer(layer_index, None))

    src_blocks, dst_blocks, dst_block_memory_size = blocks
    task = _native.call(
        "[transfer_cache_async]",
        f"cache_id = {cache_id}",
        native.transfer,
        cache_id,
        desc.num_tensors,
        list(desc.shape),
        desc.data_type.value,
        desc.batch_dim,
        list(addrs),
        synchronize,
        configs[0],
        list(src_blocks or []),
        list(dst_blocks or []),
        dst_block_memory_size,
        sync_timeout_ms=None,
        unbounded=True,
        exclusive=exclusive,
        dst_keys=configs[1],
    )
    return CacheTask(
        task, len(configs[0]), timeout_code, keep_alive=(synchronize, layer_synchronizer)
    )
