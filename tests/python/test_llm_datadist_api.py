"""llm_datadist: names, values, configs and transfer_cache_async's validation.

These tests need no transport: ``KvCacheManager`` runs over a fake native
object that records what reaches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import llm_datadist
import numpy as np
import pytest
from llm_datadist import (
    CacheDesc,
    CacheKey,
    CacheTask,
    DataType,
    KvCache,
    LayerSynchronizer,
    LLMClusterInfo,
    LLMConfig,
    LlmConfig,
    LLMException,
    LLMRole,
    LLMStatusCode,
    Placement,
    TransferConfig,
)

PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID

ORIGINAL_NAMES = [
    "LLMClusterInfo",
    "LLMStatusCode",
    "LLMException",
    "LLMRole",
    "LlmConfig",
    "LLMConfig",
    "DataType",
    "Status",
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "KvCache",
    "Cache",
    "BlocksCacheKey",
    "LLMDataDist",
    "Placement",
    "RegisterMemStatus",
    "LayerSynchronizer",
    "TransferConfig",
    "CacheTask",
    "TransferWithCacheKeyConfig",
    "Memtype",
    "MemInfo",
    "TensorDesc",
    "Tensor",
    "KvCacheManager",
]


# ---- names, status codes, exceptions ----------------------------------------


def test_star_import_gives_every_original_name() -> None:
    namespace: dict[str, Any] = {}
    exec("from llm_datadist import *", namespace)
    assert sorted(llm_datadist.__all__) == sorted(ORIGINAL_NAMES)
    for name in ORIGINAL_NAMES:
        assert name in namespace, name
    assert namespace["LLMConfig"] is namespace["LlmConfig"]
    with pytest.raises(AttributeError):
        _ = llm_datadist.NoSuchName  # type: ignore[attr-defined]


def test_import_sets_auto_use_uc_memory() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AUTO_USE_UC_MEMORY"}
    code = "import os, llm_datadist; print(os.environ['AUTO_USE_UC_MEMORY'])"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "0", out.stderr
    env["AUTO_USE_UC_MEMORY"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLM_SUCCESS", 0),
        ("LLM_FAILED", 0xFFFFFFFF),
        ("LLM_WAIT_PROCESS_TIMEOUT", 0x5010B001),
        ("LLM_KV_CACHE_NOT_EXIST", 0x5010B002),
        ("LLM_PARAM_INVALID", 1343270917),
        ("LLM_NOT_YET_LINK", 0x5010B007),
        ("LLM_LINK_FAILED", 0x5010B009),
        ("LLM_CLUSTER_NUM_EXCEED_LIMIT", 0x5010B00C),
        ("LLM_DEVICE_OUT_OF_MEMORY", 0x5010B00E),
        ("LLM_SEQ_LENOVERLIMIT", 0x5010B011),
        ("LLM_BLOCKS_OUT_OF_MEMORY", 0x5010B013),
        ("LLM_EXIST_LINK", 0x5010B018),
        ("LLM_FEATURE_NOT_ENABLED", 0x5010B019),
        ("LLM_TIMEOUT", 0x5010B01A),
        ("LLM_LINK_BUSY", 0x5010B01B),
        ("LLM_OUT_OF_MEMORY", 0x5010B01C),
        ("LLM_DEVICE_MEM_ERROR", 507053),
        ("LLM_SUSPECT_REMOTE_ERROR", 507057),
        ("LLM_UNKNOWN_ERROR", -1),
    ],
)
def test_status_code_values(name: str, value: int) -> None:
    code = LLMStatusCode[name]
    assert code == value
    assert LLMStatusCode(value) is code
    assert str(code) == f"LLMStatusCode.{name}"


def test_status_code_members_and_unknown_codes() -> None:
    assert len(LLMStatusCode) == 29
    assert llm_datadist.status.code_2_status(0x5010B014) is LLMStatusCode.LLM_FAILED
    status = llm_datadist.Status(PARAM_INVALID)
    assert not status.is_ok() and status.status_code is PARAM_INVALID
    assert llm_datadist.Status().is_ok()


def test_llm_exception() -> None:
    exc = LLMException("boom", status_code=PARAM_INVALID)
    assert isinstance(exc, RuntimeError)
    assert exc.status_code is PARAM_INVALID
    assert str(exc) == "boom"
    assert LLMException("x").status_code is LLMStatusCode.LLM_SUCCESS
    with pytest.raises(AttributeError):
        exc.status_code = LLMStatusCode.LLM_FAILED  # type: ignore[misc]


def test_enums() -> None:
    assert (LLMRole.PROMPT, LLMRole.DECODER, LLMRole.MIX) == (1, 2, 3)
    assert str(LLMRole.PROMPT) == "LLMRole.PROMPT"
    assert (Placement.HOST, Placement.DEVICE) == (0, 1)
    values = {d.name: d.value for d in DataType}
    assert values == {
        "DT_FLOAT": 0,
        "DT_FLOAT16": 1,
        "DT_BF16": 27,
        "DT_INT8": 2,
        "DT_INT16": 6,
        "DT_UINT16": 7,
        "DT_UINT8": 4,
        "DT_INT32": 3,
        "DT_INT64": 9,
        "DT_UINT32": 8,
        "DT_UINT64": 10,
        "DT_BOOL": 12,
        "DT_DOUBLE": 11,
        "DT_STRING": 13,
    }
    assert llm_datadist.RegisterMemStatus.FAILED.value == 2
    assert llm_datadist.Memtype.MEM_TYPE_HOST.value == 1


# ---- LLMConfig ----------------------------------------------------------------


def test_llm_config_options() -> None:
    config = LLMConfig()
    assert config.generate_options() == {"llm.MemoryUtilization": "0.95"}
    config.device_id = 3
    config.listen_ip_info = "127.0.0.1:26000"
    config.sync_kv_timeout = 500
    config.ge_options = {"ge.flowGraphMemMaxSize": "1073741824"}
    config.enable_switch_role = True
    config.link_total_time = 10
    config.link_retry_count = 3
    config.mem_utilization = 0.5
    config.buf_pool_cfg = '{"buf_cfg":[]}'
    config.enable_cache_manager = False
    config.rdma_traffic_class = 132
    config.output_max_size = 7
    options = config.generate_options()
    assert options == {
        "ge.flowGraphMemMaxSize": "1073741824",
        "ge.exec.deviceId": "3",
        "ge.session_device_id": "3",
        "llm.SyncKvCacheWaitTime": "500",
        "llm.BufPoolCfg": '{"buf_cfg":[]}',
        "llm.EnableCacheManager": "0",
        "llm.listenIpInfo": "127.0.0.1:26000",
        "llm.LinkTotalTime": "10",
        "llm.LinkRetryCount": "3",
        "llm.RdmaTrafficClass": "132",
        "llm.OutputMaxSize": "7",
        "llm.EnableSwitchRole": "1",
        "llm.MemoryUtilization": "0.5",
    }
    assert config.gen_options() == options
    multi = LlmConfig()
    multi.device_id = [0, 1]
    assert multi.generate_options()["ge.exec.deviceId"] == "0;1"
    assert multi.generate_options()["ge.session_device_id"] == "0"
    assert (multi.link_total_time, multi.link_retry_count) == (0, 1)


@pytest.mark.parametrize(
    ("prop", "value", "error"),
    [
        ("device_id", "0", TypeError),
        ("device_id", -1, LLMException),
        ("device_id", [0, "1"], TypeError),
        ("device_id", 2**31, ValueError),
        ("listen_ip_info", 1, TypeError),
        ("sync_kv_timeout", 0, LLMException),
        ("sync_kv_timeout", "12a", LLMException),
        ("sync_kv_timeout", 1.5, TypeError),
        ("sync_kv_timeout", 2**31, ValueError),
        ("ge_options", {"a": 1}, TypeError),
        ("ge_options", [], TypeError),
        ("mem_utilization", 1, TypeError),
        ("mem_utilization", 1.5, LLMException),
        ("enable_switch_role", 1, TypeError),
        ("link_total_time", 2**32, LLMException),
        ("link_retry_count", 0, LLMException),
        ("link_retry_count", 101, LLMException),
        ("rdma_service_level", -1, ValueError),
        ("enable_cache_manager", "1", TypeError),
        ("buf_pool_cfg", {}, TypeError),
    ],
)
def test_llm_config_validation(prop: str, value: Any, error: type[Exception]) -> None:
    config = LLMConfig()
    with pytest.raises(error) as info:
        setattr(config, prop, value)
    if error is LLMException:
        assert info.value.status_code is PARAM_INVALID  # type: ignore[attr-defined]


def test_llm_config_sync_kv_timeout_digit_string() -> None:
    config = LLMConfig()
    config.sync_kv_timeout = "2000"
    assert config.generate_options()["llm.SyncKvCacheWaitTime"] == "2000"


# ---- LLMClusterInfo ---------------------------------------------------------------


def test_cluster_info_ip_conversion() -> None:
    info = LLMClusterInfo()
    info.remote_cluster_id = 7
    info.append_remote_ip_info("127.0.0.1", 26000)
    info.append_remote_ip_info("192.168.1.2", 1)
    info.append_local_ip_info(16777343, 2)
    assert info.remote_ip_info_list == [(16777343, 26000), (0x0201A8C0, 1)]
    assert info.local_ip_info_list == [(16777343, 2)]
    assert llm_datadist.configs.int_ip_to_str(16777343) == "127.0.0.1"
    assert llm_datadist.configs.int_ip_to_str(0x0201A8C0) == "192.168.1.2"
    info.remote_role_type = LLMRole.PROMPT
    assert info.remote_cluster_id == 7


def test_cluster_info_validation() -> None:
    info = LLMClusterInfo()
    with pytest.raises(RuntimeError) as bad_ip:
        info.append_remote_ip_info("not-an-ip", 1)
    assert not isinstance(bad_ip.value, LLMException)
    with pytest.raises(TypeError):
        info.append_remote_ip_info(1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        info.append_remote_ip_info("127.0.0.1", 65536)
    with pytest.raises(TypeError):
        info.append_remote_ip_info("127.0.0.1", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        info.remote_cluster_id = -1
    with pytest.raises(TypeError):
        info.remote_cluster_id = "1"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        info.remote_role_type = "PROMPT"  # type: ignore[assignment]


# ---- CacheDesc, keys, KvCache ----------------------------------------------------


def test_cache_desc() -> None:
    desc = CacheDesc(4, [2, 16, 8], DataType.DT_BF16, seq_len_dim_index=1)
    assert (desc.num_tensors, desc.shape, desc.batch_size, desc.size) == (4, [2, 16, 8], 2, 512)
    assert desc.placement is Placement.DEVICE and desc.batch_dim == 0
    desc.update_dim(1, 32)
    assert desc.size == 1024
    with pytest.raises(TypeError):
        CacheDesc(4, [2, 1.5], DataType.DT_FLOAT)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        CacheDesc(4, [2], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CacheDesc(-1, [2], DataType.DT_FLOAT)
    with pytest.raises(LLMException):
        CacheDesc(4, [2], DataType.DT_FLOAT, batch_dim_index=1)
    with pytest.raises(LLMException):
        CacheDesc(4, [2], DataType.DT_FLOAT, seq_len_dim_index=1)


def test_cache_keys() -> None:
    key = CacheKey(1, 2)
    assert (key.prompt_cluster_id, key.req_id, key.model_id, key.prefix_id) == (1, 2, 0, 2**64 - 1)
    key = CacheKey(prompt_cluster_id=3, req_id=4, model_id=5)
    assert (key.cluster_id, key.req_id, key.model_id) == (3, 4, 5)
    with pytest.raises(LLMException):
        CacheKey(1)
    with pytest.raises(LLMException):
        CacheKey(1, 2, bogus=3)
    with pytest.raises(ValueError):
        CacheKey(-1, 2)
    by_id = llm_datadist.CacheKeyByIdAndIndex(1, -1, 2)
    assert (by_id.cluster_id, by_id.cache_id, by_id.batch_index) == (1, -1, 2)
    blocks = llm_datadist.BlocksCacheKey(prompt_cluster_id=9, model_id=1)
    assert (blocks.cluster_id, blocks.model_id) == (9, 1)
    with pytest.raises(TypeError):
        llm_datadist.BlocksCacheKey("9")  # type: ignore[arg-type]


def test_cache_keys_resolve_arguments_as_the_original() -> None:
    # A positional value wins over the same keyword; cluster_id wins over
    # prompt_cluster_id; at most 4 (CacheKey) / 2 (BlocksCacheKey) in all.
    assert CacheKey(1, 2, req_id=3).req_id == 2
    assert CacheKey(cluster_id=5, prompt_cluster_id=6, req_id=1).cluster_id == 5
    with pytest.raises(LLMException, match="Param num is over limit"):
        CacheKey(1, 2, 3, model_id=4, prefix_id=5)
    assert repr(CacheKey(1, 2)) == (
        "CacheKey(cluster_id=1, req_id=2, prefix_id=18446744073709551615, model_id=0)"
    )
    blocks = llm_datadist.BlocksCacheKey
    assert blocks(None).cluster_id is None  # the original's type check lets None through
    assert blocks(7, model_id=1).model_id == 1
    with pytest.raises(LLMException, match="Param num is over limit"):
        blocks(1, 2, model_id=3)
    assert repr(blocks(prompt_cluster_id=3)) == "BlocksCacheKey(prompt_cluster_id=3, model_id=0)"
    assert repr(blocks(3, 1)) == "BlocksCacheKey(cluster_id=3, model_id=1)"


def test_numpy_dtype_tables() -> None:
    from llm_datadist import data_type

    assert data_type.dtype_to_np_dtype[DataType.DT_FLOAT] is np.float32
    assert data_type.dtype_to_np_dtype[DataType.DT_BF16] is np.float16  # numpy has no bfloat16
    assert len(data_type.valid_np_dtypes) == len(DataType)
    assert data_type.np_dtype_to_dtype[np.dtype(np.float16)] is DataType.DT_FLOAT16
    assert data_type.np_dtype_to_dtype[np.dtype(np.bool_)] is DataType.DT_BOOL
    assert DataType.DT_BF16 not in data_type.np_dtype_to_dtype.values()
    with pytest.raises(AttributeError):
        data_type.not_a_table  # noqa: B018


def test_create_cpu_cache() -> None:
    desc = CacheDesc(2, [1, 4], DataType.DT_FLOAT, Placement.HOST)
    cache = KvCache.create_cpu_cache(desc, [100, 200])
    assert (cache.cache_id, cache.per_device_tensor_addrs) == (-1, [[100, 200]])
    assert KvCache.create_cpu_cache(desc, [[1, 2], [3, 4]]).per_device_tensor_addrs == [
        [1, 2],
        [3, 4],
    ]
    with pytest.raises(LLMException):
        KvCache.create_cpu_cache(CacheDesc(2, [1, 4], DataType.DT_FLOAT), [1, 2])
    with pytest.raises(LLMException):
        KvCache.create_cpu_cache(desc, [])
    with pytest.raises(LLMException):
        KvCache.create_cpu_cache(desc, [1])
    with pytest.raises(TypeError):
        KvCache.create_cpu_cache(desc, [1, "2"])  # type: ignore[list-item]
    # Mixed ints and lists: the original's LLMException, not a TypeError.
    with pytest.raises(LLMException, match="consistent"):
        KvCache.create_cpu_cache(desc, [1, [2, 3]])  # type: ignore[list-item]
    # Cache (CacheManager mode): the length is checked, and the original
    # marks a CPU cache a blocks cache.
    from llm_datadist.llm_types import Cache

    assert Cache.create_cpu_cache(desc, [1, 2]).is_blocks_cache
    with pytest.raises(LLMException):
        Cache.create_cpu_cache(desc, [1, 2, 3])


def test_cache_desc_as_the_original() -> None:
    shape = [4, 8]
    desc = CacheDesc(2, shape, DataType.DT_FLOAT)
    desc.update_dim(0, 16)
    assert desc.shape == [16, 8] and desc.batch_size == 4  # batch_size as constructed
    assert shape == [4, 8]  # kvdist keeps its own copy (the original changes the caller's)
    desc.update_dim(-1, 2)  # negative indices, as a list's
    assert desc.shape == [16, 2]
    with pytest.raises(IndexError):
        desc.update_dim(2, 1)
    # None passes the data_type and placement checks, as in the original.
    loose = CacheDesc(2, [4], None, None)  # type: ignore[arg-type]
    assert (loose.data_type, loose.placement) == (None, None)
    with pytest.raises(LLMException):
        loose.size  # noqa: B018
    assert repr(desc).endswith("seq_len_dim_index=-1,kv_tensor_format=None)")


def test_transfer_with_cache_key_config_as_the_original() -> None:
    make = llm_datadist.TransferWithCacheKeyConfig
    by_id = llm_datadist.CacheKeyByIdAndIndex(7, 3, 1)
    blocks = llm_datadist.BlocksCacheKey(9)
    config = make(by_id, range(0, 2), range(2, 4), 1)
    assert (config.dst_cluster_id, config.src_batch_index) == (7, 1)
    assert make(blocks, range(1, 3), range(0, 2)).dst_cluster_id == 9
    with pytest.raises(TypeError):
        make(by_id)  # both ranges are required
    with pytest.raises(TypeError):
        make(CacheKey(1, 2), range(0, 1), range(0, 1))  # type: ignore[arg-type]
    with pytest.raises(LLMException):
        make(by_id, range(0, 2), range(0, 3))  # sizes differ
    with pytest.raises(LLMException):
        make(by_id, range(0, 4, 2), range(0, 2))
    with pytest.raises(LLMException):
        make(blocks, range(0, 1), range(0, 1), 1)  # blocks take no batch index
    with pytest.raises(LLMException):
        config.dst_layer_range = range(3, 3)
    assert repr(config).startswith("TransferWithCacheKeyConfig(cache_key=CacheKeyByIdAndIndex(")


# ---- TransferConfig, LayerSynchronizer --------------------------------------------


def test_transfer_config() -> None:
    config = TransferConfig(2, [1, 2], range(0, 1), 0)
    assert repr(config) == (
        "TransferConfig(dst_cluster_id=2, dst_addrs=[1, 2], src_layer_range=range(0, 1), "
        "src_batch_index=0)"
    )
    assert config.dst_layer_range is None
    config.src_layer_range = None
    config.dst_addrs = (3, 4)
    assert config.dst_addrs == (3, 4)
    for prop, value, error in [
        ("dst_cluster_id", -1, ValueError),
        ("dst_cluster_id", "2", TypeError),
        ("dst_addrs", None, TypeError),
        ("dst_addrs", [1.0], TypeError),
        ("dst_addrs", [2**64], ValueError),
        ("src_layer_range", [0, 1], TypeError),
        ("src_layer_range", range(0, 4, 2), LLMException),
        ("src_layer_range", range(2, 2), LLMException),
        ("src_layer_range", range(-1, 2), LLMException),
        ("src_batch_index", 2**32, ValueError),
        ("src_batch_index", None, TypeError),
    ]:
        with pytest.raises(error):
            setattr(config, prop, value)
    with pytest.raises(TypeError):
        TransferConfig(2, None)  # type: ignore[arg-type]


def test_layer_synchronizer_is_abstract() -> None:
    with pytest.raises(TypeError):
        LayerSynchronizer()  # type: ignore[abstract]

    class Incomplete(LayerSynchronizer):  # type: ignore[misc]
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


# ---- transfer_cache_async validation over a fake native layer ----------------------


class FakeTask:
    """Stands for ``kvdist._kvdist.Task``."""

    def __init__(self, results: list[int | None], running: bool = False) -> None:
        self.results = results
        self.running = running
        self.timeouts: list[int | None] = []

    def synchronize(self, timeout_ms: int | None = None) -> int:
        self.timeouts.append(timeout_ms)
        if self.running:
            return int(LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT)
        for r in self.results:
            if r not in (None, 0):
                return int(r)  # type: ignore[arg-type]
        return 0

    def get_results(self, timeout_ms: int | None = None) -> list[int | None]:
        self.timeouts.append(timeout_ms)
        if self.running:
            return [int(LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT)] * len(self.results)
        return list(self.results)

    def done(self) -> bool:
        return not self.running

    def result_message(self, index: int) -> str:
        return f"message {index}"


class FakeNative:
    """Records ``transfer`` calls, and the names of the other native calls
    (the validation table checks which calls reach kvdist's engine; the
    engine itself runs in test_llm_datadist_pull.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.names: list[str] = []

    def transfer(self, *args: Any, **kwargs: Any) -> FakeTask:
        self.calls.append((args, kwargs))
        return FakeTask([0] * len(args[7]))

    def allocate(self, num_tensors: int, *args: Any) -> tuple[int, list[int]]:
        self.names.append("allocate")
        return 1, [0x1000 * (i + 1) for i in range(num_tensors)]

    def read_tensor(self, cache: tuple[Any, ...], index: int) -> bytes:
        self.names.append("read_tensor")
        size = 2  # the table's caches are DT_FLOAT16
        for dim in cache[3]:
            size *= dim
        return bytes(size)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> None:
            self.names.append(name)

        return record


class Sync(LayerSynchronizer):
    """Records calls; answers ``answer``."""

    def __init__(self, answer: Any = True) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int | None]] = []

    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        self.calls.append((layer_index, timeout_in_millis))
        return self.answer  # type: ignore[no-any-return]


class DuckSync:
    """Has the method but is not a LayerSynchronizer."""

    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        return True


def _manager(role: LLMRole = LLMRole.PROMPT) -> tuple[Any, FakeNative]:
    native = FakeNative()
    return llm_datadist.KvCacheManager(native, role), native


def _cache(num_tensors: int = 8, blocks: bool = False) -> KvCache:
    desc = CacheDesc(num_tensors, [4, 16], DataType.DT_FLOAT16)
    cache = KvCache(5, desc, [[0x10000 + 0x100 * i for i in range(num_tensors)]], None)
    cache._is_blocks = blocks
    return cache


def _config(n_addrs: int = 8, layers: range | None = None, batch: int = 0) -> TransferConfig:
    return TransferConfig(2, [0x90000 + 0x40 * i for i in range(n_addrs)], layers, batch)


# Each case: (id, role, kwargs overriding the valid call, exception class, status code).
_OK: dict[str, Any] = {}
VALIDATION_CASES: list[tuple[str, LLMRole, dict[str, Any], type[Exception], Any]] = [
    # 1. role first: even a None src_cache is reported as the role error
    ("role_decoder", LLMRole.DECODER, _OK, LLMException, PARAM_INVALID),
    ("role_before_types", LLMRole.DECODER, {"src_cache": None}, LLMException, PARAM_INVALID),
    # 2. src_cache
    ("src_none", LLMRole.PROMPT, {"src_cache": None}, TypeError, None),
    ("src_wrong_type", LLMRole.PROMPT, {"src_cache": "cache"}, TypeError, None),
    (
        "src_before_blocks",
        LLMRole.PROMPT,
        {"src_cache": 1, "dst_block_indices": "x"},
        TypeError,
        None,
    ),
    # 3. dst_block_indices, then src_block_indices
    ("dst_blocks_type", LLMRole.PROMPT, {"dst_block_indices": "01"}, TypeError, None),
    ("dst_blocks_elem_type", LLMRole.PROMPT, {"dst_block_indices": [1.0]}, TypeError, None),
    ("dst_blocks_range", LLMRole.PROMPT, {"dst_block_indices": [-1]}, ValueError, None),
    ("dst_blocks_uint64", LLMRole.PROMPT, {"dst_block_indices": [2**64]}, ValueError, None),
    (
        "dst_blocks_before_src",
        LLMRole.PROMPT,
        {"dst_block_indices": [-1], "src_block_indices": "x"},
        ValueError,
        None,
    ),
    ("src_blocks_type", LLMRole.PROMPT, {"src_block_indices": {0: 1}}, TypeError, None),
    ("src_blocks_range", LLMRole.PROMPT, {"src_block_indices": [0, -2]}, ValueError, None),
    # 4. dst_block_memory_size
    ("block_size_type", LLMRole.PROMPT, {"dst_block_memory_size": 1.5}, TypeError, None),
    ("block_size_range", LLMRole.PROMPT, {"dst_block_memory_size": -1}, ValueError, None),
    (
        "block_size_before_combination",
        LLMRole.PROMPT,
        {"dst_block_memory_size": -1, "src_block_indices": [0]},
        ValueError,
        None,
    ),
    # 5. block combinations
    ("blocks_to_cache", LLMRole.PROMPT, {"src_block_indices": [0, 1]}, LLMException, PARAM_INVALID),
    (
        "blocks_mismatch",
        LLMRole.PROMPT,
        {"src_block_indices": [0, 1], "dst_block_indices": [0]},
        LLMException,
        PARAM_INVALID,
    ),
    ("cache_to_blocks", LLMRole.PROMPT, {"dst_block_indices": [0]}, LLMException, PARAM_INVALID),
    (
        "cache_to_empty_blocks",
        LLMRole.PROMPT,
        {"dst_block_indices": []},
        LLMException,
        PARAM_INVALID,
    ),
    (
        "combination_before_synchronizer",
        LLMRole.PROMPT,
        {"dst_block_indices": [0], "layer_synchronizer": None},
        LLMException,
        PARAM_INVALID,
    ),
    # 6. layer_synchronizer
    ("sync_none", LLMRole.PROMPT, {"layer_synchronizer": None}, TypeError, None),
    ("sync_duck_typed", LLMRole.PROMPT, {"layer_synchronizer": DuckSync()}, TypeError, None),
    (
        "sync_before_block_size",
        LLMRole.PROMPT,
        {"layer_synchronizer": None, "dst_block_memory_size": 64},
        TypeError,
        None,
    ),
    # 7. transfer_configs
    ("configs_none", LLMRole.PROMPT, {"transfer_configs": None}, TypeError, None),
    ("configs_not_list", LLMRole.PROMPT, {"transfer_configs": "configs"}, TypeError, None),
    ("configs_elem", LLMRole.PROMPT, {"transfer_configs": [object()]}, TypeError, None),
    (
        "configs_before_block_size",
        LLMRole.PROMPT,
        {"transfer_configs": None, "dst_block_memory_size": 64},
        TypeError,
        None,
    ),
    # 8. dst_block_memory_size only with blocks
    (
        "block_size_without_blocks",
        LLMRole.PROMPT,
        {"dst_block_memory_size": 64},
        LLMException,
        PARAM_INVALID,
    ),
    # 9. even tensor count (before any per-config check)
    (
        "odd_tensors",
        LLMRole.PROMPT,
        {"src_cache": "odd", "transfer_configs": "bad_count"},
        LLMException,
        PARAM_INVALID,
    ),
    # 10. per config
    (
        "pa_batch_index",
        LLMRole.PROMPT,
        {
            "src_block_indices": [0],
            "dst_block_indices": [1],
            "transfer_configs": "batch1",
        },
        LLMException,
        PARAM_INVALID,
    ),
    (
        "range_beyond_layers",
        LLMRole.PROMPT,
        {"transfer_configs": "range2_5"},
        LLMException,
        PARAM_INVALID,
    ),
    (
        "dst_addrs_count",
        LLMRole.PROMPT,
        {"transfer_configs": "bad_count"},
        LLMException,
        PARAM_INVALID,
    ),
    (
        "dst_addrs_count_for_range",
        LLMRole.PROMPT,
        {"transfer_configs": "range1_3_eight_addrs"},
        LLMException,
        PARAM_INVALID,
    ),
]

_CONFIG_SETS = {
    "bad_count": lambda: [_config(7)],
    "batch1": lambda: [_config(8, None, 1)],
    "range2_5": lambda: [_config(6, range(2, 5))],
    "range1_3_eight_addrs": lambda: [_config(8, range(1, 3))],
}


def _call_args(overrides: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "src_cache": _cache(),
        "layer_synchronizer": Sync(),
        "transfer_configs": [_config()],
    }
    for key, value in overrides.items():
        if key == "src_cache" and value == "odd":
            value = _cache(7)
        if key == "transfer_configs" and isinstance(value, str) and value in _CONFIG_SETS:
            value = _CONFIG_SETS[value]()
        args[key] = value
    return args


@pytest.mark.parametrize(
    ("role", "overrides", "error", "code"),
    [case[1:] for case in VALIDATION_CASES],
    ids=[case[0] for case in VALIDATION_CASES],
)
def test_transfer_validation(
    role: LLMRole, overrides: dict[str, Any], error: type[Exception], code: Any
) -> None:
    manager, native = _manager(role)
    with pytest.raises(error) as info:
        manager.transfer_cache_async(**_call_args(overrides))
    assert type(info.value) is error
    if code is not None:
        assert info.value.status_code is code  # type: ignore[attr-defined]
    assert native.calls == [], "nothing may reach the native layer"


def test_transfer_valid_calls_reach_native() -> None:
    manager, native = _manager()
    sync = Sync()
    config = _config()
    assert config.src_layer_range is None
    task = manager.transfer_cache_async(_cache(), sync, (config,), None, None, 0)
    assert isinstance(task, CacheTask)
    # None is replaced in the caller's own TransferConfig object.
    assert config.src_layer_range == range(0, 4)
    (args, kwargs) = native.calls[0]
    assert args[0] == 5 and args[1] == 8 and args[2] == [4, 16]
    assert args[3] == DataType.DT_FLOAT16.value
    assert args[7] == [(2, list(config.dst_addrs), 0, 4, 0)]
    assert (args[8], args[9], args[10]) == ([], [], 0)
    assert kwargs == {
        "sync_timeout_ms": None,
        "unbounded": True,
        "exclusive": True,
        "dst_keys": [None],
    }
    # The synchronizer given to kvdist calls the user's with timeout None.
    assert args[6](3, 1000) is True
    assert sync.calls == [(3, None)]
    sync.answer = 0
    assert args[6](1, None) is False

    # Paged: equal-length non-empty index lists, dst_block_memory_size allowed.
    ranged = _config(4, range(1, 3))
    manager.transfer_cache_async(_cache(blocks=True), sync, [ranged], [0, 1], [2, 3], 4096)
    (args, _) = native.calls[1]
    assert args[7] == [(2, list(ranged.dst_addrs), 1, 3, 0)]
    assert (args[8], args[9], args[10]) == ([0, 1], [2, 3], 4096)


def test_transfer_replaces_ranges_config_by_config() -> None:
    manager, native = _manager()
    first, second = _config(), _config(3)
    with pytest.raises(LLMException):
        manager.transfer_cache_async(_cache(), Sync(), [first, second])
    assert first.src_layer_range == range(0, 4)
    assert second.src_layer_range == range(0, 4)
    assert native.calls == []


def test_empty_config_list_is_accepted() -> None:
    manager, native = _manager()
    task = manager.transfer_cache_async(_cache(), Sync(), [])
    assert task.synchronize() is LLMStatusCode.LLM_SUCCESS
    assert task.get_results() == []


def _host_cache(num_tensors: int = 8) -> KvCache:
    desc = CacheDesc(num_tensors, [4, 16], DataType.DT_FLOAT16, Placement.HOST)
    return KvCache.create_cpu_cache(desc, [0x20000 + 0x100 * i for i in range(num_tensors)])


# The KvCacheManager operations beyond the push: invalid calls fail as in
# the original, in its order, before kvdist is called; valid ones reach
# kvdist's native call named in the last field. Each case: (method, role,
# args, kwargs, exception or None, status code or native call).
P, D = LLMRole.PROMPT, LLMRole.DECODER
OP_CASES: list[tuple[str, LLMRole, tuple[Any, ...], dict[str, Any], Any, Any]] = [
    # pull_cache: the role before anything else
    ("pull_cache", P, (None, None), {}, LLMException, PARAM_INVALID),
    ("pull_cache", D, (CacheKey(1, 2), "c"), {}, TypeError, None),
    ("pull_cache", D, ("k", "c"), {}, TypeError, None),
    ("pull_cache", D, (CacheKey(1, 2), "host"), {}, LLMException, PARAM_INVALID),
    ("pull_cache", D, (CacheKey(1, 2), "cache", 0, 0), {}, LLMException, PARAM_INVALID),
    ("pull_cache", D, (CacheKey(1, 2), "cache", -1), {}, ValueError, None),
    ("pull_cache", D, (CacheKey(1, 2), "cache"), {"src_cache_offset": -1}, ValueError, None),
    ("pull_cache", D, (CacheKey(1, req_id=2**64 - 1), "cache"), {}, LLMException, PARAM_INVALID),
    ("pull_cache", D, (CacheKey(1, 2, 0, 3), "cache"), {}, LLMException, PARAM_INVALID),
    (
        "pull_cache",
        D,
        (CacheKey(1, 2), "cache"),
        {"tensor_num_per_layer": 0},
        LLMException,
        PARAM_INVALID,
    ),
    (
        "pull_cache",
        D,
        (CacheKey(1, 2), "cache"),
        {"src_layer_range": range(0, 4, 2)},
        LLMException,
        PARAM_INVALID,
    ),
    ("pull_cache", D, (CacheKey(1, 2), "cache"), {"dst_layer_range": [0, 1]}, TypeError, None),
    ("pull_cache", D, (CacheKey(1, 2), "cache"), {}, None, "pull"),
    ("pull_cache", D, (llm_datadist.CacheKeyByIdAndIndex(1, 5), "cache", 0, 64), {}, None, "pull"),
    # pull_blocks
    ("pull_blocks", P, (None, None, [], []), {}, LLMException, PARAM_INVALID),
    ("pull_blocks", D, (CacheKey(1, 2), "cache", [0], [0]), {}, TypeError, None),
    ("pull_blocks", D, ("bkey", "cache", (0,), [0]), {}, TypeError, None),
    ("pull_blocks", D, ("bkey", "host", [0], [0]), {}, LLMException, PARAM_INVALID),
    ("pull_blocks", D, ("bkey", "cache", [], []), {}, LLMException, PARAM_INVALID),
    ("pull_blocks", D, ("bkey", "cache", [0, 1], [0]), {}, LLMException, PARAM_INVALID),
    ("pull_blocks", D, ("bkey", "cache", [0], [0]), {"tensor_num_per_layer": -1}, ValueError, None),
    ("pull_blocks", D, ("bkey", "cache", [0], [0]), {}, None, "pull"),
    # copy_cache (no role)
    ("copy_cache", P, ("host", "cache"), {}, LLMException, PARAM_INVALID),
    ("copy_cache", D, ("cache", "host"), {}, LLMException, PARAM_INVALID),
    ("copy_cache", P, ("cache", "cache", -1), {}, ValueError, None),
    ("copy_cache", P, ("cache", "cache", 0, 0, 0, 0), {}, LLMException, PARAM_INVALID),
    ("copy_cache", P, ("cache", "cache", 0, 0, 0, -1, "r"), {}, TypeError, None),
    ("copy_cache", P, ("cache", "cache"), {}, None, "copy_cache"),
    # copy_blocks
    ("copy_blocks", P, ("cache", {0: 1}), {}, TypeError, None),
    ("copy_blocks", P, ("host", {0: [1]}), {}, LLMException, PARAM_INVALID),
    ("copy_blocks", P, ("cache", {0: [-1]}), {}, ValueError, None),
    ("copy_blocks", D, ("cache", {0: [1, 2]}), {}, None, "copy_blocks"),
    # swap_blocks: block size, tensor count, indices, then direction
    ("swap_blocks", P, ("cache", "cache8x2", {0: 1}), {}, LLMException, PARAM_INVALID),
    ("swap_blocks", P, ("cache", "cache4", {0: 1}), {}, LLMException, PARAM_INVALID),
    ("swap_blocks", P, ("cache", "host", {4: 0}), {}, LLMException, PARAM_INVALID),
    ("swap_blocks", P, ("cache", "cache", {0: 1}), {}, LLMException, PARAM_INVALID),
    ("swap_blocks", P, ("host", "cache", {0: 1}), {}, None, "swap_blocks"),
    ("swap_blocks", P, ("cache", "host", {3: 0}), {}, None, "swap_blocks"),
    # remove_cache_key: role first
    ("remove_cache_key", D, (None,), {}, LLMException, PARAM_INVALID),
    ("remove_cache_key", P, ("bkey",), {}, TypeError, None),
    ("remove_cache_key", P, (CacheKey(1, 2),), {}, None, "remove_key"),
    # get_cache_tensors
    ("get_cache_tensors", P, ("cache", -1), {}, LLMException, PARAM_INVALID),
    ("get_cache_tensors", P, ("cache", 8), {}, LLMException, PARAM_INVALID),
    ("get_cache_tensors", P, ("cache", 2**31), {}, ValueError, None),
    ("get_cache_tensors", P, ("cache", 7), {}, None, "read_tensor"),
]


_OP_ARGS: dict[str, Any] = {
    "cache": lambda: _cache(),
    "host": lambda: _host_cache(),
    "cache4": lambda: _cache(4),
    "cache8x2": lambda: KvCache(6, CacheDesc(8, [2, 16], DataType.DT_FLOAT16), [[0] * 8], None),
    "bkey": lambda: llm_datadist.BlocksCacheKey(1),
}


def _op_arg(value: Any) -> Any:
    """Names in OP_CASES stand for fresh caches and keys."""
    return _OP_ARGS[value]() if isinstance(value, str) and value in _OP_ARGS else value


@pytest.mark.parametrize(
    "method, role, args, kwargs, error, code",
    OP_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(OP_CASES)],
)
def test_operations_check_as_the_original(
    method: str, role: LLMRole, args: tuple, kwargs: dict, error: Any, code: Any
) -> None:
    manager, native = _manager(role)
    call_args = [_op_arg(a) for a in args]
    if error is None:
        getattr(manager, method)(*call_args, **kwargs)
        assert native.names == [code]
        return
    with pytest.raises(error) as info:
        getattr(manager, method)(*call_args, **kwargs)
    if code is not None:
        assert info.value.status_code is code, str(info.value)  # type: ignore[attr-defined]
    assert native.calls == [] and native.names == []


# ---- CacheTask over a fake task ---------------------------------------------


def test_cache_task_results_and_synchronize() -> None:
    fake = FakeTask([0, int(PARAM_INVALID), None])
    task = CacheTask(fake, 3)
    assert task.get_results() == [LLMStatusCode.LLM_SUCCESS, PARAM_INVALID, None]
    assert task.synchronize() is PARAM_INVALID
    assert task.get_results(0) == task.get_results(10)
    assert task.result_message(1) == "message 1"
    assert CacheTask(FakeTask([None, None]), 2).synchronize() is LLMStatusCode.LLM_SUCCESS


def test_cache_task_while_running() -> None:
    fake = FakeTask([0, 0], running=True)
    task = CacheTask(fake, 2)
    wait = LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT
    assert task.get_results(5) == [wait, wait]
    assert task.synchronize(5) is wait
    assert fake.timeouts == [5, 5]


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(1.5, TypeError), ("10", TypeError), (-1, ValueError), (2**32, ValueError)],
)
def test_cache_task_timeout_checks(timeout: Any, error: type[Exception]) -> None:
    task = CacheTask(FakeTask([0]), 1)
    with pytest.raises(error):
        task.get_results(timeout)
    with pytest.raises(error):
        task.synchronize(timeout)
    assert task.get_results(2**32 - 1) == [LLMStatusCode.LLM_SUCCESS]


def test_tensor_types() -> None:
    np = pytest.importorskip("numpy")
    desc = llm_datadist.TensorDesc(DataType.DT_FLOAT, [2])
    tensor = llm_datadist.Tensor(np.zeros(2, dtype=np.float32))
    assert tensor.tensor_desc.dtype is DataType.DT_FLOAT and desc.shape == [2]
    assert tensor.numpy(copy=True).tolist() == [0.0, 0.0]
    # As the original: a desc of another type, non-contiguous data and an
    # unsupported dtype are RuntimeErrors (nothing is copied); an int is an
    # engine tensor id, with no host data here.
    with pytest.raises(RuntimeError, match="dtype"):
        llm_datadist.Tensor(np.zeros(2, dtype=np.float16), desc)
    with pytest.raises(RuntimeError, match="c_contiguous"):
        llm_datadist.Tensor(np.zeros((4, 4), dtype=np.float32)[:, ::2])
    with pytest.raises(RuntimeError, match="not valid"):
        llm_datadist.Tensor(np.zeros(2, dtype=np.complex64))
    by_id = llm_datadist.Tensor(5, desc)
    assert by_id.tensor_desc is desc
    with pytest.raises(RuntimeError, match="engine tensor id"):
        by_id.numpy()
    with pytest.raises(TypeError):
        llm_datadist.Tensor([1.0, 2.0])  # type: ignore[arg-type]
    assert llm_datadist.Tensor(tensor).numpy() is tensor.numpy()


def test_threading_is_not_needed_for_validation() -> None:
    before = threading.active_count()
    manager, _ = _manager()
    with pytest.raises(LLMException):
        manager.transfer_cache_async(_cache(7), Sync(), [_config()])
    assert threading.active_count() == before


# ---- CacheManager mode: the original's checks, in its order -----------------

_CM_DESC = CacheDesc(4, [2, 16], DataType.DT_FLOAT16)
_CM_HOST = CacheDesc(4, [2, 16], DataType.DT_FLOAT16, Placement.HOST)
_CM_ARGS: dict[str, Any] = {
    "cache": lambda: llm_datadist.Cache(7, _CM_DESC, [0x1000 + 0x100 * i for i in range(4)]),
    "blocks": lambda: llm_datadist.Cache(
        8, _CM_DESC, [0x2000 + 0x100 * i for i in range(4)], is_blocks_cache=True
    ),
    "host": lambda: llm_datadist.Cache.create_cpu_cache(
        _CM_HOST, [0x3000 + 0x100 * i for i in range(4)]
    ),
    "id": lambda: llm_datadist.CacheKeyByIdAndIndex(2, 9, 1),
    "bkey": lambda: llm_datadist.BlocksCacheKey(2, 3),
    "sync": lambda: Sync(),
}
_POOLS = {"llm.MemPoolConfig": '{"memory_size": 1048576}'}
_REMOTE = {**_POOLS, "llm.EnableRemoteCacheAccessible": "1"}
# (options, method, args, kwargs, exception or None, status code or native call)
CM_CASES: list[tuple[dict[str, str], str, tuple[Any, ...], dict[str, Any], Any, Any]] = [
    # allocation: types, tensor count, then a pool for the placement
    (_POOLS, "allocate_cache", ("desc",), {}, TypeError, None),
    (
        _POOLS,
        "allocate_cache",
        (CacheDesc(0, [2], DataType.DT_FLOAT16),),
        {},
        LLMException,
        PARAM_INVALID,
    ),
    ({}, "allocate_cache", (_CM_DESC,), {}, LLMException, PARAM_INVALID),
    (_POOLS, "allocate_cache", (_CM_HOST,), {}, LLMException, PARAM_INVALID),
    (_POOLS, "allocate_cache", (_CM_DESC, [CacheKey(1, 2)]), {}, None, "allocate"),
    (_POOLS, "allocate_blocks_cache", (_CM_DESC, "id"), {}, TypeError, None),
    (_POOLS, "allocate_blocks_cache", (_CM_DESC, "bkey"), {}, None, "allocate"),
    # registration
    (_POOLS, "register_cache", (_CM_DESC, []), {}, LLMException, PARAM_INVALID),
    (_POOLS, "register_cache", (_CM_DESC, [1, 2, 3]), {}, LLMException, PARAM_INVALID),
    (_POOLS, "register_cache", (_CM_DESC, [1, 2, 0, 4]), {}, LLMException, PARAM_INVALID),
    (_POOLS, "register_cache", (_CM_DESC, [1, 2, 3, 4], (), 1), {}, TypeError, None),
    (_POOLS, "unregister_cache", ("7",), {}, TypeError, None),
    (_POOLS, "unregister_cache", (7,), {}, None, "deallocate"),
    # freeing: the kind of cache each takes
    (_POOLS, "deallocate_cache", ("blocks",), {}, LLMException, PARAM_INVALID),
    (_POOLS, "deallocate_blocks_cache", ("cache",), {}, LLMException, PARAM_INVALID),
    (_POOLS, "deallocate_blocks_cache", ("blocks",), {}, None, "deallocate"),
    # pulls: key type by mode, cache, batch, size, kind, per-layer count, ids
    (_REMOTE, "pull_cache", (CacheKey(2, 1), "cache"), {}, TypeError, None),
    (_POOLS, "pull_cache", (CacheKey(2, 1), "cache"), {}, None, "pull"),
    (_POOLS, "pull_cache", ("id", "cache", -1), {}, ValueError, None),
    (_POOLS, "pull_cache", ("id", "blocks"), {}, LLMException, PARAM_INVALID),
    (_POOLS, "pull_cache", ("id", "cache", 0, 0), {}, LLMException, PARAM_INVALID),
    (
        _POOLS,
        "pull_cache",
        ("id", "cache"),
        {"tensor_num_per_layer": 0},
        LLMException,
        PARAM_INVALID,
    ),
    (_POOLS, "pull_cache", (CacheKey(2, 2**64 - 1), "cache"), {}, LLMException, PARAM_INVALID),
    (
        _REMOTE,
        "pull_cache",
        ("id", "cache"),
        {"src_layer_range": range(0, 2, 2)},
        LLMException,
        PARAM_INVALID,
    ),
    (_REMOTE, "pull_cache", ("id", "cache"), {}, None, "pull"),
    (_POOLS, "pull_blocks", ("bkey", "cache", [0], [1]), {}, LLMException, PARAM_INVALID),
    (_POOLS, "pull_blocks", ("bkey", "blocks", [0], []), {}, LLMException, PARAM_INVALID),
    (_POOLS, "pull_blocks", ("bkey", "blocks", [], [1]), {}, LLMException, PARAM_INVALID),
    (_POOLS, "pull_blocks", ("bkey", "blocks", [0, 1], [1]), {}, LLMException, PARAM_INVALID),
    (_POOLS, "pull_blocks", ("bkey", "blocks", [0], [1]), {}, None, "pull"),
    # pushes: remote access first, then key and cache types, ranges, size
    (_POOLS, "push_cache", ("id", "cache"), {}, LLMException, PARAM_INVALID),
    (_REMOTE, "push_cache", ("bkey", "cache"), {}, TypeError, None),
    (_REMOTE, "push_cache", ("id", "blocks"), {}, LLMException, PARAM_INVALID),
    (
        _REMOTE,
        "push_cache",
        ("id", "cache"),
        {"src_layer_range": range(1, 1)},
        LLMException,
        PARAM_INVALID,
    ),
    (
        _REMOTE,
        "push_cache",
        ("id", "cache"),
        {"dst_layer_range": range(0, 1)},
        LLMException,
        PARAM_INVALID,
    ),
    (_REMOTE, "push_cache", ("id", "cache"), {"size": 64}, LLMException, PARAM_INVALID),
    (_REMOTE, "push_cache", ("id", "cache"), {}, None, "push"),
    (_POOLS, "push_blocks", ("bkey", "blocks", [0], [1]), {}, LLMException, PARAM_INVALID),
    (_REMOTE, "push_blocks", ("bkey", "cache", [0], [1]), {}, LLMException, PARAM_INVALID),
    (_REMOTE, "push_blocks", ("bkey", "blocks", [0], []), {}, LLMException, PARAM_INVALID),
    (_REMOTE, "push_blocks", ("bkey", "blocks", [0], [1]), {}, None, "push"),
    # transfer_cache_async: source, blocks, synchronizer, config type by mode
    (_REMOTE, "transfer_cache_async", ("host", "sync", []), {}, LLMException, PARAM_INVALID),
    (_REMOTE, "transfer_cache_async", ("cache", "sync", [], [0]), {}, LLMException, PARAM_INVALID),
    (
        _REMOTE,
        "transfer_cache_async",
        ("cache", "sync", [], None, [0]),
        {},
        LLMException,
        PARAM_INVALID,
    ),
    (_REMOTE, "transfer_cache_async", ("cache", None, []), {}, TypeError, None),
    (
        _REMOTE,
        "transfer_cache_async",
        ("cache", "sync", [TransferConfig(2, [1, 2, 3, 4])]),
        {},
        TypeError,
        None,
    ),
    (
        _POOLS,
        "transfer_cache_async",
        ("cache", "sync", [TransferConfig(2, [1, 2, 3, 4])]),
        {},
        None,
        "transfer",
    ),
    # local operations
    (_POOLS, "copy_cache", ("blocks", "cache"), {}, LLMException, PARAM_INVALID),
    (_POOLS, "copy_cache", ("cache", "cache", 0, 0, 0, 0), {}, LLMException, PARAM_INVALID),
    (_POOLS, "copy_cache", ("cache", "cache"), {}, None, "copy_cache"),
    (_POOLS, "copy_blocks", ("cache", {0: [1]}), {}, LLMException, PARAM_INVALID),
    (_POOLS, "copy_blocks", ("blocks", {0: [1]}), {}, None, "copy_blocks"),
    (_POOLS, "swap_blocks", ("cache", "host", {0: 1}), {}, LLMException, PARAM_INVALID),
    (_POOLS, "swap_blocks", ("host", "blocks", {0: 1}), {}, None, "swap_blocks"),
    (_POOLS, "remap_registered_memory", ("x",), {}, LLMException, PARAM_INVALID),
]


def _cm_arg(value: Any) -> Any:
    return _CM_ARGS[value]() if isinstance(value, str) and value in _CM_ARGS else value


@pytest.mark.parametrize(
    "options, method, args, kwargs, error, code",
    CM_CASES,
    ids=[f"{c[1]}-{i}" for i, c in enumerate(CM_CASES)],
)
def test_cache_manager_mode_checks_as_the_original(
    options: dict[str, str], method: str, args: tuple, kwargs: dict, error: Any, code: Any
) -> None:
    native = FakeNative()
    manager = llm_datadist.cache_manager.CacheManager(native, options)
    call_args = [_cm_arg(a) for a in args]
    if error is None:
        getattr(manager, method)(*call_args, **{k: _cm_arg(v) for k, v in kwargs.items()})
        assert native.names == [code] or (code == "transfer" and len(native.calls) == 1)
        return
    with pytest.raises(error) as info:
        getattr(manager, method)(*call_args, **{k: _cm_arg(v) for k, v in kwargs.items()})
    if code is not None:
        assert info.value.status_code is code, str(info.value)  # type: ignore[attr-defined]
    assert native.calls == [] and native.names == []
