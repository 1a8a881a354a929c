"""kvdist inside vLLM: ``KvdistConnector``.

vLLM is imported when the connector class is first looked up (vLLM's
connector factory does that), not by ``import kvdist`` nor by this package:
``protocol`` works without vLLM.
"""

from typing import Any

__all__ = ["KvdistConnector"]


def __getattr__(name: str) -> Any:
    if name == "KvdistConnector":
        from kvdist.integrations.vllm.connector import KvdistConnector

        return KvdistConnector
    raise AttributeError(name)
