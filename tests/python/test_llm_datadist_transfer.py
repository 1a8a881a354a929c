"""transfer_cache_async end to end: this process is the PROMPT, DECODERs are peers.

Two DECODER processes (clusters 2 and 3) link to the PROMPT over loopback
UCX; each test pushes from the PROMPT's caches and has the decoders check
the bytes that landed in their own memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kvdist._kvdist")

from helpers.llm_helpers import DecoderPeer, free_port, pattern, write_bytes  # noqa: E402
from llm_datadist import (  # noqa: E402
    CacheDesc,
    DataType,
    KvCache,
    LayerSynchronizer,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    TransferConfig,
)

os.environ.setdefault("UCX_NET_DEVICES", "lo")

SUCCESS = LLMStatusCode.LLM_SUCCESS
PARAM_INVALID = LLMStatusCode.LLM_PARAM_INVALID
WAIT = LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT
PROMPT_ID, D2, D3 = 1, 2, 3

# PROMPT caches: 4 layers; contiguous batch 2 (1 KiB slices); 8 blocks of 256 B.
SRC_CONTIG = CacheDesc(8, [2, 16, 32], DataType.DT_FLOAT16)
SRC_BLOCKS = CacheDesc(8, [8, 4, 32], DataType.DT_FLOAT16)
SLICE = SRC_CONTIG.size // 2
BLOCK = SRC_BLOCKS.size // 8
DST_CONTIG = {"num_tensors": 8, "shape": [1, 16, 32], "dtype": "DT_FLOAT16"}
DST_BLOCKS = {"blocks": True, "num_tensors": 8, "shape": [16, 4, 32], "dtype": "DT_FLOAT16"}


class Prompt:
    """The PROMPT side of the module: its LLMDataDist, caches and port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.datadist = LLMDataDist(LLMRole.PROMPT, PROMPT_ID)
        config = LLMConfig()
        config.device_id = 0
        config.listen_ip_info = f"127.0.0.1:{self.port}"
        self.datadist.init(config.generate_options())
        self.manager = self.datadist.kv_cache_manager
        self.contig = self._filled(self.manager.allocate_cache(SRC_CONTIG))
        self.blocks = self._filled(self.manager.allocate_blocks_cache(SRC_BLOCKS))

    @staticmethod
    def _filled(cache: KvCache) -> KvCache:
        for t, addr in enumerate(cache.per_device_tensor_addrs[0]):
            write_bytes(addr, pattern(t, cache.cache_desc.size))
        return cache


@pytest.fixture(scope="module")
def prompt() -> Iterator[Prompt]:
    side = Prompt()
    yield side
    side.datadist.finalize()


@pytest.fixture(scope="module")
def decoders(prompt: Prompt) -> Iterator[dict[int, DecoderPeer]]:
    link = [[PROMPT_ID, "127.0.0.1", prompt.port]]
    peers = {
        D2: DecoderPeer({"cluster_id": D2, "prompts": link, "caches": [DST_CONTIG, DST_BLOCKS]}),
        D3: DecoderPeer({"cluster_id": D3, "prompts": link, "caches": [DST_CONTIG]}),
    }
    yield peers
    for peer in peers.values():
        peer.close()


@pytest.fixture
def peers(decoders: dict[int, DecoderPeer]) -> dict[int, DecoderPeer]:
    """The decoders with every cache zeroed."""
    for peer in decoders.values():
        for index in range(len(peer.caches)):
            peer.clear(index)
    return decoders


class Recorder(LayerSynchronizer):
    """Records (layer, timeout, thread); answers per ``answers`` (default True)."""

    def __init__(self, answers: dict[int, Any] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[int, int | None]] = []
        self.threads: set[int] = set()

    def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
        self.calls.append((layer_index, timeout_in_millis))
        self.threads.add(threading.get_ident())
        answer = self.answers.get(layer_index, True)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)


def _verify(peer: DecoderPeer, cache: int, expect: list[list[int]]) -> None:
    answer = peer.request(cmd="verify", cache=cache, expect=expect)
    assert answer["ok"], f"tensors with wrong bytes: {answer['mismatches']}"


def _contig_expect(dst_tensors: list[int], src_tensors: list[int], batch: int) -> list[list[int]]:
    return [
        [d, s, SRC_CONTIG.size, batch * SLICE, SLICE, 0] for d, s in zip(dst_tensors, src_tensors)
    ]


def _untouched(peer: DecoderPeer, cache: int, tensors: list[int]) -> None:
    data = peer.dump(cache)
    for t in tensors:
        assert data[t] == bytes(len(data[t])), f"tensor {t} was written"


def test_contiguous_all_layers(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    sync = Recorder()
    config = TransferConfig(D2, peers[D2].addrs(0), None, 1)
    task = prompt.manager.transfer_cache_async(prompt.contig, sync, [config])
    assert config.src_layer_range == range(0, 4)
    assert task.synchronize() is SUCCESS
    assert task.get_results() == [SUCCESS]
    assert sync.calls == [(0, None), (1, None), (2, None), (3, None)]
    assert threading.get_ident() not in sync.threads
    _verify(peers[D2], 0, _contig_expect(list(range(8)), list(range(8)), batch=1))


def test_layer_subrange(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    sync = Recorder()
    dst = peers[D2].addrs(0)[4:8]  # layer 1 -> tensors 4, 5; layer 2 -> tensors 6, 7
    task = prompt.manager.transfer_cache_async(
        prompt.contig, sync, [TransferConfig(D2, dst, range(1, 3), 0)]
    )
    assert task.get_results() == [SUCCESS]
    assert sync.calls == [(1, None), (2, None)]  # uncovered layers: no call
    _verify(peers[D2], 0, _contig_expect([4, 5, 6, 7], [2, 3, 4, 5], batch=0))
    _untouched(peers[D2], 0, [0, 1, 2, 3])


def test_paged(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    src_blocks, dst_blocks = [0, 3, 4, 5], [7, 1, 2, 3]
    task = prompt.manager.transfer_cache_async(
        prompt.blocks,
        Recorder(),
        [TransferConfig(D2, peers[D2].addrs(1))],
        src_blocks,
        dst_blocks,
    )
    assert task.synchronize() is SUCCESS
    expect = [
        [t, t, SRC_BLOCKS.size, s * BLOCK, BLOCK, d * BLOCK]
        for t in range(8)
        for s, d in zip(src_blocks, dst_blocks)
    ]
    _verify(peers[D2], 1, expect)


def test_paged_larger_destination_blocks(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    src_blocks, dst_blocks = (1, 2, 3), (0, 2, 5)
    task = prompt.manager.transfer_cache_async(
        prompt.blocks,
        Recorder(),
        (TransferConfig(D2, peers[D2].addrs(1)[2:6], range(1, 3)),),
        src_blocks,
        dst_blocks,
        2 * BLOCK,
    )
    assert task.get_results() == [SUCCESS]
    expect = [
        [t, t, SRC_BLOCKS.size, s * BLOCK, BLOCK, d * 2 * BLOCK]
        for t in range(2, 6)
        for s, d in zip(src_blocks, dst_blocks)
    ]
    _verify(peers[D2], 1, expect)


def test_two_destinations(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    configs = [
        TransferConfig(D2, peers[D2].addrs(0), range(0, 4), 0),
        TransferConfig(D3, peers[D3].addrs(0)[0:4], range(2, 4), 1),
    ]
    sync = Recorder()
    task = prompt.manager.transfer_cache_async(prompt.contig, sync, configs)
    assert task.synchronize() is SUCCESS
    assert task.get_results() == [SUCCESS, SUCCESS]
    assert [layer for layer, _ in sync.calls] == [0, 1, 2, 3]  # once per layer
    _verify(peers[D2], 0, _contig_expect(list(range(8)), list(range(8)), batch=0))
    _verify(peers[D3], 0, _contig_expect([0, 1, 2, 3], [4, 5, 6, 7], batch=1))


def test_two_configs_to_one_cluster_get_one_result_each(
    prompt: Prompt, peers: dict[int, DecoderPeer]
) -> None:
    addrs = peers[D2].addrs(0)
    configs = [
        TransferConfig(D2, addrs[0:4], range(0, 2)),
        TransferConfig(D2, addrs[4:8], range(2, 4), 1),
    ]
    task = prompt.manager.transfer_cache_async(prompt.contig, Recorder(), configs)
    assert task.get_results() == [SUCCESS, SUCCESS]
    _verify(peers[D2], 0, _contig_expect([0, 1, 2, 3], [0, 1, 2, 3], batch=0))
    _verify(peers[D2], 0, _contig_expect([4, 5, 6, 7], [4, 5, 6, 7], batch=1))


def test_synchronizer_false(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    configs = [
        TransferConfig(D2, peers[D2].addrs(0)[0:4], range(0, 2)),
        TransferConfig(D2, peers[D2].addrs(0)[4:8], range(2, 4)),
        TransferConfig(D3, peers[D3].addrs(0)[0:2], range(3, 4)),
    ]
    sync = Recorder({2: False})
    task = prompt.manager.transfer_cache_async(prompt.contig, sync, configs)
    assert task.get_results() == [SUCCESS, PARAM_INVALID, None]
    assert task.synchronize() is PARAM_INVALID
    assert [layer for layer, _ in sync.calls] == [0, 1, 2]
    _untouched(peers[D3], 0, [0, 1])


def test_synchronizer_raises(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    configs = [
        TransferConfig(D2, peers[D2].addrs(0), range(0, 4)),
        TransferConfig(D3, peers[D3].addrs(0)[0:4], range(2, 4)),
    ]
    sync = Recorder({1: ValueError("model failed")})
    task = prompt.manager.transfer_cache_async(prompt.contig, sync, configs)
    assert task.get_results() == [LLMStatusCode.LLM_FAILED, None]
    assert task.synchronize() is LLMStatusCode.LLM_FAILED
    # The task is over: the manager accepts the next one.
    again = prompt.manager.transfer_cache_async(prompt.contig, Recorder(), configs)
    assert again.get_results() == [SUCCESS, SUCCESS]


def test_results_while_running(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    gate = threading.Event()

    class Gated(LayerSynchronizer):
        def synchronize_layer(self, layer_index: int, timeout_in_millis: int | None) -> bool:
            return gate.wait(10) if layer_index == 1 else True

    configs = [
        TransferConfig(D2, peers[D2].addrs(0)),
        TransferConfig(D3, peers[D3].addrs(0)),
    ]
    task = prompt.manager.transfer_cache_async(prompt.contig, Gated(), configs)
    try:
        assert task.get_results(0) == [WAIT, WAIT]
        start = time.monotonic()
        assert task.get_results(100) == [WAIT, WAIT]
        assert time.monotonic() - start >= 0.09
        assert task.synchronize(0) is WAIT
        assert task.synchronize(20) is WAIT
        # Not re-entrant: a second call while one runs is refused.
        with pytest.raises(LLMException) as info:
            prompt.manager.transfer_cache_async(prompt.contig, Gated(), configs)
        assert info.value.status_code is LLMStatusCode.LLM_LINK_BUSY
    finally:
        gate.set()
    assert task.synchronize() is SUCCESS
    assert task.get_results() == [SUCCESS, SUCCESS]
    assert task.get_results(0) == [SUCCESS, SUCCESS]
    _verify(peers[D3], 0, _contig_expect(list(range(8)), list(range(8)), batch=0))


def test_destination_not_linked(prompt: Prompt, peers: dict[int, DecoderPeer]) -> None:
    configs = [
        TransferConfig(99, [0x100000 + 64 * i for i in range(8)]),
        TransferConfig(D2, peers[D2].addrs(0)),
    ]
    task = prompt.manager.transfer_cache_async(prompt.contig, Recorder(), configs)
    results = task.get_results()
    assert results[0] is LLMStatusCode.LLM_NOT_YET_LINK
    assert results[1] is SUCCESS
    assert task.synchronize() is LLMStatusCode.LLM_NOT_YET_LINK


def test_destination_outside_registered_memory(
    prompt: Prompt, peers: dict[int, DecoderPeer]
) -> None:
    bad = list(peers[D2].addrs(0))
    bad[3] = 0x1000  # not memory the decoder registered
    try:
        task = prompt.manager.transfer_cache_async(
            prompt.contig, Recorder(), [TransferConfig(D2, bad)]
        )
    except LLMException as exc:
        assert exc.status_code is PARAM_INVALID
    else:
        assert task.get_results() == [PARAM_INVALID]
    _untouched(peers[D2], 0, list(range(8)))


def test_check_link_status_on_decoder(decoders: dict[int, DecoderPeer]) -> None:
    assert decoders[D2].request(cmd="check_link", cluster=PROMPT_ID) == {"ok": True}
    answer = decoders[D2].request(cmd="check_link", cluster=77)
    assert answer.get("error") not in (None, 0)


def test_unlink_clusters(prompt: Prompt) -> None:
    peer = DecoderPeer(
        {
            "cluster_id": 4,
            "prompts": [[PROMPT_ID, "127.0.0.1", prompt.port]],
            "caches": [DST_CONTIG],
        }
    )
    assert peer.link == [0, [0]]
    answer = peer.close(unlink=True)
    assert answer.get("unlink") == [0, [0]]
    assert peer.proc.returncode == 0
