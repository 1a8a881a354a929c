"""The native kvdist Python API between real processes over loopback UCX."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any, Iterator

import kvdist
import numpy as np
import pytest
from helpers.native_peer import decoder_main

CTX = mp.get_context("spawn")


class Peer:
    """A DECODER child process with its cache addresses."""

    def __init__(
        self,
        port: int,
        cluster_id: int,
        num_tensors: int,
        shape: tuple[int, ...],
        dtype: str,
        view: bool = False,
    ) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(
            target=decoder_main, args=(child, port, cluster_id, num_tensors, shape, dtype, view)
        )
        self.proc.start()
        assert self.conn.poll(30), "decoder did not start"
        tag, self.addrs = self.conn.recv()
        assert tag == "addrs"

    def ask(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        assert self.conn.poll(30), f"decoder did not answer {cmd}"
        return self.conn.recv()

    def read(self, i: int) -> np.ndarray:
        return self.ask("read", i)[1]

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(("quit",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


@pytest.fixture
def prompt() -> Iterator[kvdist.DataDist]:
    with kvdist.DataDist("prompt", 1, listen="127.0.0.1:0", sync_timeout_ms=5000) as dd:
        yield dd


def fill(cache: kvdist.Cache, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(cache.num_tensors):
        t = cache.tensor(i)
        t[...] = rng.integers(0, 2**15, size=t.shape).astype(t.dtype)


def test_push_numpy_views_arrive_byte_for_byte(prompt: kvdist.DataDist) -> None:
    src = prompt.allocate(6, (2, 8, 64), "bfloat16")
    fill(src, 1)
    peer = Peer(prompt.port, 2, 6, (1, 8, 64), "bfloat16")
    try:
        events = kvdist.LayerEvents()
        task = prompt.transfer(src, [kvdist.Destination(2, peer.addrs, batch_index=1)], events)
        assert task.wait(0) == kvdist.StatusCode.WAIT_PROCESS_TIMEOUT
        events.ready(0)
        assert peer.ask("wait", 0, 5000) == ("ok", 0)
        assert np.array_equal(peer.read(0)[0], src.tensor(0)[1])
        assert peer.ask("wait", 1, 100) == ("err", kvdist.StatusCode.TIMEOUT)
        events.ready(1)
        events.ready(2)
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS
        assert task.results() == [kvdist.StatusCode.SUCCESS]
        for i in range(6):
            assert np.array_equal(peer.read(i)[0], src.tensor(i)[1]), i
        figures = task.figures()
        assert figures["bytes"] == 6 * 8 * 64 * 2
        assert [layer["layer"] for layer in figures["layers"]] == [0, 1, 2]
    finally:
        peer.close()


def test_pull_by_cache_id_and_by_request_key(prompt: kvdist.DataDist) -> None:
    src = prompt.allocate(4, (2, 8, 64), "float16", keys=[70, 71])
    fill(src, 5)
    peer = Peer(prompt.port, 2, 4, (1, 8, 64), "float16")
    try:
        assert peer.ask("pull", {"req_id": 71}) == ("ok", 0)
        for i in range(4):
            assert np.array_equal(peer.read(i)[0], src.tensor(i)[1]), i
        # The key is used up; by id, batch 0's layer 1 into layer 0.
        assert peer.ask("pull", {"req_id": 71}) == ("err", kvdist.StatusCode.KV_CACHE_NOT_EXIST)
        pulled = peer.ask(
            "pull", {"cache_id": src.cache_id, "layers": range(1, 2), "dst_layers": range(0, 1)}
        )
        assert pulled == ("ok", 0)
        assert np.array_equal(peer.read(0)[0], src.tensor(2)[0])
        assert np.array_equal(peer.read(1)[0], src.tensor(3)[0])
        assert peer.ask("pull", {"cache_id": src.cache_id, "src_batch_index": 2}) == (
            "err",
            kvdist.StatusCode.KV_CACHE_NOT_EXIST,
        )
        # Freed: key 70 (batch 0) still holds it; batch 1 has no key left.
        src_id = src.cache_id
        src.free()
        assert peer.ask("pull", {"cache_id": src_id, "src_batch_index": 1}) == (
            "err",
            kvdist.StatusCode.KV_CACHE_NOT_EXIST,
        )
        assert peer.ask("pull", {"req_id": 70}) == ("ok", 0)
    finally:
        peer.close()


def test_calls_after_close_raise_instead_of_crashing() -> None:
    dd = kvdist.DataDist("decoder", 9)
    dd.close()
    key = (1, 1, 2**64 - 1, 2**64 - 1, 0, 5, 0)
    cache = (5, [4096], 1, [8], 1, 1)
    for call in (
        lambda: dd._native.pull(key, cache),
        lambda: dd._native.push(cache, key),
        lambda: dd._native.copy_cache(cache, cache),
        lambda: dd._native.allocate(1, [8], 1, 1, 0, -1, False),
    ):
        with pytest.raises(kvdist.KvdistError) as info:
            call()
        assert info.value.code == kvdist.StatusCode.ENGINE_FINALIZED


def test_registered_numpy_and_buffer_sources(prompt: kvdist.DataDist) -> None:
    arrays = [np.full((4, 256), i + 1, dtype=np.float32) for i in range(4)]
    src = prompt.register(arrays)
    assert src.dtype == kvdist.DataType.FLOAT
    buffers = [bytearray(b"x" * 1024) for _ in range(2)]
    raw = prompt.register(buffers)
    assert raw.shape == (1024,)
    peer = Peer(prompt.port, 2, 4, (1, 256), "float32")
    try:
        task = prompt.transfer(src, [kvdist.Destination(2, peer.addrs, batch_index=3)])
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS, task.messages()
        for i in range(4):
            assert np.array_equal(peer.read(i)[0], arrays[i][3])
    finally:
        peer.close()
    src.free()
    raw.free()


def test_torch_tensors_registered_and_pushed(prompt: kvdist.DataDist) -> None:
    torch = pytest.importorskip("torch")
    tensors = [torch.randn(2, 16, 32).to(torch.bfloat16) for _ in range(4)]
    src = prompt.register(tensors)
    assert src.dtype == kvdist.DataType.BF16
    peer = Peer(prompt.port, 2, 4, (1, 16, 32), "bfloat16")
    try:
        task = prompt.transfer(src, [kvdist.Destination(2, peer.addrs, batch_index=0)])
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS, task.messages()
        for i in range(4):
            want = tensors[i][0].view(torch.int16).numpy().view(np.uint16)
            assert np.array_equal(peer.read(i)[0], want)
    finally:
        peer.close()


def test_python_threads_run_while_waiting(prompt: kvdist.DataDist) -> None:
    src = prompt.allocate(4, (1, 1024), "uint8")
    peer = Peer(prompt.port, 2, 4, (1, 1024), "uint8")
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    def slow(layer: int, timeout_ms: int | None) -> bool:
        time.sleep(0.15)  # "computing" the layer
        return True

    try:
        thread = threading.Thread(target=spin)
        thread.start()
        task = prompt.transfer(src, [kvdist.Destination(2, peer.addrs)], slow)
        before = ticks
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS
        during = ticks - before
        stop.set()
        thread.join()
        # The waiting main thread held no GIL: the spinner advanced a lot.
        assert during > 10000
    finally:
        stop.set()
        peer.close()


def test_errors_carry_codes_and_synchronizer_failures(prompt: kvdist.DataDist) -> None:
    src = prompt.allocate(4, (1, 512), "uint8")
    fill(src, 3)
    peer = Peer(prompt.port, 2, 4, (1, 512), "uint8")
    try:
        with pytest.raises(kvdist.KvdistError) as err:
            prompt.transfer(src, [kvdist.Destination(2, peer.addrs[:3])])
        assert err.value.code == kvdist.StatusCode.PARAM_INVALID
        assert "expect 4 dst_addrs" in err.value.message
        with pytest.raises(kvdist.KvdistError) as err:
            prompt.transfer(src, [kvdist.Destination(2, [peer.addrs[0] + 10**9] * 4)])
        assert err.value.code == kvdist.StatusCode.PARAM_INVALID

        def boom(layer: int, timeout_ms: int | None) -> bool:
            if layer == 1:
                raise ValueError("model crashed")
            return True

        task = prompt.transfer(src, [kvdist.Destination(2, peer.addrs)], boom)
        assert task.wait(10000) == kvdist.StatusCode.FAILED
        assert "ValueError: model crashed" in task.messages()[0]
        assert np.array_equal(peer.read(0)[0], src.tensor(0)[0])
        assert not peer.read(2).any()  # layer 1 never sent

        task = prompt.transfer(
            src, [kvdist.Destination(2, peer.addrs)], lambda layer, _t: layer != 0
        )
        assert task.wait(10000) == kvdist.StatusCode.PARAM_INVALID
    finally:
        peer.close()


def test_link_errors_and_context_managers() -> None:
    with kvdist.DataDist("decoder", 5) as d:
        with pytest.raises(kvdist.KvdistError) as err:
            d.link(1, "127.0.0.1", 1, timeout_ms=500)
        assert err.value.code == kvdist.StatusCode.LINK_FAILED
        with kvdist.DataDist("prompt", 1, listen="127.0.0.1:0") as p:
            with d.link(1, "127.0.0.1", p.port):
                assert d.linked == [1]
            assert d.linked == []
    with pytest.raises(kvdist.KvdistError) as err:
        kvdist.DataDist("prompt", 1)  # no listen address
    assert err.value.code == kvdist.StatusCode.PARAM_INVALID


def test_transfers_overlap_each_with_its_own_synchronizer(prompt: kvdist.DataDist) -> None:
    a = prompt.allocate(4, (1, 8, 64), "float16")
    b = prompt.allocate(4, (1, 8, 64), "float16")
    fill(a, 3)
    fill(b, 4)
    peer_a = Peer(prompt.port, 2, 4, (1, 8, 64), "float16")
    peer_b = Peer(prompt.port, 3, 4, (1, 8, 64), "float16")
    try:
        held = kvdist.LayerEvents()
        first = prompt.transfer(a, [kvdist.Destination(2, peer_a.addrs)], held)
        second = prompt.transfer(b, [kvdist.Destination(3, peer_b.addrs)])
        assert second.wait(10000) == kvdist.StatusCode.SUCCESS
        assert first.wait(0) == kvdist.StatusCode.WAIT_PROCESS_TIMEOUT
        held.ready(0)
        held.ready(1)
        assert first.wait(10000) == kvdist.StatusCode.SUCCESS
        for i in range(4):
            assert np.array_equal(peer_a.read(i), a.tensor(i)), i
            assert np.array_equal(peer_b.read(i), b.tensor(i)), i
    finally:
        peer_a.close()
        peer_b.close()


def test_messages_both_ways_and_refusals(prompt: kvdist.DataDist) -> None:
    peer = Peer(prompt.port, 2, 2, (1, 64), "uint8")
    try:
        assert peer.ask("send", b"want t1") == ("ok", 0)
        assert peer.ask("send", b"\x00binary\xff") == ("ok", 0)
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += prompt.receive(8, 500)
        assert got == [(2, b"want t1"), (2, b"\x00binary\xff")]
        prompt.send(2, b"done t1")
        assert peer.ask("receive", 5000) == ("ok", [(1, b"done t1")])
        with pytest.raises(kvdist.KvdistError) as e:
            prompt.send(9, b"x")
        assert e.value.code == kvdist.StatusCode.NOT_YET_LINK
        with pytest.raises(kvdist.KvdistError) as e:
            prompt.send(2, b"x" * (60 * 1024 + 1))
        assert e.value.code == kvdist.StatusCode.PARAM_INVALID
        assert prompt.receive(8, 0) == []
    finally:
        peer.close()


def test_one_tensor_per_layer_paged_push(prompt: kvdist.DataDist) -> None:
    """vLLM's CPU layout: a layer is one tensor [blocks, heads, block, 2 * head]."""
    layers = [
        np.random.default_rng(i).integers(0, 255, (8, 2, 4, 16), dtype=np.uint8) for i in range(3)
    ]
    src = prompt.register(layers, blocks=True, tensors_per_layer=1)
    assert src.num_layers == 3
    peer = Peer(prompt.port, 2, 3, (8, 2, 4, 16), "uint8")
    try:
        task = prompt.transfer(
            src, [kvdist.Destination(2, peer.addrs)], src_blocks=[1, 2, 6], dst_blocks=[4, 5, 0]
        )
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS
        for i in range(3):
            got = peer.read(i)
            assert np.array_equal(got[4:6], layers[i][1:3]), i
            assert np.array_equal(got[0], layers[i][6]), i
            assert not got[[1, 2, 3, 6, 7]].any(), i  # untouched blocks stay zero
        with pytest.raises(kvdist.KvdistError) as e:
            prompt.transfer(
                src,
                [kvdist.Destination(2, peer.addrs + [peer.addrs[0]])],
                src_blocks=[0],
                dst_blocks=[0],
            )
        assert e.value.code == kvdist.StatusCode.PARAM_INVALID
    finally:
        peer.close()


def test_views_of_an_allocation_push_and_receive_in_place(prompt: kvdist.DataDist) -> None:
    """Tensors carved out of one allocate() are registered as a view (no new
    registration) on both sides; bytes land where they should; a tensor
    straddling another cache is refused; the allocation outlives its view."""
    whole = prompt.allocate(1, (3, 8, 2, 4, 16), "uint8")
    layers = list(whole.tensor(0))
    for i, t in enumerate(layers):
        t[...] = np.random.default_rng(i).integers(0, 255, t.shape, dtype=np.uint8)
    src = prompt.register(layers, blocks=True, tensors_per_layer=1)
    other = prompt.allocate(1, (8, 2, 4, 16), "uint8")
    with pytest.raises(kvdist.KvdistError) as e:
        prompt.register([layers[0], other.tensor(0)], tensors_per_layer=1)
    assert e.value.code == kvdist.StatusCode.PARAM_INVALID
    peer = Peer(prompt.port, 2, 3, (8, 2, 4, 16), "uint8", view=True)
    try:
        whole.free()  # deferred: the view still holds it
        task = prompt.transfer(
            src, [kvdist.Destination(2, peer.addrs)], src_blocks=[0, 5], dst_blocks=[7, 1]
        )
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS
        for i in range(3):
            got = peer.read(i)
            assert np.array_equal(got[7], layers[i][0]), i
            assert np.array_equal(got[1], layers[i][5]), i
            assert not got[[0, 2, 3, 4, 5, 6]].any(), i
    finally:
        peer.close()
        src.free()


@pytest.mark.parametrize("lanes", [1, 3])
def test_copy_lanes_stripe_large_layers(lanes: int) -> None:
    """Layers above a stripe are cut over the lanes; every byte lands."""
    with kvdist.DataDist("prompt", 1, listen="127.0.0.1:0", copy_lanes=lanes) as dd:
        src = dd.allocate(4, (1, 1 << 20), "float32")  # 4 MiB tensors
        fill(src, lanes)
        peer = Peer(dd.port, 2, 4, (1, 1 << 20), "float32")
        try:
            task = dd.transfer(src, [kvdist.Destination(2, peer.addrs)])
            assert task.wait(20000) == kvdist.StatusCode.SUCCESS, task.messages()
            for i in range(4):
                assert np.array_equal(peer.read(i)[0], src.tensor(i)[0]), i
        finally:
            peer.close()
