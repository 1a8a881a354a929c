"""KvdistConnector when things go wrong: a decoder or the prefiller dies
mid-push, bad requests. Real engines, real crashes (os._exit in a hook at
the named point), real kvdist links; nothing hangs and only the requests
concerned are hurt."""

from __future__ import annotations

from conftest import free_port, prompts

PREFILL = {"cluster_id": 1, "want_timeout_s": 200, "transfer_timeout_ms": 3000}


def job(ps, port, ids, **kw):
    return {
        "prompts": ps,
        "transfer_ids": ids,
        "max_tokens": 6,
        "prefill": {"host": "127.0.0.1", "port": port, "cluster_id": 1},
        **kw,
    }


def test_decoder_dies_mid_push_only_its_requests_fail(engines):
    """Decoder A asks for its caches and dies while the prefiller computes
    (layer 1 takes 1 s); decoder B's requests on the same prefiller finish
    with the right tokens, and the prefiller frees every block."""
    a, b = prompts(3, 64, 400, seed=21), prompts(3, 64, 400, seed=22)
    ida, idb = [f"a{i}" for i in range(3)], [f"b{i}" for i in range(3)]
    port = free_port()
    engines.start(
        "prefill",
        "producer",
        job(a + b, port, ida + idb, slow_layer_s=1.0),
        dict(PREFILL, listen=f"127.0.0.1:{port}"),
    )
    engines.start("dead", "consumer", job(a, port, ida, crash_after_want=True), {"cluster_id": 2})
    engines.start("live", "consumer", job(b, port, idb), {"cluster_id": 3, "load_timeout_s": 120})
    engines.start("single", "single", job(b, port, idb), {})
    r = engines.run(crash=("dead",))
    assert r["live"]["tokens"] == r["single"]["tokens"]
    assert r["prefill"]["blocks_held_after"] == 0.0, "the prefiller kept blocks of a dead decoder"
    assert r["live"]["blocks_held_after"] == 0.0


def test_prefiller_dies_mid_push_decoder_recomputes_in_time(engines):
    """The prefiller dies while saving layer 2 of its first push; the
    decoder sees the link drop, reports the blocks as failed, and vLLM's
    recompute policy computes the prompts itself: right tokens, no hang."""
    ps = prompts(4, 64, 300, seed=31)
    ids = [f"t{i}" for i in range(4)]
    port = free_port()
    engines.start(
        "prefill",
        "producer",
        job(ps, port, ids, crash_at_layer=2),
        dict(PREFILL, listen=f"127.0.0.1:{port}"),
    )
    engines.start(
        "decode",
        "consumer",
        job(ps, port, ids, kv_load_failure_policy="recompute"),
        {"cluster_id": 2, "load_timeout_s": 60},
    )
    engines.start("single", "single", job(ps, port, ids), {})
    r = engines.run(crash=("prefill",))
    assert r["decode"]["tokens"] == r["single"]["tokens"]
    # Well inside load_timeout_s: the link drop, not the deadline, ended it.
    assert r["decode"]["elapsed_s"] < 30, r["decode"]["elapsed_s"]
    assert r["decode"]["blocks_held_after"] == 0.0


def test_bad_requests_hurt_only_themselves(engines):
    """On one decoder: malformed kv_transfer_params (no remote_port), a
    prefiller address where nobody listens, block ids far outside the cache
    (the prefiller's kvdist refuses to write there). Each of those requests
    is computed locally (recompute policy); the good ones are pushed. On
    the prefiller, a request no decoder ever asks for is prefilled without
    a push once want_timeout_s has passed."""
    ps = prompts(6, 64, 300, seed=41)
    ids = [f"t{i}" for i in range(6)]
    orphan = prompts(1, 100, 100, seed=42)
    port = free_port()
    overrides = {"0": {"remote_port": None}, "1": {"remote_port": free_port()}}
    engines.start(
        "prefill",
        "producer",
        job(ps[2:] + orphan, port, [*ids[2:], "orphan"]),
        dict(PREFILL, listen=f"127.0.0.1:{port}", want_timeout_s=10),
    )
    engines.start(
        "decode",
        "consumer",
        job(
            ps,
            port,
            ids,
            overrides=overrides,
            corrupt_blocks=["t2"],
            kv_load_failure_policy="recompute",
        ),
        {"cluster_id": 2, "load_timeout_s": 60},
    )
    engines.start("single", "single", job(ps, port, ids), {})
    r = engines.run()
    assert r["decode"]["tokens"] == r["single"]["tokens"]
    assert r["decode"]["elapsed_s"] < 30, r["decode"]["elapsed_s"]
    assert r["prefill"]["blocks_held_after"] == 0.0
    assert r["decode"]["blocks_held_after"] == 0.0
    # The orphan: prefilled (one token) without a push, nothing held for it.
    assert r["prefill"]["finish_reasons"][-1] == "length"
    assert r["prefill"]["kv_transfer_params"][-1] is None
    assert r["prefill"]["kv_transfer_params"][:-1] == [
        {"transfer_id": t, "kvdist_push": "in_flight"} for t in ids[2:]
    ]
