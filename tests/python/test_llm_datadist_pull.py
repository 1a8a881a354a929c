"""pull_cache / pull_blocks end to end, and the local cache operations.

This process is a PROMPT that keeps caches under keys; a DECODER process
(``helpers/decoder_peer.py``) pulls them over loopback UCX and checks the
bytes in its own memory against the pattern the PROMPT wrote.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kvdist._kvdist")

from helpers.llm_helpers import (  # noqa: E402
    DecoderPeer,
    child_env,
    free_port,
    pattern,
    run_script,
    write_bytes,
)
from llm_datadist import (  # noqa: E402
    BlocksCacheKey,
    CacheDesc,
    CacheKey,
    DataType,
    KvCache,
    LayerSynchronizer,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    Placement,
    TransferConfig,
)

os.environ.setdefault("UCX_NET_DEVICES", "lo")

PROMPT_ID, D2 = 1, 2
NOT_EXIST = int(LLMStatusCode.LLM_KV_CACHE_NOT_EXIST)
PARAM_INVALID = int(LLMStatusCode.LLM_PARAM_INVALID)
LINK_BUSY = int(LLMStatusCode.LLM_LINK_BUSY)
# Caches of 4 layers (8 tensors): batch 2 on the PROMPT, 1 KiB per slice.
SRC = CacheDesc(8, [2, 16, 32], DataType.DT_FLOAT16)
SLICE = SRC.size // 2
BLOCKS = CacheDesc(8, [8, 4, 32], DataType.DT_FLOAT16)
BLOCK = BLOCKS.size // 8
DST = {"num_tensors": 8, "shape": [1, 16, 32], "dtype": "DT_FLOAT16"}
DST_BLOCKS = {"blocks": True, "num_tensors": 8, "shape": [16, 4, 32], "dtype": "DT_FLOAT16"}
DST_HALF = {"num_tensors": 4, "shape": [1, 16, 32], "dtype": "DT_FLOAT16"}


class Prompt:
    """This process's PROMPT: its LLMDataDist, manager and port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.datadist = LLMDataDist(LLMRole.PROMPT, PROMPT_ID)
        config = LLMConfig()
        config.device_id = 0
        config.listen_ip_info = f"127.0.0.1:{self.port}"
        self.datadist.init(config.generate_options())
        self.manager = self.datadist.kv_cache_manager

    def keyed(self, *keys: CacheKey) -> KvCache:
        """A patterned source cache with ``keys`` on its batches."""
        cache = self.manager.allocate_cache(SRC, list(keys))
        for t, addr in enumerate(cache.per_device_tensor_addrs[0]):
            write_bytes(addr, pattern(t, SRC.size))
        return cache


@pytest.fixture(scope="module")
def prompt() -> Iterator[Prompt]:
    side = Prompt()
    yield side
    side.datadist.finalize()


@pytest.fixture(scope="module")
def decoder(prompt: Prompt) -> Iterator[DecoderPeer]:
    peer = DecoderPeer(
        {
            "cluster_id": D2,
            "prompts": [[PROMPT_ID, "127.0.0.1", prompt.port]],
            "caches": [DST, DST_BLOCKS, DST_HALF],
        }
    )
    assert peer.link == [0, [0]]
    yield peer
    peer.close(unlink=True)


def _pull(decoder: DecoderPeer, key: list[Any], cache: int = 0, **command: Any) -> Any:
    decoder.clear(cache)
    answer = decoder.request(cmd="pull", key=key, cache=cache, **command)
    return answer.get("error", 0)


def _slices(tensors: list[int], src_tensors: list[int], batch: int) -> list[list[int]]:
    """verify entries: dst tensor i holds batch ``batch`` of source tensor src_tensors[i]."""
    return [[d, s, SRC.size, batch * SLICE, SLICE, 0] for d, s in zip(tensors, src_tensors)]


def test_pull_by_request_key_uses_the_key_up(prompt: Prompt, decoder: DecoderPeer) -> None:
    prompt.keyed(CacheKey(PROMPT_ID, 100), CacheKey(PROMPT_ID, 101))
    assert _pull(decoder, ["req", PROMPT_ID, 101]) == 0
    answer = decoder.request(
        cmd="verify", cache=0, expect=_slices(list(range(8)), list(range(8)), 1)
    )
    assert answer["ok"], answer
    assert _pull(decoder, ["req", PROMPT_ID, 101]) == NOT_EXIST
    assert _pull(decoder, ["req", PROMPT_ID, 100]) == 0


def test_freed_cache_is_pullable_until_its_key_is_pulled(
    prompt: Prompt, decoder: DecoderPeer
) -> None:
    cache = prompt.keyed(CacheKey(PROMPT_ID, 110), CacheKey(PROMPT_ID, 2**64 - 1))
    prompt.manager.deallocate_cache(cache)
    assert cache.per_device_tensor_addrs == []
    assert _pull(decoder, ["req", PROMPT_ID, 110]) == 0
    answer = decoder.request(
        cmd="verify", cache=0, expect=_slices(list(range(8)), list(range(8)), 0)
    )
    assert answer["ok"], answer
    # By id, the batch without a key of the freed cache is gone.
    assert _pull(decoder, ["id", PROMPT_ID, cache.cache_id, 1]) == NOT_EXIST


def test_pull_by_id_with_layer_ranges_and_offsets(prompt: Prompt, decoder: DecoderPeer) -> None:
    cache = prompt.keyed()
    key = ["id", PROMPT_ID, cache.cache_id, 1]
    # Source layers 2..3 (tensors 4..7) into the 2-layer cache.
    assert _pull(decoder, key, cache=2, kwargs={"src_layer_range": [2, 4]}) == 0
    answer = decoder.request(cmd="verify", cache=2, expect=_slices([0, 1, 2, 3], [4, 5, 6, 7], 1))
    assert answer["ok"], answer
    # 256 bytes from byte 64 of the source slice to byte 512 of the destination's.
    assert (
        _pull(
            decoder,
            key,
            cache=0,
            args=[0, 256],
            kwargs={"src_cache_offset": 64, "dst_cache_offset": 512},
        )
        == 0
    )
    expect = [[t, t, SRC.size, SLICE + 64, 256, 512] for t in range(8)]
    assert decoder.request(cmd="verify", cache=0, expect=expect)["ok"]
    # The source gives 8 tensors, the 2-layer cache takes 4.
    assert _pull(decoder, key, cache=2) == PARAM_INVALID
    assert _pull(decoder, key, cache=0, args=[0, 2000]) == PARAM_INVALID


def test_pull_blocks_by_blocks_key(prompt: Prompt, decoder: DecoderPeer) -> None:
    cache = prompt.manager.allocate_blocks_cache(BLOCKS, BlocksCacheKey(PROMPT_ID, 4))
    for t, addr in enumerate(cache.per_device_tensor_addrs[0]):
        write_bytes(addr, pattern(t, BLOCKS.size, seed=3))
    pairs = [(1, 10), (2, 11), (7, 0)]
    assert (
        _pull(
            decoder,
            ["blocks", PROMPT_ID, 4],
            cache=1,
            blocks=[[p for p, _ in pairs], [d for _, d in pairs]],
        )
        == 0
    )
    dump = decoder.dump(1)
    for t in range(8):
        src = pattern(t, BLOCKS.size, seed=3)
        for p, d in pairs:
            assert dump[t][d * BLOCK : (d + 1) * BLOCK] == src[p * BLOCK : (p + 1) * BLOCK]
        assert dump[t][3 * BLOCK : 4 * BLOCK] == bytes(BLOCK)
    assert _pull(decoder, ["blocks", PROMPT_ID, 4], cache=1, blocks=[[8], [0]]) == PARAM_INVALID
    prompt.manager.deallocate_cache(cache)
    assert _pull(decoder, ["blocks", PROMPT_ID, 4], cache=1, blocks=[[1], [1]]) == NOT_EXIST


def test_removed_key_and_prefix_key(prompt: Prompt, decoder: DecoderPeer) -> None:
    prompt.keyed(CacheKey(PROMPT_ID, 120))
    prompt.manager.remove_cache_key(CacheKey(PROMPT_ID, 120))
    prompt.manager.remove_cache_key(CacheKey(PROMPT_ID, 120))  # unknown: no error
    assert _pull(decoder, ["req", PROMPT_ID, 120]) == NOT_EXIST
    prompt.keyed(CacheKey(PROMPT_ID, 2**64 - 1, 0, 9))
    assert _pull(decoder, ["prefix", PROMPT_ID, 9]) == 0
    assert _pull(decoder, ["prefix", PROMPT_ID, 9]) == 0  # prefix keys stay
    prompt.manager.remove_cache_key(CacheKey(PROMPT_ID, 2**64 - 1, 0, 9))
    assert _pull(decoder, ["prefix", PROMPT_ID, 9]) == NOT_EXIST


def test_duplicate_key_is_llm_failed(prompt: Prompt) -> None:
    prompt.keyed(CacheKey(PROMPT_ID, 130))
    with pytest.raises(LLMException) as info:
        prompt.keyed(CacheKey(PROMPT_ID, 130))
    assert info.value.status_code is LLMStatusCode.LLM_FAILED
    with pytest.raises(LLMException) as info:
        prompt.keyed(CacheKey(PROMPT_ID, 131), CacheKey(PROMPT_ID, 132), CacheKey(PROMPT_ID, 133))
    assert info.value.status_code is LLMStatusCode.LLM_PARAM_INVALID


class Held(LayerSynchronizer):
    """Holds every layer until released."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        return self.go.wait(10)


def test_pull_during_a_push_to_the_same_decoder_is_busy(
    prompt: Prompt, decoder: DecoderPeer
) -> None:
    prompt.keyed(CacheKey(PROMPT_ID, 140))
    src = prompt.keyed()
    held = Held()
    task = prompt.manager.transfer_cache_async(src, held, [TransferConfig(D2, decoder.addrs(0))])
    try:
        assert _pull(decoder, ["req", PROMPT_ID, 140]) == LINK_BUSY
    finally:
        held.go.set()
    assert task.synchronize() is LLMStatusCode.LLM_SUCCESS
    assert _pull(decoder, ["req", PROMPT_ID, 140]) == 0


def test_local_copies_swaps_and_tensors(prompt: Prompt) -> None:
    manager = prompt.manager
    src = prompt.keyed()
    dst = manager.allocate_cache(SRC)
    manager.copy_cache(dst, src, dst_batch_index=0, src_batch_index=1, offset=32, size=64)
    dst_addr = dst.per_device_tensor_addrs[0][3]
    assert ctypes.string_at(dst_addr + 32, 64) == pattern(3, SRC.size)[SLICE + 32 : SLICE + 96]
    with pytest.raises(LLMException) as info:
        manager.copy_cache(dst, src, offset=SLICE)
    assert info.value.status_code is LLMStatusCode.LLM_PARAM_INVALID

    blocks = manager.allocate_blocks_cache(BLOCKS)
    addrs = blocks.per_device_tensor_addrs[0]
    for t, addr in enumerate(addrs):
        write_bytes(addr, pattern(t, BLOCKS.size, seed=5))
    manager.copy_blocks(blocks, {1: [5, 6]})
    assert ctypes.string_at(addrs[2] + 6 * BLOCK, BLOCK) == ctypes.string_at(
        addrs[2] + BLOCK, BLOCK
    )

    host_desc = CacheDesc(8, [4, 4, 32], DataType.DT_FLOAT16, Placement.HOST)
    host_mem = [ctypes.create_string_buffer(host_desc.size) for _ in range(8)]
    host = KvCache.create_cpu_cache(host_desc, [ctypes.addressof(m) for m in host_mem])
    manager.swap_blocks(blocks, host, {6: 3})  # out
    assert host_mem[7].raw[3 * BLOCK : 4 * BLOCK] == ctypes.string_at(addrs[7] + 6 * BLOCK, BLOCK)
    host_mem[0][0:BLOCK] = b"\x07" * BLOCK
    manager.swap_blocks(host, blocks, {0: 7})  # in
    assert ctypes.string_at(addrs[0] + 7 * BLOCK, BLOCK) == b"\x07" * BLOCK

    tensors = manager.get_cache_tensors(src, 5)
    assert len(tensors) == 1
    array = tensors[0].numpy()
    assert list(array.shape) == SRC.shape
    assert array.tobytes() == pattern(5, SRC.size)
    manager.deallocate_cache(dst)
    with pytest.raises(LLMException) as info:
        manager.get_cache_tensors(dst, 0)
    assert info.value.status_code is LLMStatusCode.LLM_KV_CACHE_NOT_EXIST


def test_switch_role_needs_the_option_and_no_links(prompt: Prompt) -> None:
    """A second process switches DECODER -> PROMPT and serves a pull."""
    del prompt  # the module's PROMPT must not be the one switching (one per process)
    script = r"""
import json, sys
from llm_datadist import *
port = int(sys.argv[1])
dd = LLMDataDist(LLMRole.DECODER, 7)
config = LLMConfig(); config.device_id = 0; config.enable_switch_role = True
dd.init(config.generate_options())
dd.switch_role(LLMRole.PROMPT, {"llm.listenIpInfo": f"127.0.0.1:{port}"})
cache = dd.kv_cache_manager.allocate_cache(CacheDesc(8, [1, 16, 32], DataType.DT_FLOAT16), [CacheKey(7, 5)])
import ctypes
for t, addr in enumerate(cache.per_device_tensor_addrs[0]):
    ctypes.memset(addr, t + 1, cache.cache_desc.size)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "switch":
        break
    try:
        dd.switch_role(LLMRole.DECODER)
        print("switched", flush=True)
    except LLMException as exc:
        print(exc.status_code.name, flush=True)
dd.finalize()
"""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        peer = DecoderPeer({"cluster_id": 8, "prompts": [[7, "127.0.0.1", port]], "caches": [DST]})
        try:
            assert peer.link == [0, [0]]
            assert _pull(peer, ["req", 7, 5]) == 0
            assert peer.dump(0)[3] == bytes([4]) * (SRC.size // 2)
            proc.stdin.write("switch\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            assert proc.stdout.readline().strip() == "LLM_EXIST_LINK"
        finally:
            peer.close(unlink=True)
    finally:
        assert proc.stdin is not None
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_switch_role_without_the_option() -> None:
    """kvdist needs no llm.EnableSwitchRole (the original raises
    LLM_FEATURE_NOT_ENABLED without it). In a child: the module's PROMPT
    holds this process's one LLMDataDist."""
    script = r"""
from llm_datadist import *
dd = LLMDataDist(LLMRole.DECODER, 9)
config = LLMConfig(); config.device_id = 0
dd.init(config.generate_options())
try:
    dd.switch_role(LLMRole.PROMPT, {"llm.listenIpInfo": "127.0.0.1:0"})
    print("switched")
except LLMException as exc:
    print(exc.status_code.name)
dd.finalize()
"""
    out = run_script(script)
    assert out.stdout.strip() == "switched", out.stderr
