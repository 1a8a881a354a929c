"""The vLLM connector's parameters and messages, without vLLM (which
``import kvdist`` must not import)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kvdist.integrations.vllm.protocol import (
    Cancel,
    ConnectorOptions,
    DecodeParams,
    Done,
    ParamsError,
    PrefillParams,
    Want,
    decode_message,
)


def test_import_kvdist_does_not_import_vllm() -> None:
    code = (
        "import sys, kvdist, kvdist.integrations.vllm.protocol; "
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


GOOD = {
    "do_remote_prefill": True,
    "transfer_id": "abc",
    "remote_host": "127.0.0.1",
    "remote_port": 26000,
    "remote_cluster_id": 1,
}


def test_decode_params() -> None:
    assert DecodeParams.parse(None) is None
    assert DecodeParams.parse({"do_remote_prefill": False}) is None
    assert DecodeParams.parse(GOOD) == DecodeParams("abc", "127.0.0.1", 26000, 1)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"transfer_id": None}, "transfer_id"),
        ({"transfer_id": ""}, "transfer_id"),
        ({"remote_port": "26000"}, "remote_port"),
        ({"remote_port": 70000}, "remote_port"),
        ({"remote_port": True}, "remote_port"),
        ({"remote_cluster_id": -1}, "remote_cluster_id"),
        ({"remote_host": 5}, "remote_host"),
    ],
)
def test_malformed_decode_params_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ParamsError, match=field):
        DecodeParams.parse({**GOOD, **change})
    missing = dict(GOOD)
    del missing[field]
    with pytest.raises(ParamsError, match=f"'{field}' is missing"):
        DecodeParams.parse(missing)


def test_prefill_params_and_options() -> None:
    assert PrefillParams.parse({"do_remote_decode": True, "transfer_id": "x"}).transfer_id == "x"
    with pytest.raises(ParamsError):
        PrefillParams.parse({"do_remote_decode": True})
    opts = ConnectorOptions.parse({"listen": "127.0.0.1:1"}, 1)
    assert opts.cluster_id == 1 and opts.listen == "127.0.0.1:1"
    with pytest.raises(ParamsError, match="unknown keys"):
        ConnectorOptions.parse({"lisen": "x"}, 1)
    with pytest.raises(ParamsError, match="cluster_id"):
        ConnectorOptions.parse({"cluster_id": "2"}, 1)
    assert ConnectorOptions.parse({"push": "after_forward"}, 1).push == "after_forward"
    with pytest.raises(ParamsError, match="push"):
        ConnectorOptions.parse({"push": "later"}, 1)


def test_messages_round_trip_and_garbage_is_ignored() -> None:
    w = Want("t", 2, [1, 2], 4096, 100, 1, [7, 8, 9])
    assert decode_message(w.encode()) == w
    assert decode_message(Done("t", False, "why").encode()) == Done("t", False, "why")
    assert decode_message(Cancel("t").encode()) == Cancel("t")
    for bad in [
        b"",
        b"\xff",
        b"[]",
        b'{"op": "want"}',
        b'{"op": "want", "id": "t", "cluster": 2, "addrs": [-1], "block_bytes": 1,'
        b' "tokens": 1, "first_block": 0}',
        b'{"op": "done", "id": 5, "ok": true}',
        b'{"op": "done", "id": "t", "ok": 1}',
        b'{"op": "nope"}',
        b'{"op": "cancel", "id": "t", "extra": 1}',
    ]:
        assert decode_message(bad) is None, bad
