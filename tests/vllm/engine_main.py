"""One vLLM engine for the connector tests, in its own process.

    python engine_main.py ROLE MODEL_DIR JOB_FILE OUT_FILE [EXTRA_CONFIG_JSON]

ROLE: producer (prefill with a push), consumer (decode, its cache pushed to
it), single (no connector). The job file holds {"prompts": [[ids]...],
"transfer_ids": [...], "max_tokens": n, "prefill": {host, port, cluster_id},
"concurrent": bool} and optionally faults to inject (see install_faults) and
"overrides": {index: {kv_transfer_params changes}}. The engine starts, writes
OUT_FILE.ready, waits for OUT_FILE.go, runs the job and writes OUT_FILE: the
generated token ids per prompt, seconds, a hash of the model's weights, and
the share of KV blocks still held once the engine has settled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time


def randomize(model, seed: int = 0) -> None:
    """Same weights in every process, larger than vLLM's dummy ones (which
    make a model repeat itself whatever the context): normal(0, 0.05) from a
    seeded generator, norms at 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.05)


FIRST_BLOCKS: list[int] = []  # first_block of every want this decoder sent


def install_faults(job: dict) -> None:
    """Real crashes and bad inputs at chosen points of the connector:
    crash_after_want: a decoder exits 0.1 s after asking for its first cache;
    slow_layer_s: a prefiller's layer 1 takes that long (a slow model);
    crash_at_layer: a prefiller exits while saving that layer of its first push;
    corrupt_blocks: the wants of these transfer ids carry block ids far
    outside the decoder's cache (what a stale or hostile peer might send).
    """
    import dataclasses

    from kvdist.integrations.vllm import protocol, worker as w

    start_load, save_layer = w.WorkerSide.start_load_kv, w.WorkerSide.save_kv_layer
    corrupt = set(job.get("corrupt_blocks", []))

    encode = protocol.Want.encode

    def corrupt_encode(self):
        FIRST_BLOCKS.append(self.first_block)
        if self.id in corrupt:
            self = dataclasses.replace(self, blocks=[b + 10_000_000 for b in self.blocks])
        return encode(self)

    def start_load_kv(self, meta):
        start_load(self, meta)
        if job.get("crash_after_want") and meta.loads:
            time.sleep(0.1)  # the want leaves on kvdist's progress thread
            os._exit(3)

    def save_kv_layer(self, layer_name, meta):
        idx = self.layer_index.get(layer_name)
        if job.get("crash_at_layer") is not None and idx == job["crash_at_layer"]:
            os._exit(3)
        save_layer(self, layer_name, meta)
        if idx == 1 and job.get("slow_layer_s"):
            time.sleep(job["slow_layer_s"])

    protocol.Want.encode = corrupt_encode
    w.WorkerSide.start_load_kv = start_load_kv
    w.WorkerSide.save_kv_layer = save_kv_layer


def settle(llm, timeout: float = 60.0) -> float:
    """Steps the engine until no KV block is held (pushes finished, blocks
    freed) or the timeout; returns the share still held."""
    core = llm.llm_engine.engine_core.engine_core
    deadline = time.monotonic() + timeout
    while core.scheduler.kv_cache_manager.usage > 0 and time.monotonic() < deadline:
        llm.llm_engine.step()
        time.sleep(0.01)
    return core.scheduler.kv_cache_manager.usage


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    role, model_dir, job_file, out_file = sys.argv[1:5]
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig
    from vllm.inputs import TokensPrompt

    with open(job_file) as f:
        job = json.load(f)
    kw = {}
    if role in ("producer", "consumer"):
        install_faults(job)
        kw["kv_transfer_config"] = KVTransferConfig(
            kv_connector="KvdistConnector",
            kv_connector_module_path="kvdist.integrations.vllm",
            kv_role="kv_producer" if role == "producer" else "kv_consumer",
            kv_connector_extra_config=extra,
            kv_load_failure_policy=job.get("kv_load_failure_policy", "fail"),
        )
    llm = LLM(
        model=model_dir,
        load_format="dummy",
        skip_tokenizer_init=True,
        enforce_eager=True,
        dtype=job.get("dtype", "float16"),
        max_model_len=job.get("max_model_len", 2048),
        block_size=job.get("block_size", 32),
        seed=0,
        kv_cache_memory_bytes=job.get("kv_cache_bytes", 64 << 20),
        **kw,
    )
    core = llm.llm_engine.engine_core.engine_core
    model = core.model_executor.driver_worker.worker.model_runner.model
    randomize(model)
    digest = weights_hash(model)
    in_pool = None
    if role != "single":
        from vllm.distributed.kv_transfer import get_kv_transfer_group

        in_pool = get_kv_transfer_group()._worker.backing is not None

    open(out_file + ".ready", "w").close()
    deadline = time.monotonic() + 300
    while not os.path.exists(out_file + ".go"):
        if time.monotonic() > deadline:
            sys.exit("no go within 300 s")
        time.sleep(0.05)

    prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
    params = []
    for i, tid in enumerate(job["transfer_ids"]):
        extra_args = {}
        max_tokens = job["max_tokens"]
        if role == "producer":
            extra_args["kv_transfer_params"] = {"do_remote_decode": True, "transfer_id": tid}
            max_tokens = 1
        if role == "consumer":
            pre = job["prefill"]
            extra_args["kv_transfer_params"] = {
                "do_remote_prefill": True,
                "transfer_id": tid,
                "remote_host": pre["host"],
                "remote_port": pre["port"],
                "remote_cluster_id": pre["cluster_id"],
            }
        for key, value in job.get("overrides", {}).get(str(i), {}).items():
            if value is None:
                extra_args["kv_transfer_params"].pop(key, None)
            else:
                extra_args["kv_transfer_params"][key] = value
        params.append(
            SamplingParams(
                temperature=0.0, max_tokens=max_tokens, ignore_eos=True, extra_args=extra_args
            )
        )
    results = []
    outs = []
    t0 = time.monotonic()
    if job.get("concurrent", True):
        outs = llm.generate(prompts, params, use_tqdm=False)
        results = [o.outputs[0].token_ids for o in outs]
        kvp = [o.kv_transfer_params for o in outs]
    else:
        kvp = []
        for p, sp in zip(prompts, params):
            o = llm.generate([p], [sp], use_tqdm=False)[0]
            outs.append(o)
            results.append(o.outputs[0].token_ids)
            kvp.append(o.kv_transfer_params)
    elapsed = time.monotonic() - t0
    held = settle(llm) if role != "single" else 0.0
    prefix_hits = sum(bool(o.num_cached_tokens) for o in outs)
    with open(out_file, "w") as f:
        json.dump(
            {
                "tokens": [list(r) for r in results],
                "kv_transfer_params": kvp,
                "elapsed_s": elapsed,
                "weights": digest,
                "kv_in_kvdist_pool": in_pool,
                "blocks_held_after": held,
                "prefix_hits": prefix_hits,
                "want_first_blocks": FIRST_BLOCKS,
                "finish_reasons": [o.outputs[0].finish_reason for o in outs] if outs else [],
            },
            f,
        )
    del llm


if __name__ == "__main__":
    main()
