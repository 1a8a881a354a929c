"""A DECODER process for the llm_datadist tests (driven by ``DecoderPeer``).

argv[1]: JSON spec (see ``llm_helpers.DecoderPeer``). Prints one JSON line
with its caches' addresses and the link result, then answers JSON commands
read from stdin: ``dump``, ``clear``, ``verify``, ``check_link``, ``pull``
(``pull_cache`` / ``pull_blocks`` into one of its caches), ``quit``
(``"unlink": true`` unlinks before finalising).
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
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
)
from llm_helpers import pattern


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _clusters(prompts: list[list[Any]]) -> list[LLMClusterInfo]:
    clusters = []
    for cluster_id, ip, port in prompts:
        info = LLMClusterInfo()
        info.remote_cluster_id = cluster_id
        info.append_remote_ip_info(ip, port)
        clusters.append(info)
    return clusters


def _key(spec: list[Any]) -> Any:
    """["req", cluster, req_id] | ["prefix", cluster, prefix_id] |
    ["id", cluster, cache_id, batch] | ["blocks", cluster, model_id]."""
    kind, cluster = spec[0], spec[1]
    if kind == "req":
        return CacheKey(cluster, spec[2])
    if kind == "prefix":
        return CacheKey(cluster, 2**64 - 1, 0, spec[2])
    if kind == "id":
        return CacheKeyByIdAndIndex(cluster, spec[2], spec[3])
    return BlocksCacheKey(cluster, spec[2])


def _pull(manager: Any, caches: list[Any], command: dict[str, Any]) -> dict[str, Any]:
    """pull_cache (or pull_blocks with "blocks": [prompt_blocks, decoder_blocks])."""
    kwargs = dict(command.get("kwargs", {}))
    for name in ("src_layer_range", "dst_layer_range"):
        if name in kwargs:
            kwargs[name] = range(*kwargs[name])
    cache = caches[command["cache"]]
    try:
        if "blocks" in command:
            prompt_blocks, decoder_blocks = command["blocks"]
            manager.pull_blocks(
                _key(command["key"]), cache, prompt_blocks, decoder_blocks, **kwargs
            )
        else:
            manager.pull_cache(_key(command["key"]), cache, *command.get("args", []), **kwargs)
    except LLMException as exc:
        return {"error": int(exc.status_code), "message": str(exc)}
    return {"ok": True}


def main() -> int:
    """Runs the peer until ``quit`` or end of input."""
    spec = json.loads(sys.argv[1])
    datadist = LLMDataDist(LLMRole.DECODER, spec["cluster_id"])
    config = LLMConfig()
    config.device_id = 0
    try:
        options = config.generate_options()
        options.update(spec.get("options", {}))  # e.g. kvdist.AuthSecret
        datadist.init(options)
        manager = datadist.kv_cache_manager
        caches = []
        for cache_spec in spec["caches"]:
            desc = CacheDesc(
                cache_spec["num_tensors"], cache_spec["shape"], DataType[cache_spec["dtype"]]
            )
            if cache_spec.get("blocks"):
                cache = manager.allocate_blocks_cache(desc)
            else:
                cache = manager.allocate_cache(desc)
            for addr in cache.per_device_tensor_addrs[0]:
                ctypes.memset(addr, 0, desc.size)
            caches.append(cache)
        clusters = _clusters(spec.get("prompts", []))
        ret, rets = (LLMStatusCode.LLM_SUCCESS, [])
        if clusters:
            ret, rets = datadist.link_clusters(clusters, timeout=5000)
    except LLMException as exc:
        _say({"error": f"{exc} ({exc.status_code})"})
        return 1
    _say(
        {
            "caches": [
                {"addrs": c.per_device_tensor_addrs[0], "size": c.cache_desc.size} for c in caches
            ],
            "link": [int(ret), [int(r) for r in rets]],
        }
    )
    for line in sys.stdin:
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "dump":
            cache = caches[command["cache"]]
            size = cache.cache_desc.size
            data = [
                base64.b64encode(ctypes.string_at(addr, size)).decode()
                for addr in cache.per_device_tensor_addrs[0]
            ]
            _say({"data": data})
        elif cmd == "clear":
            cache = caches[command["cache"]]
            for addr in cache.per_device_tensor_addrs[0]:
                ctypes.memset(addr, 0, cache.cache_desc.size)
            _say({"ok": True})
        elif cmd == "verify":
            # expect: [dst_tensor, src_tensor, src_size, src_offset, length, dst_offset]
            cache = caches[command["cache"]]
            addrs = cache.per_device_tensor_addrs[0]
            bad = []
            for dst_t, src_t, src_size, src_off, length, dst_off in command["expect"]:
                want = pattern(src_t, src_size)[src_off : src_off + length]
                if ctypes.string_at(addrs[dst_t] + dst_off, length) != want:
                    bad.append(dst_t)
            _say({"ok": not bad, "mismatches": bad})
        elif cmd == "pull":
            _say(_pull(manager, caches, command))
        elif cmd == "check_link":
            try:
                datadist.check_link_status(command["cluster"])
                _say({"ok": True})
            except LLMException as exc:
                _say({"error": int(exc.status_code)})
        elif cmd == "quit":
            unlink: list[Any] = []
            if clusters and command.get("unlink"):
                ret, rets = datadist.unlink_clusters(clusters, timeout=5000)
                unlink = [int(ret), [int(r) for r in rets]]
            for cache in caches:
                manager.deallocate_cache(cache)
            datadist.finalize()
            _say({"unlink": unlink, "finalized": True})
            return 0
    datadist.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
