"""Authenticated links from Python: ``kvdist.DataDist(auth_secret=...)`` and
the ``kvdist.AuthSecret`` option of ``llm_datadist`` (a DECODER process)."""

from __future__ import annotations

import kvdist
import numpy as np
import pytest
from helpers.llm_helpers import DecoderPeer

SECRET = "python-test-secret-51c2"
LINK_FAILED = int(kvdist.StatusCode.LINK_FAILED)
CACHES = [{"num_tensors": 2, "shape": [4, 1024], "dtype": "DT_INT8"}]


@pytest.fixture(scope="module")
def prompt():
    with kvdist.DataDist("prompt", 1, listen="127.0.0.1:0", auth_secret=SECRET) as dd:
        yield dd


def link_spec(prompt: kvdist.DataDist, cluster: int, secret: str | None) -> dict:
    spec = {"cluster_id": cluster, "prompts": [[1, "127.0.0.1", prompt.port]], "caches": CACHES}
    if secret is not None:
        spec["options"] = {"kvdist.AuthSecret": secret}
    return spec


@pytest.mark.parametrize("secret, code", [(SECRET, 0), ("wrong", LINK_FAILED), (None, LINK_FAILED)])
def test_llm_datadist_option_decides_the_link(prompt, secret, code) -> None:
    cluster = {SECRET: 2, "wrong": 3, None: 4}[secret]
    peer = DecoderPeer(link_spec(prompt, cluster, secret))
    try:
        assert peer.link == [code, [code]]
        assert (cluster in prompt.linked) == (code == 0)
    finally:
        peer.close()


def test_native_link_error_says_why(prompt) -> None:
    with kvdist.DataDist("decoder", 5, auth_secret="not-the-secret") as decoder:
        with pytest.raises(kvdist.KvdistError) as info:
            decoder.link(1, "127.0.0.1", prompt.port)
        assert info.value.code == LINK_FAILED
        assert "authentication failed" in str(info.value)
    with kvdist.DataDist("decoder", 6, auth_secret=SECRET) as decoder:
        decoder.link(1, "127.0.0.1", prompt.port)
        cache = decoder.allocate(2, (1, 4, 1024), "int8")
        src = prompt.allocate(2, (1, 4, 1024), "int8")
        for t in range(2):
            src.tensor(t)[:] = (np.arange(4096).reshape(1, 4, 1024) * (t + 3)) % 127
        task = prompt.transfer(src, [kvdist.Destination(6, cache.addrs)])
        assert task.wait(10000) == kvdist.StatusCode.SUCCESS
        decoder.wait_layer(cache, 0, 5000)
        for t in range(2):
            assert np.array_equal(cache.tensor(t), src.tensor(t)), t
