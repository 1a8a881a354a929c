"""A DECODER process for the native-API tests, driven over a multiprocessing pipe."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any


def decoder_main(
    conn: Connection,
    prompt_port: int,
    cluster_id: int,
    num_tensors: int,
    shape: tuple[int, ...],
    dtype: str,
    view: bool = False,
) -> None:
    """Links to the PROMPT on 127.0.0.1:prompt_port, allocates a cache, sends
    ("addrs", [...]), then answers commands until ("quit",)."""
    import kvdist

    with kvdist.DataDist("decoder", cluster_id) as dd:
        dd.link(1, "127.0.0.1", prompt_port)
        if view:
            # Tensors carved out of one kvdist allocation, registered as a view
            # (how the vLLM connector lets vLLM allocate its KV cache).
            import numpy as np

            whole = dd.allocate(1, (num_tensors, *shape), dtype)
            cache = dd.register(list(whole.tensor(0)), tensors_per_layer=1)
            assert [int(t.ctypes.data) for t in whole.tensor(0)] == cache.addrs
            assert np.shares_memory(whole.tensor(0), cache.tensor(0))
        else:
            cache = dd.allocate(num_tensors, shape, dtype)
        for i in range(num_tensors):
            cache.tensor(i)[...] = 0
        conn.send(("addrs", cache.addrs))
        while True:
            cmd: Any = conn.recv()
            if cmd[0] == "quit":
                break
            if cmd[0] == "wait":
                try:
                    dd.wait_layer(cache, cmd[1], cmd[2])
                    conn.send(("ok", 0))
                except kvdist.KvdistError as e:
                    conn.send(("err", e.code))
            elif cmd[0] == "send":
                dd.send(1, cmd[1])
                conn.send(("ok", 0))
            elif cmd[0] == "receive":
                conn.send(("ok", dd.receive(16, cmd[1])))
            elif cmd[0] == "pull":
                try:
                    dd.pull(1, cache, **cmd[1])
                    conn.send(("ok", 0))
                except kvdist.KvdistError as e:
                    conn.send(("err", e.code))
            elif cmd[0] == "read":
                conn.send(("ok", cache.tensor(cmd[1]).copy()))
