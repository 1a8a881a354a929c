"""CacheManager mode end to end: this process and a peer process, each an
``LLMDataDist`` with ``llm.EnableCacheManager``; the peer links to this
process, then both pull from and push into each other's caches. Bytes are
compared against the patterns each side wrote.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kvdist._kvdist")

from helpers.llm_helpers import (
    HELPERS_DIR,
    child_env,
    free_port,
    pattern,
    run_script,
    write_bytes,
)
from llm_datadist import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    DataType,
    LayerSynchronizer,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    MemInfo,
    Memtype,
    Placement,
    TransferConfig,
    TransferWithCacheKeyConfig,
)

os.environ.setdefault("UCX_NET_DEVICES", "lo")

HERE, PEER = 1, 2
DESC = CacheDesc(4, [2, 8, 64], DataType.DT_FLOAT16)  # 2 layers, batch 2 (1 KiB slices)
SLICE = DESC.size // 2
BLOCKS = CacheDesc(4, [8, 2, 64], DataType.DT_FLOAT16)  # 8 blocks of 256 B
BLOCK = BLOCKS.size // 8
POOL = json.dumps({"memory_size": 64 << 20, "page_shift": 16})
PEER_DESC = {"desc": {"num_tensors": 4, "shape": [2, 8, 64], "dtype": "DT_FLOAT16"}}
PEER_BLOCKS = {"desc": {"num_tensors": 4, "shape": [8, 2, 64], "dtype": "DT_FLOAT16"}}


class Peer:
    """The other LLMDataDist (cluster 2 unless given), driven over JSON lines."""

    def __init__(self, options: dict[str, str], cluster_id: int = PEER) -> None:
        spec = {"cluster_id": cluster_id, "options": options}
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS_DIR / "cache_manager_peer.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self._read() == {"ready": True}

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"peer exited (rc={self.proc.poll()})"
        return json.loads(line)

    def send(self, **command: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.send(cmd="call", method=method, args=list(args), kwargs=kwargs)

    def dump(self, cache: int) -> list[bytes]:
        return [base64.b64decode(t) for t in self.send(cmd="dump", cache=cache)["ok"]]

    def close(self) -> None:
        try:
            self.send(cmd="quit")
        except (AssertionError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _options(remote_access: bool, listen: str = "") -> dict[str, str]:
    config = LLMConfig()
    config.enable_cache_manager = True
    config.mem_pool_cfg = POOL
    config.host_mem_pool_cfg = POOL
    if remote_access:
        config.enable_remote_cache_accessible = True
    if listen:
        config.listen_ip_info = listen
    return config.generate_options()


def _filled(cache: Cache, seed: int) -> Cache:
    for t, addr in enumerate(cache.tensor_addrs):
        write_bytes(addr, pattern(t, cache.cache_desc.size, seed))
    return cache


def _tensor(cache: Cache, t: int) -> bytes:
    return ctypes.string_at(cache.tensor_addrs[t], cache.cache_desc.size)


@pytest.fixture(scope="module", params=[False, True], ids=["pull-by-key", "remote-access"])
def pair(request: Any) -> Iterator[tuple[LLMDataDist, Peer, bool]]:
    remote_access = bool(request.param)
    port = free_port()
    here = LLMDataDist(LLMRole.PROMPT, HERE)
    here.init(_options(remote_access, f"127.0.0.1:{port}"))
    peer = Peer(_options(remote_access))
    try:
        answer = peer.call("link_clusters", {"cluster": [HERE, "127.0.0.1", port]}, 5000)
        assert answer == {"ok": [0, [0]]}, answer
        yield here, peer, remote_access
    finally:
        peer.close()
        here.finalize()


def test_mode_gates_and_pools(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, _, _ = pair
    with pytest.raises(LLMException) as info:
        _ = here.kv_cache_manager
    assert info.value.status_code is LLMStatusCode.LLM_PARAM_INVALID
    manager = here.cache_manager
    host = manager.allocate_cache(CacheDesc(2, [4], DataType.DT_INT32, Placement.HOST))
    assert len(host.tensor_addrs) == 2
    manager.deallocate_cache(host)
    assert host.tensor_addrs == []
    blocks = manager.allocate_blocks_cache(BLOCKS)
    with pytest.raises(LLMException):
        manager.deallocate_cache(blocks)  # a blocks cache goes with deallocate_blocks_cache
    manager.deallocate_blocks_cache(blocks)
    manager.remap_registered_memory(MemInfo(Memtype.MEM_TYPE_DEVICE, 0x1000, 64))
    with pytest.raises(LLMException):
        manager.remap_registered_memory(MemInfo(Memtype.MEM_TYPE_HOST, 0x1000, 64))


def test_peer_pulls_from_the_listener(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, peer, remote_access = pair
    manager = here.cache_manager
    src = _filled(manager.allocate_cache(DESC, [CacheKey(HERE, 70), CacheKey(HERE, 71)]), 1)
    dst = peer.call("allocate_cache", PEER_DESC)["ok"]["index"]
    if remote_access:
        # Remote access: by cache id only, and keys are not used up.
        bad = peer.call("pull_cache", {"key": ["req", HERE, 71]}, {"cache": dst})
        assert bad["type"] == "TypeError"
        key = {"key": ["id", HERE, src.cache_id, 1]}
        assert peer.call("pull_cache", key, {"cache": dst}) == {"ok": None}
        assert peer.call("pull_cache", key, {"cache": dst}) == {"ok": None}
    else:
        key = {"key": ["req", HERE, 71]}
        assert peer.call("pull_cache", key, {"cache": dst}) == {"ok": None}
        gone = peer.call("pull_cache", key, {"cache": dst})
        assert gone["error"] == int(LLMStatusCode.LLM_KV_CACHE_NOT_EXIST)
    for t, data in enumerate(peer.dump(dst)):
        assert data[:SLICE] == pattern(t, DESC.size, 1)[SLICE:], t


def test_the_listener_pulls_from_the_peer(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, peer, _ = pair
    src = peer.call("allocate_cache", PEER_DESC, [])["ok"]
    peer.send(cmd="fill", cache=src["index"], seed=2)
    dst = here.cache_manager.allocate_cache(DESC)
    key = CacheKeyByIdAndIndex(PEER, src["cache_id"], 0)
    here.cache_manager.pull_cache(
        key, dst, 1, src_layer_range=range(1, 2), dst_layer_range=range(0, 1)
    )
    assert _tensor(dst, 0)[SLICE:] == pattern(2, DESC.size, 2)[:SLICE]
    assert _tensor(dst, 1)[SLICE:] == pattern(3, DESC.size, 2)[:SLICE]


def test_blocks_pull_and_registered_memory(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, peer, _ = pair
    manager = here.cache_manager
    memory = [ctypes.create_string_buffer(BLOCKS.size) for _ in range(4)]
    src = manager.register_blocks_cache(
        BLOCKS, [ctypes.addressof(m) for m in memory], BlocksCacheKey(HERE, 5)
    )
    assert src.is_blocks_cache
    _filled(src, 3)
    dst = peer.call("allocate_blocks_cache", PEER_BLOCKS)["ok"]["index"]
    answer = peer.call(
        "pull_blocks", {"key": ["blocks", HERE, 5]}, {"cache": dst}, [1, 2, 6], [4, 5, 0]
    )
    assert answer == {"ok": None}
    dump = peer.dump(dst)
    for t in range(4):
        want = pattern(t, BLOCKS.size, 3)
        for s, d in ((1, 4), (2, 5), (6, 0)):
            assert dump[t][d * BLOCK : (d + 1) * BLOCK] == want[s * BLOCK : (s + 1) * BLOCK]
    manager.unregister_cache(src.cache_id)
    gone = peer.call("pull_blocks", {"key": ["blocks", HERE, 5]}, {"cache": dst}, [1], [1])
    assert gone["error"] == int(LLMStatusCode.LLM_KV_CACHE_NOT_EXIST)


class Ready(LayerSynchronizer):
    def __init__(self) -> None:
        self.layers: list[int] = []

    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        self.layers.append(layer_index)
        return True


def test_pushes_by_key(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, peer, remote_access = pair
    manager = here.cache_manager
    src = _filled(manager.allocate_cache(DESC), 4)
    dst = peer.call("allocate_cache", PEER_DESC)["ok"]
    key = CacheKeyByIdAndIndex(PEER, dst["cache_id"], 1)
    if not remote_access:
        with pytest.raises(LLMException) as info:
            manager.push_cache(key, src)
        assert info.value.status_code is LLMStatusCode.LLM_PARAM_INVALID
        return
    manager.push_cache(key, src, src_batch_index=0)
    dump = peer.dump(dst["index"])
    for t in range(4):
        assert dump[t][SLICE:] == pattern(t, DESC.size, 4)[:SLICE]
    # A layer-wise transfer addressed by key: source layer 1 into layer 0, batch 0.
    sync = Ready()
    config = TransferWithCacheKeyConfig(
        CacheKeyByIdAndIndex(PEER, dst["cache_id"], 0), range(1, 2), range(0, 1), 1
    )
    task = manager.transfer_cache_async(src, sync, [config])
    assert task.synchronize() is LLMStatusCode.LLM_SUCCESS
    assert sync.layers == [1]
    dump = peer.dump(dst["index"])
    assert dump[0][:SLICE] == pattern(2, DESC.size, 4)[SLICE:]
    assert dump[1][:SLICE] == pattern(3, DESC.size, 4)[SLICE:]
    with pytest.raises(TypeError):
        manager.transfer_cache_async(src, sync, [TransferConfig(PEER, [1, 2, 3, 4])])
    # push_blocks into the peer's blocks cache under its BlocksCacheKey.
    blocks_src = _filled(manager.allocate_blocks_cache(BLOCKS), 5)
    peer_blocks = peer.call("allocate_blocks_cache", PEER_BLOCKS, {"key": ["blocks", PEER, 9]})
    manager.push_blocks(BlocksCacheKey(PEER, 9), blocks_src, [0, 7], [3, 4])
    dump = peer.dump(peer_blocks["ok"]["index"])
    assert dump[2][3 * BLOCK : 4 * BLOCK] == pattern(2, BLOCKS.size, 5)[:BLOCK]
    assert dump[2][4 * BLOCK : 5 * BLOCK] == pattern(2, BLOCKS.size, 5)[7 * BLOCK : 8 * BLOCK]
    with pytest.raises(LLMException) as info:
        manager.push_blocks(BlocksCacheKey(PEER, 9), blocks_src, [0], [8])
    assert info.value.status_code is LLMStatusCode.LLM_PARAM_INVALID


def test_local_operations(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, _, _ = pair
    manager = here.cache_manager
    a = _filled(manager.allocate_cache(DESC), 6)
    b = manager.allocate_cache(DESC)
    manager.copy_cache(b, a, 0, 1)
    assert _tensor(b, 2)[:SLICE] == pattern(2, DESC.size, 6)[SLICE:]
    blocks = _filled(manager.allocate_blocks_cache(BLOCKS), 7)
    manager.copy_blocks(blocks, {0: [6]})
    assert _tensor(blocks, 1)[6 * BLOCK : 7 * BLOCK] == pattern(1, BLOCKS.size, 7)[:BLOCK]
    host_desc = CacheDesc(4, [8, 2, 64], DataType.DT_FLOAT16, Placement.HOST)
    memory = [ctypes.create_string_buffer(host_desc.size) for _ in range(4)]
    host = Cache.create_cpu_cache(host_desc, [ctypes.addressof(m) for m in memory])
    manager.swap_blocks(blocks, host, {2: 1})
    assert memory[3].raw[BLOCK : 2 * BLOCK] == pattern(3, BLOCKS.size, 7)[2 * BLOCK : 3 * BLOCK]


def test_switch_role_while_linked_is_exist_link(pair: tuple[LLMDataDist, Peer, bool]) -> None:
    here, _, _ = pair
    with pytest.raises(LLMException) as info:
        here.switch_role(LLMRole.DECODER)
    assert info.value.status_code is LLMStatusCode.LLM_EXIST_LINK


def test_a_finalized_manager_refuses_calls() -> None:
    script = r"""
from llm_datadist import *
dd = LLMDataDist(LLMRole.DECODER, 5)
config = LLMConfig(); config.enable_cache_manager = True
config.mem_pool_cfg = '{"memory_size": 1048576}'
dd.init(config.generate_options())
manager = dd.cache_manager
cache = manager.allocate_cache(CacheDesc(2, [4], DataType.DT_INT32))
dd.finalize()
try:
    manager.pull_cache(CacheKeyByIdAndIndex(1, 1), cache)
except LLMException as exc:
    print(exc.status_code.name)
"""
    out = run_script(script)
    assert out.stdout.strip() == "LLM_ENGINE_FINALIZED", out.stderr


def test_link_needs_local_ip_info_without_local_comm_res() -> None:
    script = r"""
from llm_datadist import *
dd = LLMDataDist(LLMRole.DECODER, 5)
config = LLMConfig(); config.enable_cache_manager = True
dd.init(config.generate_options())
info = LLMClusterInfo(); info.remote_cluster_id = 1; info.append_remote_ip_info("127.0.0.1", 1)
try:
    dd.link_clusters([info])
except LLMException as exc:
    print(exc.status_code.name)
dd.finalize()
"""
    out = run_script(script)
    assert out.stdout.strip() == "LLM_PARAM_INVALID", out.stderr


def test_comm_domain_link_pull_and_unlink() -> None:
    """Two members link as a comm domain (rank 1 links to rank 0 at the
    address the rank table gives), then pull from each other."""
    port = free_port()
    table = json.dumps(
        {
            "version": "1.0",
            "server_list": [
                {
                    "server_id": "127.0.0.1",
                    "device": [
                        {
                            "device_id": "0",
                            "device_ip": "127.0.0.1",
                            "device_port": port,
                            "rank_id": "0",
                        },
                        {
                            "device_id": "1",
                            "device_ip": "127.0.0.1",
                            "device_port": 1,
                            "rank_id": "1",
                        },
                    ],
                }
            ],
        }
    )
    first = Peer(_options(True, f"127.0.0.1:{port}"), cluster_id=3)
    second = Peer(_options(True), cluster_id=4)
    try:
        ranks = {"ranks": {"3": 0, "4": 1}}
        assert first.call("link", "domain", ranks, table) == {"ok": 1}
        assert second.call("link", "domain", ranks, table) == {"ok": 1}
        for peer in (first, second):
            status = "PREPARING"
            for _ in range(400):
                status = peer.call("query_register_mem_status", 1)["ok"]
                if status != "PREPARING":
                    break
                threading.Event().wait(0.025)
            assert status == "OK"
        src = first.call("allocate_cache", PEER_DESC)["ok"]
        first.send(cmd="fill", cache=src["index"], seed=8)
        dst = second.call("allocate_cache", PEER_DESC)["ok"]["index"]
        key = {"key": ["id", 3, src["cache_id"], 1]}
        assert second.call("pull_cache", key, {"cache": dst}) == {"ok": None}
        assert second.dump(dst)[1][:SLICE] == pattern(1, DESC.size, 8)[SLICE:]
        assert second.call("unlink", 1) == {"ok": None}
        assert second.call("query_register_mem_status", 1)["error"] == int(
            LLMStatusCode.LLM_NOT_YET_LINK
        )
        bad = second.call("link", "domain", {"ranks": {"5": 0, "4": 1}}, "{}")
        assert bad["error"] == int(LLMStatusCode.LLM_LINK_FAILED)  # no address for rank 0
        not_member = second.call("link", "domain", {"ranks": {"5": 0, "6": 1}}, table)
        assert not_member["error"] == int(LLMStatusCode.LLM_PARAM_INVALID)
    finally:
        second.close()
        first.close()
