"""The DECODER side of the bench: one command loop, whatever carries it.

The PROMPT drives each DECODER with these messages (bench/channel.py carries
them over a Pipe or over kvdist's own peer messages):

    PROMPT -> DECODER                     DECODER -> PROMPT
    setup shape num_tensors paged memory  ready addrs     (a new destination cache)
    run layers verify_blocks block_bytes zero
                                          armed           (arrivals reset, waiting)
                                          done error arrivals cpu hashes
    pull cache_id src_blocks dst_blocks verify_blocks block_bytes zero
                                          armed           (zeroed if asked, waiting)
    go                                    pulled error seconds cpu message
                                          hashes hashes   (None: not asked)
    free                                  freed           (the cache is dropped)
    quit                                  -               (the process ends)

A DECODER on another host (``--role decoder``) first links, then says
``hello cluster_id``; the PROMPT answers with ``setup`` for each session.

``pull`` (``--mode pull``): the PROMPT names its source cache (its cache id,
and for a paged cache the block mapping of the push cases); on ``go`` this
DECODER pulls the whole cache into its own (batch 0 into batch 0, or the
blocks) and answers with its own timing and CPU of the pull, then the hashes.
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from typing import Any

from kvdist.bench.caches import hash_regions, make_cache
from kvdist.bench.channel import Mailbox, MessageChannel, PipeChannel

__all__ = ["PROMPT_CLUSTER", "WAIT_S", "cpu_seconds", "decoder_main", "remote_decoder", "serve"]

PROMPT_CLUSTER = 1  # the bench's PROMPT cluster id; DECODERs are 2, 3, ...
WAIT_S = 120.0


def cpu_seconds() -> float:
    """CPU time of this process, all threads (ns resolution; os.times() has 10 ms)."""
    return time.process_time()


def serve(dd: Any, channel: Any, idle_s: float | None = None) -> None:
    """Answers the PROMPT's commands until ``quit`` (or no command for ``idle_s``)."""
    import kvdist

    cache = None
    while True:
        msg = channel.recv(idle_s)
        kind = msg[0]
        if kind == "quit":
            return
        if kind == "setup":
            _, shape, num_tensors, paged, memory = msg
            if cache is not None:
                cache.free()
            cache = make_cache(dd, memory, num_tensors, tuple(shape), paged)
            for i in range(num_tensors):
                cache.tensor(i)[...] = 0  # first touch before timing
            channel.send(("ready", list(cache.addrs)))
        elif kind == "free":
            if cache is not None:
                cache.free()
                cache = None
            channel.send(("freed",))
        elif kind == "run":
            _, layers, verify_blocks, block_bytes, zero = msg
            if zero:  # --zero-check: nothing left from an earlier push counts
                for i in range(cache.num_tensors):
                    cache.tensor(i)[...] = 0
            dd.reset_arrivals(cache)
            channel.send(("armed",))
            cpu0 = cpu_seconds()
            arrivals = []
            error = 0
            for layer in range(layers):
                try:
                    dd.wait_layer(cache, layer, int(WAIT_S * 1000))
                except kvdist.KvdistError as e:
                    error = e.code
                    break
                arrivals.append(time.monotonic())
            cpu = cpu_seconds() - cpu0
            hashes = None
            if verify_blocks is not None:
                blocks = None if verify_blocks == "all" else verify_blocks
                hashes = hash_regions(cache, blocks, block_bytes)
            channel.send(("done", error, arrivals, cpu, hashes))
        elif kind == "pull":
            _pull(dd, channel, cache, *msg[1:])
        else:
            raise ValueError(f"unknown bench command {kind!r}")


def _pull(
    dd: Any,
    channel: Any,
    cache: Any,
    cache_id: int,
    src_blocks: list[int] | None,
    dst_blocks: list[int] | None,
    verify_blocks: Any,
    block_bytes: int,
    zero: bool,
) -> None:
    """One timed pull of the PROMPT's cache ``cache_id`` into ``cache``."""
    if zero:
        for i in range(cache.num_tensors):
            cache.tensor(i)[...] = 0
    channel.send(("armed",))
    go = channel.recv(WAIT_S)
    if go[0] != "go":
        raise ValueError(f"expected go, got {go[0]!r}")
    error, message = 0, ""
    cpu0 = cpu_seconds()
    start = time.monotonic()
    try:
        dd.pull(
            PROMPT_CLUSTER,
            cache,
            cache_id=cache_id,
            src_batch_index=0,
            src_blocks=src_blocks,
            dst_blocks=dst_blocks,
            timeout_ms=int(WAIT_S * 1000),
        )
    except Exception as e:  # noqa: BLE001 - reported to the PROMPT as the case's error
        error, message = int(getattr(e, "code", -1) or -1), str(e)
    seconds = time.monotonic() - start
    cpu = cpu_seconds() - cpu0
    channel.send(("pulled", error, seconds, cpu, message))
    hashes = None
    if verify_blocks is not None and error == 0:
        blocks = None if verify_blocks == "all" else verify_blocks
        hashes = hash_regions(cache, blocks, block_bytes)
    channel.send(("hashes", hashes))


def decoder_main(conn: Connection, port: int, cluster_id: int, tls: str, pool_bytes: int) -> None:
    """A DECODER the PROMPT spawned on this host: links to 127.0.0.1:port, serves the Pipe."""
    if tls:
        os.environ["UCX_TLS"] = tls
    import kvdist

    with kvdist.DataDist(
        "decoder", cluster_id, transfer_timeout_ms=60000, pool_bytes=pool_bytes
    ) as dd:
        dd.link(PROMPT_CLUSTER, "127.0.0.1", port, timeout_ms=10000)
        serve(dd, PipeChannel(conn))


def remote_decoder(
    host: str, port: int, cluster_id: int, tls: str, link_wait_s: float = 60.0
) -> int:
    """``--role decoder``: links to the PROMPT at host:port (retrying while it is not
    listening yet) and serves its commands over kvdist's peer messages."""
    if tls:
        os.environ["UCX_TLS"] = tls
    import kvdist

    with kvdist.DataDist("decoder", cluster_id, transfer_timeout_ms=60000) as dd:
        deadline = time.monotonic() + link_wait_s
        while True:
            try:
                dd.link(PROMPT_CLUSTER, host, port, timeout_ms=5000)
                break
            except kvdist.KvdistError as e:
                if time.monotonic() > deadline:
                    print(f"kvdist-bench decoder: {e}", flush=True)
                    return 1
                time.sleep(0.2)
        channel = MessageChannel(Mailbox(dd), PROMPT_CLUSTER)
        channel.send(("hello", cluster_id))
        # Between two sessions the PROMPT sets up its next source cache: a
        # generous idle limit, so a DECODER whose PROMPT died still ends.
        try:
            serve(dd, channel, idle_s=1800.0)
        except TimeoutError:
            print("kvdist-bench decoder: the PROMPT went quiet; leaving", flush=True)
            return 1
    return 0
