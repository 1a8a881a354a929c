"""Which memory path a push into vLLM's KV cache takes, and how fast.

Two processes on this host, kvdist's native API, the KV cache in vLLM's CPU
layout (one tensor per layer, [blocks, kv_heads, block_size, 2 * head_dim],
fp16). The PROMPT pushes every block; the DECODER's cache is either
vLLM-style tensors cut from one kvdist allocation (what KvdistConnector sets
up through vLLM's get_mem_pool_context) or torch tensors registered in place
(what a connector without the hook gets). Bytes are compared after each case.

    python3 bench/vllm/memory_path.py [--layers 32] [--blocks 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np

import kvdist

HEADS, BLOCK, HEAD_DIM = 8, 32, 128


def decoder(conn, port: int, kind: str, layers: int, shape: tuple[int, ...]) -> None:
    import torch

    with kvdist.DataDist("decoder", 2) as dd:
        dd.link(1, "127.0.0.1", port)
        if kind == "pool":
            whole = dd.allocate(1, (layers, *shape), "float16")
            cache = dd.register(list(whole.tensor(0)), blocks=True, tensors_per_layer=1)
        else:
            tensors = [torch.zeros(shape, dtype=torch.float16) for _ in range(layers)]
            cache = dd.register(tensors, blocks=True, tensors_per_layer=1)
        conn.send(cache.addrs)
        while conn.recv() == "read":
            conn.send([cache.tensor(i).copy() for i in range(layers)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--blocks", type=int, default=128)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--json")
    a = p.parse_args()
    shape = (a.blocks, HEADS, BLOCK, 2 * HEAD_DIM)
    layer_bytes = int(np.prod(shape)) * 2
    ctx = mp.get_context("spawn")
    rows = []
    with kvdist.DataDist("prompt", 1, listen="127.0.0.1:0") as prompt:
        rng = np.random.default_rng(0)
        src_layers = [rng.standard_normal(shape).astype(np.float16) for _ in range(a.layers)]
        src = prompt.register(src_layers, blocks=True, tensors_per_layer=1)
        for kind in ("pool", "registered"):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=decoder, args=(theirs, prompt.port, kind, a.layers, shape))
            proc.start()
            addrs = ours.recv()
            blocks = list(range(a.blocks))
            for table, dst in (
                ("sequential", blocks),
                ("random", [int(x) for x in rng.permutation(a.blocks)]),
            ):
                times = []
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    task = prompt.transfer(
                        src, [kvdist.Destination(2, addrs)], src_blocks=blocks, dst_blocks=dst
                    )
                    if task.wait(60000) != kvdist.StatusCode.SUCCESS:
                        raise SystemExit(f"push failed: {task.messages()}")
                    times.append(time.perf_counter() - t0)
                ours.send("read")
                got = ours.recv()
                for i in range(a.layers):
                    if not np.array_equal(got[i][dst], src_layers[i]):
                        raise SystemExit(f"{kind}/{table}: layer {i} differs")
                gbps = a.layers * layer_bytes / min(times[1:]) / 1e9
                rows.append({"destination": kind, "table": table, "GB/s": round(gbps, 2)})
                print(f"destination {kind:10s} {table:10s} {gbps:5.1f} GB/s (bytes verified)")
            ours.send("quit")
            proc.join(30)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"layers": a.layers, "layer_bytes": layer_bytes, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
