"""A CacheManager-mode LLMDataDist in its own process (the original allows
one per process), for tests/python/test_llm_datadist_cache_manager.py.

argv[1]: JSON ``{"cluster_id": n, "options": {...}}``. Prints ``{"ready": true}``
and then answers JSON commands on stdin, one line each:

- ``{"cmd": "call", "method": name, "args": [...], "kwargs": {...}}`` runs
  ``cache_manager.<name>`` (or ``datadist.<name>`` for ``link_clusters``,
  ``unlink_clusters``, ``switch_role``, ``link``, ``unlink``,
  ``query_register_mem_status``); arguments may be ``{"cache": i}``
  (the i-th cache this peer made), ``{"key": [...]}`` (see ``_key``),
  ``{"range": [a, b]}``, ``{"cluster": [id, ip, port]}`` or
  ``{"ranks": {"id": rank}}`` (a dict with int keys). Answers
  ``{"ok": result}`` (a new cache's index for allocate/register) or
  ``{"error": code, "type": exception class name}``.
- ``{"cmd": "fill", "cache": i, "seed": s}``, ``{"cmd": "dump", "cache": i}``
  (base64 of every tensor), ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import base64
import ctypes
import json
import sys
from typing import Any

from llm_datadist import (
    BlocksCacheKey,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    DataType,
    LLMClusterInfo,
    LLMDataDist,
    LLMException,
    LLMRole,
)
from llm_helpers import pattern


def _key(spec: list[Any]) -> Any:
    kind, cluster = spec[0], spec[1]
    if kind == "req":
        return CacheKey(cluster, spec[2])
    if kind == "id":
        return CacheKeyByIdAndIndex(cluster, spec[2], spec[3] if len(spec) > 3 else 0)
    return BlocksCacheKey(cluster, spec[2])


def main() -> int:
    spec = json.loads(sys.argv[1])
    datadist = LLMDataDist(LLMRole.DECODER, spec["cluster_id"])
    datadist.init(spec["options"])
    manager = datadist.cache_manager
    caches: list[Any] = []

    def arg(value: Any) -> Any:
        if isinstance(value, dict) and "cache" in value:
            return caches[value["cache"]]
        if isinstance(value, dict) and "key" in value:
            return _key(value["key"])
        if isinstance(value, dict) and "range" in value:
            return range(*value["range"])
        if isinstance(value, dict) and "desc" in value:
            d = value["desc"]
            return CacheDesc(d["num_tensors"], d["shape"], DataType[d["dtype"]])
        if isinstance(value, dict) and "ranks" in value:
            return {int(k): v for k, v in value["ranks"].items()}
        if isinstance(value, dict) and "cluster" in value:
            cluster_id, ip, port = value["cluster"]
            info = LLMClusterInfo()
            info.remote_cluster_id = cluster_id
            info.append_local_ip_info("127.0.0.1", 0)
            info.append_remote_ip_info(ip, port)
            return [info]
        return value

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "fill":
            cache = caches[command["cache"]]
            for t, addr in enumerate(cache.tensor_addrs):
                data = pattern(t, cache.cache_desc.size, command["seed"])
                ctypes.memmove(addr, data, len(data))
            print(json.dumps({"ok": True}), flush=True)
            continue
        if command["cmd"] == "dump":
            cache = caches[command["cache"]]
            size = cache.cache_desc.size
            data = [
                base64.b64encode(ctypes.string_at(a, size)).decode() for a in cache.tensor_addrs
            ]
            print(json.dumps({"ok": data}), flush=True)
            continue
        method = command["method"]
        on_datadist = (
            "link_clusters",
            "unlink_clusters",
            "switch_role",
            "link",
            "unlink",
            "query_register_mem_status",
        )
        owner = datadist if method in on_datadist else manager
        try:
            result = getattr(owner, method)(
                *[arg(a) for a in command.get("args", [])],
                **{k: arg(v) for k, v in command.get("kwargs", {}).items()},
            )
        except LLMException as exc:
            print(json.dumps({"error": int(exc.status_code), "type": "LLMException"}), flush=True)
            continue
        except (TypeError, ValueError) as exc:
            print(json.dumps({"error": -1, "type": type(exc).__name__}), flush=True)
            continue
        if hasattr(result, "tensor_addrs"):
            caches.append(result)
            result = {"index": len(caches) - 1, "cache_id": result.cache_id}
        elif isinstance(result, tuple):
            result = [int(result[0]), [int(r) for r in result[1]]]
        elif hasattr(result, "name"):  # an enum (RegisterMemStatus)
            result = result.name
        print(json.dumps({"ok": result}), flush=True)
    datadist.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
