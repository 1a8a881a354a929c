"""llm_datadist over kvdist's engine: init rules, managers, allocation, links.

Every test here initialises at most one LLMDataDist at a time in this
process and finalises it, as the original's one-per-process rule requires.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import kvdist
import pytest

pytest.importorskip("kvdist._kvdist")

import llm_datadist  # noqa: E402
from helpers.llm_helpers import child_env, free_port  # noqa: E402
from llm_datadist import (  # noqa: E402
    CacheDesc,
    DataType,
    KvCache,
    LayerSynchronizer,
    LLMClusterInfo,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    Placement,
    TransferConfig,
)

os.environ.setdefault("UCX_NET_DEVICES", "lo")
PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID


def _options(device: bool = True, listen: str | None = None) -> dict[str, str]:
    config = LLMConfig()
    if device:
        config.device_id = 0
    if listen is not None:
        config.listen_ip_info = listen
    return config.generate_options()


@pytest.fixture
def decoder() -> Iterator[LLMDataDist]:
    datadist = LLMDataDist(LLMRole.DECODER, 20)
    datadist.init(_options())
    yield datadist
    datadist.finalize()


def _cluster(cluster_id: int, port: int, ip: str = "127.0.0.1") -> LLMClusterInfo:
    info = LLMClusterInfo()
    info.remote_cluster_id = cluster_id
    info.append_remote_ip_info(ip, port)
    return info


class Sync(LayerSynchronizer):
    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        return True


def test_runtime_error_before_init() -> None:
    datadist = LLMDataDist(LLMRole.DECODER, 1)
    assert datadist.cluster_id == 1
    calls = [
        lambda: datadist.link_clusters([]),
        lambda: datadist.unlink_clusters([]),
        lambda: datadist.check_link_status(2),
        lambda: datadist.switch_role(LLMRole.PROMPT),
        lambda: datadist.kv_cache_manager,
        lambda: datadist.cache_manager,
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="llm datadist is not initialized") as info:
            call()
        assert not isinstance(info.value, LLMException)
    datadist.finalize()  # finalize before init: a no-op


def test_constructor_checks() -> None:
    with pytest.raises(TypeError):
        LLMDataDist(1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LLMDataDist(LLMRole.PROMPT, -1)
    with pytest.raises(TypeError):
        LLMDataDist(LLMRole.PROMPT, "1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("role", "options", "error", "code", "text"),
    [
        (LLMRole.DECODER, {}, LLMException, PARAM_INVALID, "ge.exec.deviceId"),
        (LLMRole.PROMPT, _options(), LLMException, PARAM_INVALID, "llm.listenIpInfo"),
        (LLMRole.DECODER, None, TypeError, None, "options"),
        (LLMRole.DECODER, [("ge.exec.deviceId", "0")], TypeError, None, "options"),
        (
            LLMRole.DECODER,
            {**_options(), "ge.flowGraphMemMaxSize": "12a"},
            LLMException,
            PARAM_INVALID,
            "ge.flowGraphMemMaxSize",
        ),
        (
            LLMRole.DECODER,
            {**_options(), "ge.flowGraphMemMaxSize": "1,2"},
            LLMException,
            PARAM_INVALID,
            "ge.flowGraphMemMaxSize",
        ),
        # CacheManager mode runs; kvdist is the transport whatever the
        # backend, so only the original's one other value is accepted.
        (
            LLMRole.DECODER,
            {
                **_options(),
                "llm.EnableCacheManager": "1",
                "llm.TransferBackend": "nccl",
                "llm.listenIpInfo": "127.0.0.1:0",
            },
            LLMException,
            PARAM_INVALID,
            "llm.TransferBackend",
        ),
        # As the original: refused without CacheManager mode.
        (
            LLMRole.DECODER,
            {**_options(), "llm.TransferBackend": "hixl"},
            LLMException,
            PARAM_INVALID,
            "llm.TransferBackend is not supported when llm.EnableCacheManager",
        ),
        (
            LLMRole.DECODER,
            {**_options(), "llm.LocalCommRes": "{}", "llm.EnableCacheManager": "0"},
            LLMException,
            PARAM_INVALID,
            "llm.LocalCommRes is not supported when llm.EnableCacheManager",
        ),
        (
            LLMRole.DECODER,
            {**_options(), "llm.TransferBackend": "hixl", "llm.EnableCacheManager": "1"},
            LLMException,
            PARAM_INVALID,
            "llm.listenIpInfo is not configured",
        ),
    ],
)
def test_init_option_errors(
    role: LLMRole, options: Any, error: type[Exception], code: Any, text: str
) -> None:
    datadist = LLMDataDist(role, 3)
    with pytest.raises(error, match=text) as info:
        datadist.init(options)
    if code is not None:
        assert info.value.status_code is code  # type: ignore[attr-defined]
    assert LLMDataDist.llm_engine_instance is None
    # A failed init leaves the instance usable for a correct one.
    listen = f"127.0.0.1:{free_port()}" if role == LLMRole.PROMPT else None
    datadist.init(_options(listen=listen))
    datadist.finalize()


def test_one_listen_address_per_device_as_the_original() -> None:
    first, second = free_port(), free_port()
    prompt = LLMDataDist(LLMRole.PROMPT, 1)
    two = f"127.0.0.1:{first};127.0.0.1:{second}"
    with pytest.raises(LLMException, match="not equal to device num") as info:
        prompt.init(
            {**_options(), "ge.exec.deviceId": "0;1", "llm.listenIpInfo": f"127.0.0.1:{first}"}
        )
    assert info.value.status_code is PARAM_INVALID
    with pytest.raises(LLMException, match="not equal to device num"):
        prompt.init({**_options(), "llm.listenIpInfo": two})
    prompt.init({**_options(), "ge.exec.deviceId": "0;1", "llm.listenIpInfo": two})
    try:
        # The first device's address serves: a DECODER links to it.
        with kvdist.DataDist("decoder", 2) as decoder:
            decoder.link(1, "127.0.0.1", first)
    finally:
        prompt.finalize()


def test_cluster_info_makes_the_device_id_optional() -> None:
    port = free_port()
    info = json.dumps({"cluster_id": 1, "listen_ip_info": [{"ip": "127.0.0.1", "port": port}]})
    prompt = LLMDataDist(LLMRole.PROMPT, 1)
    prompt.init({"llm.ClusterInfo": info})  # no ge.exec.deviceId: accepted, as the original
    try:
        with kvdist.DataDist("decoder", 2) as decoder:
            decoder.link(1, "127.0.0.1", port)
    finally:
        prompt.finalize()


def test_one_initialised_datadist_per_process() -> None:
    first = LLMDataDist(LLMRole.DECODER, 1)
    second = LLMDataDist(LLMRole.DECODER, 2)
    first.init(_options())
    try:
        first.init(_options())  # a no-op on the initialised instance
        with pytest.raises(LLMException, match="Cannot init multiple LLMDataDists") as info:
            second.init(_options())
        assert info.value.status_code is LLMStatusCode.LLM_FAILED
        assert LLMDataDist.llm_engine_instance is first
    finally:
        first.finalize()
    first.finalize()  # idempotent
    assert LLMDataDist.llm_engine_instance is None
    second.init(_options())
    assert LLMDataDist.llm_engine_instance is second
    second.finalize()


def test_managers_and_role_calls(decoder: LLMDataDist) -> None:
    manager = decoder.kv_cache_manager
    assert isinstance(manager, llm_datadist.KvCacheManager)
    assert manager.is_initialized()
    with pytest.raises(LLMException, match="llm.EnableCacheManager") as info:
        _ = decoder.cache_manager
    assert info.value.status_code is PARAM_INVALID
    for call in (
        lambda: decoder.link("comm", {1: 0, 2: 1}, "{}"),
        lambda: decoder.unlink(1),
        lambda: decoder.query_register_mem_status(1),
    ):
        with pytest.raises(LLMException) as info:
            call()
        assert info.value.status_code is PARAM_INVALID
    with pytest.raises(LLMException) as info:
        decoder.switch_role(LLMRole.DECODER)
    assert info.value.status_code is PARAM_INVALID
    with pytest.raises(LLMException) as info:
        decoder.switch_role(LLMRole.PROMPT)
    assert info.value.status_code is PARAM_INVALID
    with pytest.raises(LLMException) as info:
        decoder.switch_role(LLMRole.PROMPT, {"llm.listenIpInfo": "300.1.1.1:1"})
    assert info.value.status_code is PARAM_INVALID
    assert decoder.kv_cache_manager._role is LLMRole.DECODER
    with pytest.raises(TypeError):
        decoder.switch_role(2)  # type: ignore[arg-type]


def test_allocate_and_deallocate(decoder: LLMDataDist) -> None:
    manager = decoder.kv_cache_manager
    desc = CacheDesc(4, [2, 8, 16], DataType.DT_FLOAT16)
    cache = manager.allocate_cache(desc)
    assert isinstance(cache, KvCache) and cache.cache_desc is desc
    addrs = cache.per_device_tensor_addrs
    assert len(addrs) == 1 and len(addrs[0]) == 4
    for i, addr in enumerate(addrs[0]):  # host memory the process can use directly
        ctypes.memset(addr, i + 1, desc.size)
    for i, addr in enumerate(addrs[0]):
        assert ctypes.string_at(addr, desc.size) == bytes([i + 1]) * desc.size
    blocks = manager.allocate_blocks_cache(CacheDesc(2, [16, 64], DataType.DT_INT8))
    assert blocks.is_blocks_cache and len(blocks.per_device_tensor_addrs[0]) == 2
    manager.deallocate_cache(cache)
    assert cache.per_device_tensor_addrs == []  # as the original
    manager.deallocate_cache(cache)  # already freed: a no-op
    manager.deallocate_cache(blocks)

    host = KvCache.create_cpu_cache(CacheDesc(2, [4], DataType.DT_INT8, Placement.HOST), [1, 2])
    with pytest.raises(LLMException) as info:
        manager.deallocate_cache(host)
    assert info.value.status_code is PARAM_INVALID
    cases = [
        (lambda: manager.allocate_cache(CacheDesc(0, [4], DataType.DT_INT8)), LLMException),
        (
            lambda: manager.allocate_cache(CacheDesc(2, [4], DataType.DT_INT8, Placement.HOST)),
            LLMException,
        ),
        (
            lambda: manager.allocate_cache(
                CacheDesc(2, [4], DataType.DT_INT8), [llm_datadist.CacheKey(1, 2)]
            ),
            LLMException,
        ),
        (
            lambda: manager.allocate_blocks_cache(
                CacheDesc(2, [4], DataType.DT_INT8), llm_datadist.BlocksCacheKey(1)
            ),
            LLMException,
        ),
        (lambda: manager.allocate_cache(None), TypeError),
        (lambda: manager.allocate_cache(CacheDesc(2, [4], DataType.DT_INT8), [1]), TypeError),
        (lambda: manager.deallocate_cache(None), TypeError),
    ]
    for call, error in cases:
        with pytest.raises(error) as raised:
            call()
        if error is LLMException:
            assert raised.value.status_code is PARAM_INVALID  # type: ignore[attr-defined]


def test_native_errors_become_llm_exceptions(decoder: LLMDataDist) -> None:
    manager = decoder.kv_cache_manager
    with pytest.raises(LLMException) as info:
        manager.allocate_cache(CacheDesc(2, [1 << 40], DataType.DT_FLOAT))
    status = info.value.status_code
    assert status is not LLMStatusCode.LLM_SUCCESS
    assert str(info.value).startswith(f"[allocate_cache] failed, error code is {status}, ")
    assert str(info.value).endswith(".")


def test_transfer_is_prompt_only(decoder: LLMDataDist) -> None:
    manager = decoder.kv_cache_manager
    cache = manager.allocate_cache(CacheDesc(2, [1, 8], DataType.DT_INT8))
    with pytest.raises(LLMException, match="LLMRole.DECODER") as info:
        manager.transfer_cache_async(cache, Sync(), [TransferConfig(1, [1, 2])])
    assert info.value.status_code is PARAM_INVALID
    manager.deallocate_cache(cache)


def test_kv_cache_del_deallocates(decoder: LLMDataDist) -> None:
    native = decoder._native
    base = native.pool_bytes_in_use()
    cache = decoder.kv_cache_manager.allocate_cache(CacheDesc(2, [1, 4096], DataType.DT_INT8))
    assert native.pool_bytes_in_use() >= base + 2 * 4096
    del cache
    gc.collect()
    assert native.pool_bytes_in_use() == base


def test_manager_after_finalize() -> None:
    datadist = LLMDataDist(LLMRole.DECODER, 9)
    datadist.init(_options())
    manager = datadist.kv_cache_manager
    cache = manager.allocate_cache(CacheDesc(2, [1, 8], DataType.DT_INT8))
    datadist.finalize()
    assert not manager.is_initialized()
    with pytest.raises(LLMException) as info:
        manager.allocate_cache(CacheDesc(2, [1, 8], DataType.DT_INT8))
    assert info.value.status_code is LLMStatusCode.LLM_ENGINE_FINALIZED
    with pytest.raises(RuntimeError):
        _ = datadist.kv_cache_manager
    del cache  # __del__ after finalize: nothing to do, no error
    gc.collect()


def test_link_arguments_and_failures(decoder: LLMDataDist) -> None:
    for kwargs, error in [
        ({"timeout": 0}, LLMException),
        ({"timeout": "1000"}, TypeError),
        ({"timeout": 2**31}, ValueError),
        ({"clusters": [object()]}, TypeError),
        ({"clusters": None}, TypeError),
    ]:
        args: dict[str, Any] = {"clusters": [], "timeout": 1000, **kwargs}
        with pytest.raises(error):
            decoder.link_clusters(**args)
        with pytest.raises(error):
            decoder.unlink_clusters(**args)
    with pytest.raises(TypeError):
        decoder.unlink_clusters([], force=1)  # type: ignore[arg-type]
    # Nobody listens there: codes are returned, not raised.
    ret, rets = decoder.link_clusters([_cluster(5, free_port())], timeout=500)
    assert ret is not LLMStatusCode.LLM_SUCCESS and len(rets) == 1
    assert rets[0] is not LLMStatusCode.LLM_SUCCESS and isinstance(rets[0], LLMStatusCode)
    # No remote address at all.
    empty = LLMClusterInfo()
    empty.remote_cluster_id = 6
    ret, rets = decoder.link_clusters([empty], timeout=500)
    assert ret is not LLMStatusCode.LLM_SUCCESS and rets[0] is not LLMStatusCode.LLM_SUCCESS
    with pytest.raises(LLMException) as info:
        decoder.check_link_status(5)
    assert info.value.status_code is not LLMStatusCode.LLM_SUCCESS
    assert str(info.value).startswith("[check_link_status] failed, error code is ")
    with pytest.raises(ValueError):
        decoder.check_link_status(-1)


def test_atexit_finalizes() -> None:
    code = (
        "from llm_datadist import *\n"
        "c = LLMConfig(); c.device_id = 0\n"
        "d = LLMDataDist(LLMRole.DECODER, 1); d.init(c.generate_options())\n"
        "d.kv_cache_manager.allocate_cache(CacheDesc(2, [1, 8], DataType.DT_INT8))\n"
        "print('exiting')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exiting"
