"""Value types of the ``llm_datadist`` API (reference §3, §7, §8, §10.4-10.6)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any

from llm_datadist._checks import (
    check_int32,
    check_int64,
    check_isinstance,
    check_list_uint64,
    check_uint32,
    check_uint64,
)
from llm_datadist.data_type import DataType, data_type_size
from llm_datadist.status import (
    LLMStatusCode,
    code_2_status,
    raise_if_false,
    raise_if_true,
)

if TYPE_CHECKING:
    from llm_datadist.kv_cache_manager import KvCacheManager

__all__ = [
    "Placement",
    "RegisterMemStatus",
    "Memtype",
    "MemInfo",
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "BlocksCacheKey",
    "KvCache",
    "Cache",
    "LayerSynchronizer",
    "TransferConfig",
    "TransferWithCacheKeyConfig",
    "CacheTask",
]

INVALID_ID = 2**64 - 1


class Placement(IntEnum):
    """Where a cache lives: ``DEVICE`` (allocated by kvdist) or ``HOST`` (user memory)."""

    HOST = 0
    DEVICE = 1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


class RegisterMemStatus(Enum):
    """Registration state of memory (CacheManager mode)."""

    OK = 0
    PREPARING = 1
    FAILED = 2


class Memtype(Enum):
    """Memory type of a ``MemInfo`` (CacheManager mode)."""

    MEM_TYPE_DEVICE = 0
    MEM_TYPE_HOST = 1


class MemInfo:
    """A memory range ``(mem_type, addr, size)`` (CacheManager mode)."""

    def __init__(self, mem_type: Memtype, addr: int, size: int) -> None:
        check_isinstance("mem_type", mem_type, Memtype, allow_none=False)
        check_uint64("addr", addr)
        check_uint64("size", size)
        self._mem_type = mem_type
        self._addr = addr
        self._size = size

    @property
    def mem_type(self) -> Memtype:
        """The ``Memtype``."""
        return self._mem_type

    @property
    def addr(self) -> int:
        """Start address."""
        return self._addr

    @property
    def size(self) -> int:
        """Length in bytes."""
        return self._size

    def __repr__(self) -> str:
        return f"MemInfo(mem_type={self._mem_type}, addr={self._addr}, size={self._size})"


class CacheDesc:
    """Describes ``num_tensors`` tensors of one ``shape`` and ``data_type``.

    Layer-wise APIs order tensors K0, V0, K1, V1, ...: layer ``l`` is tensors
    ``2l`` and ``2l+1``. For a blocks (PA) cache ``shape[0]`` is the number of
    blocks.
    """

    def __init__(
        self,
        num_tensors: int,
        shape: list[int] | tuple[int, ...],
        data_type: DataType,
        placement: Placement = Placement.DEVICE,
        batch_dim_index: int = 0,
        seq_len_dim_index: int = -1,
        kv_tensor_format: str | None = None,
    ) -> None:
        # The original's order; like it, None passes the data_type and
        # placement checks (size then fails for a None type).
        check_uint32("num_tensors", num_tensors)
        check_isinstance("shape", shape, [list, tuple], int, allow_none=False)
        check_isinstance("data_type", data_type, DataType)
        check_isinstance("placement", placement, Placement)
        check_isinstance("batch_dim_index", batch_dim_index, int, allow_none=False)
        check_int32("seq_len_dim_index", seq_len_dim_index)
        check_isinstance("kv_tensor_format", kv_tensor_format, str)
        raise_if_false(
            0 <= batch_dim_index < len(shape),
            "batch_dim_index ({0}) out of range [0, {1})",
            batch_dim_index,
            len(shape),
        )
        raise_if_false(
            seq_len_dim_index == -1 or 0 <= seq_len_dim_index < len(shape),
            "seq_len_dim_index ({0}) out of range [0, {1})",
            seq_len_dim_index,
            len(shape),
        )
        for dim in shape:
            check_int64("shape", dim)
        self._num_tensors = num_tensors
        # A copy: update_dim changes this desc, not the caller's list (the
        # original shares the list, and fails on a tuple).
        self._shape = list(shape)
        self._batch_size = shape[batch_dim_index]  # as constructed, as the original
        self._data_type = data_type
        self._placement = placement
        self._batch_dim_index = batch_dim_index
        self._seq_len_dim_index = seq_len_dim_index
        self._kv_tensor_format = kv_tensor_format
        self._size: int | None = None

    @property
    def num_tensors(self) -> int:
        """Number of tensors (2 per layer for layer-wise APIs)."""
        return self._num_tensors

    @property
    def shape(self) -> list[int]:
        """Shape of each tensor."""
        return self._shape

    @property
    def data_type(self) -> DataType:
        """Element type."""
        return self._data_type

    @property
    def placement(self) -> Placement:
        """``DEVICE`` for kvdist-allocated caches, ``HOST`` for user memory."""
        return self._placement

    @property
    def batch_dim(self) -> int:
        """Index of the batch dimension in ``shape``."""
        return self._batch_dim_index

    @property
    def batch_size(self) -> int:
        """``shape[batch_dim]`` at construction (the number of blocks for a
        blocks cache); ``update_dim`` does not change it, as in the original."""
        return self._batch_size

    @property
    def seq_len_dim_index(self) -> int:
        """Index of the sequence dimension, or -1."""
        return self._seq_len_dim_index

    @property
    def kv_tensor_format(self) -> str | None:
        """Tensor format string (informational)."""
        return self._kv_tensor_format

    @property
    def size(self) -> int:
        """Bytes of ONE tensor."""
        if self._size is None:
            elem = data_type_size(self._data_type) if isinstance(self._data_type, DataType) else -1
            raise_if_true(
                elem < 0 or any(dim < 0 for dim in self._shape),
                "Failed to calc tensor size, shape = {0}, data_type = {1}",
                self._shape,
                self._data_type,
            )
            self._size = math.prod(self._shape) * elem
        return self._size

    def update_dim(self, dim_index: int, dim_value: int) -> None:
        """Sets ``shape[dim_index] = dim_value``; Python's list errors as the
        original (IndexError out of range; negative indices count from the end)."""
        self._shape[dim_index] = dim_value
        self._size = None

    def __repr__(self) -> str:
        return (
            f"CacheDesc(num_tensors={self._num_tensors}, shape={self._shape}, "
            f"data_type={self._data_type}, placement={self._placement}, "
            f"batch_dim_index={self._batch_dim_index}, "
            f"seq_len_dim_index={self._seq_len_dim_index},"
            f"kv_tensor_format={self._kv_tensor_format})"
        )


class CacheKey:
    """Key of a PROMPT cache for ``pull_cache``.

    ``CacheKey(prompt_cluster_id|cluster_id, req_id, model_id=0, prefix_id=2**64-1)``.
    """

    _KEYWORDS = ("prompt_cluster_id", "cluster_id", "req_id", "model_id", "prefix_id")

    def __init__(self, *args: int, **kwargs: int) -> None:
        # As the original: at most 4 values in all; a positional value wins
        # over the same keyword; cluster_id wins over prompt_cluster_id.
        raise_if_false(len(args) + len(kwargs) <= 4, "Param num is over limit")
        values: dict[str, Any] = dict(kwargs)
        for name, value in zip(("cluster_id", "req_id", "model_id", "prefix_id"), args):
            values[name] = value
        raise_if_false(
            "prompt_cluster_id" in values or "cluster_id" in values,
            "Param prompt_cluster_id or cluster_id is required",
        )
        raise_if_false("req_id" in values, "Param req_id is required")
        for key in values:
            raise_if_false(key in self._KEYWORDS, "Unsupported param:{0}", key)
        cluster = values["cluster_id"] if "cluster_id" in values else values["prompt_cluster_id"]
        self._cluster_id: int = cluster
        self._req_id: int = values["req_id"]
        self._model_id: int = values.get("model_id", 0)
        self._prefix_id: int = values.get("prefix_id", INVALID_ID)
        check_uint64("cluster_id", self._cluster_id)
        check_uint64("req_id", self._req_id)
        check_uint64("model_id", self._model_id)
        check_uint64("prefix_id", self._prefix_id)

    @property
    def cluster_id(self) -> int:
        """Cluster id of the PROMPT holding the cache."""
        return self._cluster_id

    @property
    def prompt_cluster_id(self) -> int:
        """Alias of ``cluster_id``."""
        return self._cluster_id

    @property
    def req_id(self) -> int:
        """Request id (2**64-1 = invalid)."""
        return self._req_id

    @property
    def model_id(self) -> int:
        """Model id."""
        return self._model_id

    @property
    def prefix_id(self) -> int:
        """Prefix id (2**64-1 = invalid)."""
        return self._prefix_id

    def __repr__(self) -> str:
        return (
            f"CacheKey(cluster_id={self._cluster_id}, req_id={self._req_id}, "
            f"prefix_id={self._prefix_id}, model_id={self._model_id})"
        )


class CacheKeyByIdAndIndex:
    """Addresses a remote cache by ``(cluster_id, cache_id, batch_index)``."""

    def __init__(self, cluster_id: int, cache_id: int, batch_index: int = 0) -> None:
        check_uint64("cluster_id", cluster_id)
        check_int64("cache_id", cache_id)
        check_uint32("batch_index", batch_index)
        self._cluster_id = cluster_id
        self._cache_id = cache_id
        self._batch_index = batch_index

    @property
    def cluster_id(self) -> int:
        """Cluster id of the cache owner."""
        return self._cluster_id

    @property
    def cache_id(self) -> int:
        """Cache id at the owner."""
        return self._cache_id

    @property
    def batch_index(self) -> int:
        """Batch index inside the cache."""
        return self._batch_index

    def __repr__(self) -> str:
        return (
            f"CacheKeyByIdAndIndex(cluster_id={self._cluster_id}, cache_id={self._cache_id}, "
            f"batch_index={self._batch_index})"
        )


class BlocksCacheKey:
    """Key of a PROMPT blocks cache.

    ``BlocksCacheKey(prompt_cluster_id|cluster_id, model_id=0)``.
    """

    def __init__(self, *args: int, **kwargs: int) -> None:
        # As the original: a positional value wins over the same keyword,
        # cluster_id over prompt_cluster_id; None passes the type check.
        raise_if_false(len(args) + len(kwargs) <= 2, "Param num is over limit")
        values: dict[str, Any] = dict(kwargs)
        for name, value in zip(("cluster_id", "model_id"), args):
            values[name] = value
        raise_if_false(
            "prompt_cluster_id" in values or "cluster_id" in values,
            "Param prompt_cluster_id or cluster_id is required",
        )
        for key in values:
            raise_if_false(
                key in ("prompt_cluster_id", "cluster_id", "model_id"), "Unsupported param:{0}", key
            )
        self._cluster_id_key = "cluster_id" if "cluster_id" in values else "prompt_cluster_id"
        self._cluster_id: int = values[self._cluster_id_key]
        self._model_id: int = values.get("model_id", 0)
        check_isinstance("cluster_id", self._cluster_id, int, extra_fmt="The first param ")
        check_isinstance("model_id", self._model_id, int, extra_fmt="The second param ")

    @property
    def cluster_id(self) -> int:
        """Cluster id of the PROMPT holding the blocks."""
        return self._cluster_id

    @property
    def prompt_cluster_id(self) -> int:
        """Alias of ``cluster_id``."""
        return self._cluster_id

    @property
    def model_id(self) -> int:
        """Model id."""
        return self._model_id

    def __repr__(self) -> str:
        return (
            f"BlocksCacheKey({self._cluster_id_key}={self._cluster_id}, model_id={self._model_id})"
        )


class KvCache:
    """A cache of a ``KvCacheManager`` (created by the manager, not by users).

    ``per_device_tensor_addrs[0]`` holds the ``num_tensors`` addresses (host
    virtual addresses of this process on CPU hosts).
    """

    def __init__(
        self,
        cache_id: int,
        cache_desc: CacheDesc,
        per_device_tensor_addrs: list[list[int]],
        kv_cache_manager: KvCacheManager | None = None,
    ) -> None:
        self._cache_id = cache_id
        self._cache_desc = cache_desc
        self._per_device_tensor_addrs = per_device_tensor_addrs
        self._kv_cache_manager = kv_cache_manager
        self._is_blocks = False
        self._valid = True

    @property
    def cache_id(self) -> int:
        """Id of the cache inside its manager (-1 for ``create_cpu_cache``)."""
        return self._cache_id

    @property
    def cache_desc(self) -> CacheDesc:
        """The ``CacheDesc`` it was created with."""
        return self._cache_desc

    @property
    def per_device_tensor_addrs(self) -> list[list[int]]:
        """Tensor addresses per device (one device on CPU hosts)."""
        return self._per_device_tensor_addrs

    @property
    def is_blocks_cache(self) -> bool:
        """True for caches from ``allocate_blocks_cache``."""
        return self._is_blocks

    @classmethod
    def create_cpu_cache(cls, cache_desc: CacheDesc, addrs: list[int] | list[list[int]]) -> KvCache:
        """Wraps user memory (``Placement.HOST``) as a ``KvCache`` (for ``swap_blocks``)."""
        check_isinstance("cache_desc", cache_desc, CacheDesc, allow_none=False)
        raise_if_false(
            cache_desc.placement == Placement.HOST,
            "cache_desc.placement must be Placement.HOST, but got {0}",
            cache_desc.placement,
        )
        check_isinstance("addrs", addrs, list, allow_none=False)
        raise_if_false(len(addrs) > 0, "addrs can not be empty")
        # Element by element, as the original: each an int or a list of
        # ints (TypeError), a list as long as num_tensors, all of one kind
        # (LLMException: [1, [2, 3]] is refused).
        first_kind = type(addrs[0])
        for addr in addrs:
            check_isinstance("the internal element of addrs", addr, [list, int], allow_none=False)
            if isinstance(addr, list):
                check_isinstance("the internal element of addrs", addr, list, int)
                check_list_uint64("addrs", addr)
                raise_if_false(
                    len(addr) == cache_desc.num_tensors,
                    "len(addrs[i]) ({0}) != num_tensors ({1})",
                    len(addr),
                    cache_desc.num_tensors,
                )
            raise_if_false(
                isinstance(addr, first_kind),
                "the type of the internal element of addrs should be consistent.",
            )
        if first_kind is int:
            check_list_uint64("addrs", addrs)
            raise_if_false(
                len(addrs) == cache_desc.num_tensors,
                "len(addrs) ({0}) != num_tensors ({1})",
                len(addrs),
                cache_desc.num_tensors,
            )
            per_device: list[list[int]] = [list(addrs)]
        else:
            per_device = [list(inner) for inner in addrs]
        return cls(-1, cache_desc, per_device, None)

    def __del__(self) -> None:
        """Frees the cache if the user did not, while its manager is initialised."""
        try:
            manager = self._kv_cache_manager
            if self._valid and manager is not None and manager.is_initialized():
                manager.deallocate_cache(self)
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __repr__(self) -> str:
        return (
            f"KvCache(cache_id={self._cache_id}, cache_desc={self._cache_desc}, "
            f"per_device_tensor_addrs={self._per_device_tensor_addrs})"
        )


class Cache:
    """A cache of CacheManager mode (``tensor_addrs``, ``is_blocks_cache``)."""

    def __init__(
        self,
        cache_id: int,
        cache_desc: CacheDesc,
        tensor_addrs: list[int],
        cache_manager: Any = None,
        is_blocks_cache: bool = False,
    ) -> None:
        self._cache_id = cache_id
        self._cache_desc = cache_desc
        self._tensor_addrs = tensor_addrs
        self._cache_manager = cache_manager
        self._is_blocks_cache = is_blocks_cache

    @property
    def cache_id(self) -> int:
        """Id of the cache (-1 for ``create_cpu_cache``)."""
        return self._cache_id

    @property
    def cache_desc(self) -> CacheDesc:
        """The ``CacheDesc``."""
        return self._cache_desc

    @property
    def tensor_addrs(self) -> list[int]:
        """One address per tensor."""
        return self._tensor_addrs

    @property
    def is_blocks_cache(self) -> bool:
        """True for blocks (PA) caches."""
        return self._is_blocks_cache

    @classmethod
    def create_cpu_cache(cls, cache_desc: CacheDesc, addrs: list[int]) -> Cache:
        """Wraps user memory (``Placement.HOST``) as a ``Cache``."""
        check_isinstance("cache_desc", cache_desc, CacheDesc, allow_none=False)
        raise_if_false(
            cache_desc.placement == Placement.HOST,
            "cache_desc.placement must be Placement.HOST, but got {0}",
            cache_desc.placement,
        )
        check_isinstance("addrs", addrs, list, int, allow_none=False)
        raise_if_false(len(addrs) > 0, "addrs can not be empty")
        check_list_uint64("addrs", addrs)
        raise_if_false(
            cache_desc.num_tensors == len(addrs),
            "cache_desc num_tensors:{0} not equal addrs num:{1}",
            cache_desc.num_tensors,
            len(addrs),
        )
        # The original marks a CPU cache a blocks cache (its swap_blocks
        # takes it as one).
        return cls(-1, cache_desc, list(addrs), None, is_blocks_cache=True)

    def __repr__(self) -> str:
        return (
            f"Cache(cache_id={self._cache_id}, cache_desc={self._cache_desc}, "
            f"tensor_addrs={self._tensor_addrs})"
        )


class LayerSynchronizer(ABC):
    """Implemented by the caller: says when a layer of the source is ready."""

    @abstractmethod
    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        """Blocks until layer ``layer_index`` is computed; True = send it."""


def _check_layer_range(name: str, layer_range: Any) -> None:
    check_isinstance(name, layer_range, range)
    if layer_range is not None:
        raise_if_false(layer_range.step == 1, "{0} step must be 1, but got {1}", name, layer_range)
        raise_if_false(
            0 <= layer_range.start < layer_range.stop,
            "{0} must satisfy 0 <= start < stop, but got {1}",
            name,
            layer_range,
        )


class TransferConfig:
    """One destination of ``transfer_cache_async``.

    ``dst_addrs`` holds 2 addresses per transferred layer (K then V), in the
    destination process; ``src_layer_range`` None = every layer.
    """

    def __init__(
        self,
        dst_cluster_id: int,
        dst_addrs: list[int] | tuple[int, ...],
        src_layer_range: range | None = None,
        src_batch_index: int = 0,
    ) -> None:
        self.dst_cluster_id = dst_cluster_id
        self.dst_addrs = dst_addrs
        self.src_layer_range = src_layer_range
        self.src_batch_index = src_batch_index
        self.dst_layer_range: range | None = None

    @property
    def dst_cluster_id(self) -> int:
        """Cluster id of the destination (uint64)."""
        return self._dst_cluster_id

    @dst_cluster_id.setter
    def dst_cluster_id(self, dst_cluster_id: int) -> None:
        check_uint64("dst_cluster_id", dst_cluster_id)
        self._dst_cluster_id = dst_cluster_id

    @property
    def dst_addrs(self) -> list[int] | tuple[int, ...]:
        """Destination addresses, ``2 * len(src_layer_range)`` of them."""
        return self._dst_addrs

    @dst_addrs.setter
    def dst_addrs(self, dst_addrs: list[int] | tuple[int, ...]) -> None:
        check_isinstance("dst_addrs", dst_addrs, [list, tuple], int, allow_none=False)
        check_list_uint64("dst_addrs", dst_addrs)
        self._dst_addrs = dst_addrs

    @property
    def src_layer_range(self) -> range | None:
        """Source layers to send (step 1), None = all."""
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, src_layer_range: range | None) -> None:
        _check_layer_range("src_layer_range", src_layer_range)
        self._src_layer_range = src_layer_range

    @property
    def src_batch_index(self) -> int:
        """Batch index of the source slice (contiguous caches)."""
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, src_batch_index: int) -> None:
        check_uint32("src_batch_index", src_batch_index)
        self._src_batch_index = src_batch_index

    def __repr__(self) -> str:
        return (
            f"TransferConfig(dst_cluster_id={self._dst_cluster_id}, dst_addrs={self._dst_addrs}, "
            f"src_layer_range={self._src_layer_range}, src_batch_index={self._src_batch_index})"
        )


class TransferWithCacheKeyConfig:
    """A destination given by cache key (CacheManager mode, remote cache accessible).

    As the original: both layer ranges are required and of one size, a
    ``BlocksCacheKey`` takes no batch index, and ``dst_cluster_id`` is the
    key's cluster.
    """

    def __init__(
        self,
        cache_key: BlocksCacheKey | CacheKeyByIdAndIndex,
        src_layer_range: range | None = None,
        dst_layer_range: range | None = None,
        src_batch_index: int = 0,
    ) -> None:
        check_isinstance(
            "cache_key", cache_key, [BlocksCacheKey, CacheKeyByIdAndIndex], allow_none=False
        )
        self._cache_key = cache_key
        check_isinstance("src_layer_range", src_layer_range, range, allow_none=False)
        _check_layer_range("src_layer_range", src_layer_range)
        self._src_layer_range = src_layer_range
        check_isinstance("dst_layer_range", dst_layer_range, range, allow_none=False)
        _check_layer_range("dst_layer_range", dst_layer_range)
        self._dst_layer_range = dst_layer_range
        raise_if_false(
            len(src_layer_range) == len(dst_layer_range),
            "src_layer_range size should be equal to dst_layer_range size",
        )
        check_uint32("src_batch_index", src_batch_index)
        self._check_batch_for_key(cache_key, src_batch_index)
        self._src_batch_index = src_batch_index
        self.dst_cluster_id = cache_key.cluster_id

    @staticmethod
    def _check_batch_for_key(cache_key: Any, src_batch_index: int) -> None:
        raise_if_true(
            isinstance(cache_key, BlocksCacheKey) and src_batch_index != 0,
            "src_batch_index should be 0 when cache_key is BlocksCacheKey.",
        )

    @property
    def cache_key(self) -> BlocksCacheKey | CacheKeyByIdAndIndex:
        return self._cache_key

    @cache_key.setter
    def cache_key(self, cache_key: BlocksCacheKey | CacheKeyByIdAndIndex) -> None:
        check_isinstance("cache_key", cache_key, [BlocksCacheKey, CacheKeyByIdAndIndex])
        self._cache_key = cache_key

    @property
    def src_layer_range(self) -> range | None:
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, src_layer_range: range | None) -> None:
        _check_layer_range("src_layer_range", src_layer_range)
        self._src_layer_range = src_layer_range

    @property
    def dst_layer_range(self) -> range | None:
        return self._dst_layer_range

    @dst_layer_range.setter
    def dst_layer_range(self, dst_layer_range: range | None) -> None:
        _check_layer_range("dst_layer_range", dst_layer_range)
        self._dst_layer_range = dst_layer_range

    @property
    def src_batch_index(self) -> int:
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, src_batch_index: int) -> None:
        self._check_batch_for_key(self._cache_key, src_batch_index)
        check_uint32("src_batch_index", src_batch_index)
        self._src_batch_index = src_batch_index

    def __repr__(self) -> str:
        return (
            f"TransferWithCacheKeyConfig(cache_key={self._cache_key},"
            f" src_layer_range={self._src_layer_range},"
            f" dst_layer_range={self._dst_layer_range},"
            f" src_batch_index={self._src_batch_index})"
        )


class CacheTask:
    """Handle of one ``transfer_cache_async`` call."""

    def __init__(
        self,
        native_task: Any,
        num_configs: int,
        timeout_code: LLMStatusCode = LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT,
        keep_alive: tuple[Any, ...] = (),
    ) -> None:
        self._task = native_task
        self._num_configs = num_configs
        self._timeout_code = timeout_code
        self._keep_alive = keep_alive

    def synchronize(self, timeout_in_millis: int | None = None) -> LLMStatusCode:
        """Waits (None: until the end) and returns the task's status.

        While still running after the timeout: ``LLM_WAIT_PROCESS_TIMEOUT``;
        else the first result that is neither SUCCESS nor None, else SUCCESS.
        """
        if timeout_in_millis is not None:
            check_uint32("timeout_in_millis", timeout_in_millis)
        code = self._task.synchronize(timeout_in_millis)
        if code == LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT:
            return self._timeout_code
        return code_2_status(code)

    def get_results(self, timeout_in_millis: int | None = None) -> list[LLMStatusCode | None]:
        """One entry per config: SUCCESS, an error code, or None (never attempted).

        While still running after the timeout: the timeout code for every config.
        """
        if timeout_in_millis is not None:
            check_uint32("timeout_in_millis", timeout_in_millis)
        results = self._task.get_results(timeout_in_millis)
        if results and all(r == LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT for r in results):
            return [self._timeout_code] * len(results)
        return [None if r is None else code_2_status(r) for r in results]

    def result_message(self, index: int) -> str:
        """Return (kvdist extension) the message explaining config ``index``'s error."""
        check_uint32("index", index)
        raise_if_false(index < self._num_configs, "index ({0}) out of range", index)
        return str(self._task.result_message(index))

    def __repr__(self) -> str:
        return f"CacheTask(num_configs={self._num_configs})"


class TensorDesc:
    """Describes a tensor: ``TensorDesc(dtype, shape)``."""

    def __init__(self, dtype: DataType, shape: list[int] | tuple[int, ...]) -> None:
        check_isinstance("dtype", dtype, DataType)
        check_isinstance("shape", shape, [list, tuple], int)
        self._dtype = dtype
        self._shape = list(shape)

    @property
    def dtype(self) -> DataType:
        """Element type."""
        return self._dtype

    @property
    def shape(self) -> list[int]:
        """Shape."""
        return self._shape

    def __str__(self) -> str:
        return f"TensorDesc(dtype={self._dtype}, shape={self._shape})"


class Tensor:
    """A host tensor: ``Tensor(data: numpy.ndarray | Tensor | int, tensor_desc=None)``.

    As the original: the array must match ``tensor_desc`` in shape and type
    and be C-contiguous (RuntimeError otherwise; it is not copied); an int
    is an engine tensor id (with its ``tensor_desc``), which holds no host
    data on a CPU host.
    """

    def __init__(self, data: Any, tensor_desc: TensorDesc | None = None) -> None:
        import numpy as np  # optional dependency, only for Tensor

        from llm_datadist import data_type as dt

        check_isinstance("data", data, [np.ndarray, Tensor, int], allow_none=False)
        check_isinstance("tensor_desc", tensor_desc, TensorDesc)
        self._tensor_id = 0
        self._data: Any = None
        if isinstance(data, Tensor):
            self._data = data._data
            self._tensor_id = data._tensor_id
            self._tensor_desc: TensorDesc | None = data._tensor_desc
            return
        if isinstance(data, int):
            self._tensor_id = data
            self._tensor_desc = tensor_desc
            return
        if tensor_desc is not None:
            if list(data.shape) != tensor_desc.shape:
                raise RuntimeError(
                    f"The shape of data:{data.shape} is not same as tensor_desc "
                    f"shape:{tensor_desc.shape}"
                )
            if data.dtype != dt.dtype_to_np_dtype.get(tensor_desc.dtype):
                raise RuntimeError(
                    f"The dtype of data:{data.dtype} is not same as tensor_desc "
                    f"dtype:{tensor_desc.dtype}"
                )
        elif data.dtype not in dt.np_dtype_to_dtype:
            raise RuntimeError(
                f"The dtype of data:{data.dtype} is not valid, only support {dt.valid_np_dtypes}"
            )
        if not data.flags.c_contiguous:
            raise RuntimeError("The data is not c_contiguous")
        self._data = data
        self._tensor_desc = tensor_desc or TensorDesc(
            dt.np_dtype_to_dtype[data.dtype], list(data.shape)
        )

    @property
    def tensor_desc(self) -> TensorDesc | None:
        """The ``TensorDesc``."""
        return self._tensor_desc

    def numpy(self, copy: bool = False) -> Any:
        """The data as a numpy array (a copy if ``copy``)."""
        check_isinstance("copy", copy, bool)
        if self._data is None:
            raise RuntimeError(
                f"tensor {self._tensor_id} is an engine tensor id: no host data on a CPU host"
            )
        return self._data.copy() if copy else self._data

    def __str__(self) -> str:
        return f"Tensor({self._data},tensor_desc={self._tensor_desc})"
