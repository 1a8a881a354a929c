"""Type stubs of the binding (see src/python/bindings.cc)."""

from typing import Any, Callable, Optional

from typing_extensions import TypeAlias

# (kind 0 request | 1 cache id | 2 blocks, prompt_cluster_id, req_id,
#  prefix_id, model_id, cache_id, batch_index)
KeyTuple: TypeAlias = tuple[int, int, int, int, int, int, int]
# (cache_id, tensor addresses, num_tensors, shape, dtype, placement)
CacheTuple: TypeAlias = tuple[int, list[int], int, list[int], int, int]

class KvdistError(RuntimeError):
    code: int
    message: str

class Task:
    def synchronize(self, timeout_ms: Optional[int] = None) -> int: ...
    def get_results(self, timeout_ms: Optional[int] = None) -> list[Optional[int]]: ...
    def result_message(self, index: int) -> str: ...
    def cancel(self) -> None: ...
    def done(self) -> bool: ...
    def figures(self) -> dict[str, Any]: ...

class DataDist:
    def __init__(self, role: int, cluster_id: int) -> None: ...
    def init_map(self, options: dict[str, str]) -> None: ...
    def init(
        self,
        listen: str = "",
        sync_kv_timeout_ms: int = 1000,
        transfer_timeout_ms: int = 10000,
        pool_max_bytes: int = ...,
        inflight_layers: int = 4,
        copy_lanes: int = 0,
        auth_secret: str = "",
    ) -> None: ...
    def finalize(self) -> None: ...
    @property
    def initialized(self) -> bool: ...
    @property
    def listen_port(self) -> int: ...
    @property
    def role(self) -> int: ...
    @property
    def cluster_id(self) -> int: ...
    def link(
        self, clusters: list[tuple[int, str, int]], timeout_ms: int
    ) -> tuple[int, list[int], list[str]]: ...
    def unlink(
        self, clusters: list[tuple[int, str, int]], timeout_ms: int
    ) -> tuple[int, list[int], list[str]]: ...
    def check_link(self, cluster_id: int) -> tuple[int, str]: ...
    def linked(self) -> list[int]: ...
    def allocate(
        self,
        num_tensors: int,
        shape: list[int],
        dtype: int,
        placement: int,
        batch_dim_index: int,
        seq_len_dim_index: int,
        blocks: bool,
        keys: list[KeyTuple] = ...,
    ) -> tuple[int, list[int]]: ...
    def remove_key(self, key: KeyTuple) -> None: ...
    def bind_keys(self, cache_id: int, keys: list[KeyTuple]) -> None: ...
    def switch_role(self, role: int, listen: str = "") -> None: ...
    def pull(
        self,
        key: KeyTuple,
        dst: CacheTuple,
        batch_index: int = 0,
        size: int = -1,
        src_offset: Optional[int] = None,
        dst_offset: Optional[int] = None,
        src_layers: Optional[tuple[int, int]] = None,
        dst_layers: Optional[tuple[int, int]] = None,
        tensors_per_layer: int = 2,
        src_blocks: list[int] = ...,
        dst_blocks: list[int] = ...,
        timeout_ms: Optional[int] = None,
        keep_keys: bool = False,
    ) -> None: ...
    def push(
        self,
        src: CacheTuple,
        key: KeyTuple,
        src_batch_index: int = 0,
        src_layers: Optional[tuple[int, int]] = None,
        dst_layers: Optional[tuple[int, int]] = None,
        tensors_per_layer: int = 2,
        src_blocks: list[int] = ...,
        dst_blocks: list[int] = ...,
        timeout_ms: Optional[int] = None,
    ) -> None: ...
    def copy_cache(
        self,
        dst: CacheTuple,
        src: CacheTuple,
        dst_batch_index: int = 0,
        src_batch_index: int = 0,
        offset: int = 0,
        size: int = -1,
    ) -> None: ...
    def copy_blocks(self, cache: CacheTuple, pairs: list[tuple[int, int]]) -> None: ...
    def swap_blocks(
        self, src: CacheTuple, dst: CacheTuple, pairs: list[tuple[int, int]]
    ) -> None: ...
    def read_tensor(self, cache: CacheTuple, index: int) -> bytes: ...
    def register(
        self,
        num_tensors: int,
        shape: list[int],
        dtype: int,
        addrs: list[int],
        blocks: bool,
        tensors_per_layer: int = 2,
    ) -> tuple[int, list[int]]: ...
    def deallocate(self, cache_id: int) -> None: ...
    def transfer(
        self,
        cache_id: int,
        num_tensors: int,
        shape: list[int],
        dtype: int,
        batch_dim_index: int,
        addrs: list[int],
        synchronizer: Callable[[int, Optional[int]], bool],
        configs: list[tuple[int, list[int], Optional[int], Optional[int], int]],
        src_blocks: list[int],
        dst_blocks: list[int],
        dst_block_size: Optional[int],
        sync_timeout_ms: Optional[int] = None,
        unbounded: bool = False,
        exclusive: bool = False,
        tensors_per_layer: int = 2,
        dst_keys: list[Optional[tuple[KeyTuple, Optional[tuple[int, int]]]]] = ...,
    ) -> Task: ...
    def wait_layer(self, cache_id: int, layer: int, timeout_ms: int) -> int: ...
    def reset_arrivals(self, cache_id: int) -> int: ...
    def pool_bytes_in_use(self) -> int: ...
    def send_message(self, cluster_id: int, payload: bytes) -> None: ...
    def receive_messages(self, max_messages: int, timeout_ms: int) -> list[tuple[int, bytes]]: ...
    def dropped_messages(self) -> int: ...
