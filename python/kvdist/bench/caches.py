"""The benchmark's caches: where they live, how they are filled and hashed."""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fill_source", "hash_regions", "make_cache"]


def make_cache(dd: Any, memory: str, num_tensors: int, shape: Any, paged: bool) -> Any:
    """kvdist's own pool, or numpy arrays the caller owns, registered."""
    if memory == "caller":
        # One buffer the caller maps, as vLLM and NIXL's benchmark hold a KV
        # cache, with transparent huge pages asked for (what the system's
        # numpy does for large arrays where it can): the kernel's
        # cross-process copy runs ~2.4x faster into 2 MiB pages than into
        # 4 KiB ones. numpy has no bfloat16: the same bytes as uint16.
        per = int(np.prod(shape)) * 2
        buf = mmap.mmap(-1, per * num_tensors, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            buf.madvise(mmap.MADV_HUGEPAGE)
        flat = np.frombuffer(buf, dtype=np.uint16)
        arrays = [
            flat[i * per // 2 : (i + 1) * per // 2].reshape(shape) for i in range(num_tensors)
        ]
        return dd.register(arrays, blocks=paged)
    return dd.allocate(num_tensors, shape, "bfloat16", blocks=paged)


def fill_source(cache: Any) -> None:
    """A pattern that differs per tensor and per element."""
    for i in range(cache.num_tensors):
        t = cache.tensor(i).reshape(-1)
        t[...] = (np.arange(t.size, dtype=np.uint32) * 2654435761 + i).astype(np.uint16)


def hash_regions(cache: Any, blocks: Sequence[int] | None, block_bytes: int) -> list[str]:
    """Per tensor: a digest of the whole tensor, or of its blocks in table order."""
    out = []
    for i in range(cache.num_tensors):
        raw = cache.tensor(i).view(np.uint8).reshape(-1)
        h = hashlib.blake2b(digest_size=8)
        if blocks is None:
            h.update(raw.data)
        else:
            for b in blocks:
                h.update(raw[b * block_bytes : (b + 1) * block_bytes].data)
        out.append(h.hexdigest())
    return out
