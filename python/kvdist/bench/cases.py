"""Model presets, cache layouts and block tables of the benchmark cases."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

__all__ = ["AUTO", "MODELS", "Case", "Model", "block_table"]


@dataclass(frozen=True)
class Model:
    """The KV-cache shape of a model: per layer, K and V of tokens x heads x dim."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2  # bf16

    def token_bytes(self) -> int:
        """Bytes of one token in one tensor (K or V of one layer)."""
        return self.kv_heads * self.head_dim * self.dtype_bytes


MODELS = {
    "llama3-8b": Model("llama3-8b", 32, 8, 128),
    "llama3-70b": Model("llama3-70b", 80, 8, 128),
    "qwen2.5-7b": Model("qwen2.5-7b", 28, 4, 128),
}


# compute_ms meaning "as long as one layer's bulk transfer" (--compute-ms auto).
AUTO = -1.0


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    model: Model
    tokens: int
    layout: str = "contiguous"  # or "paged"
    block_tokens: int = 16
    table: str = "sequential"  # paged: sequential | random | mixed
    destinations: int = 1
    mode: str = "bulk"  # or "layerwise"
    compute_ms: float = 0.0  # layer-wise: simulated prefill per layer (AUTO: one layer's transfer)
    compute: str = "sleep"  # or "cpu": a real CPU workload of compute_ms
    tls: str = ""  # UCX_TLS ("" = UCX's default)
    memory: str = "own"  # own: kvdist's pool on both sides; caller: numpy arrays registered
    lanes: int = 0  # copy lanes of the PROMPT (0: kvdist's default)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def lanes_used(self) -> int:
        """The PROMPT's copy lanes: as asked, or kvdist's default (one per CPU, at most 8)."""
        return self.lanes if self.lanes else max(1, min(8, os.cpu_count() or 1))

    @property
    def paged(self) -> bool:
        return self.layout == "paged"

    @property
    def tensor_bytes(self) -> int:
        return self.tokens * self.model.token_bytes()

    @property
    def block_bytes(self) -> int:
        return self.block_tokens * self.model.token_bytes()

    @property
    def num_blocks(self) -> int:
        return -(-self.tokens // self.block_tokens)

    @property
    def bytes_per_destination(self) -> int:
        per_tensor = self.num_blocks * self.block_bytes if self.paged else self.tensor_bytes
        return 2 * self.model.layers * per_tensor

    @property
    def put_bytes(self) -> int:
        """The size of one put before merging (a tensor, or a block)."""
        return self.block_bytes if self.paged else self.tensor_bytes

    def cache_shape(self) -> tuple[int, ...]:
        """Shape of one tensor of the source (and destination) cache, in bf16 elements."""
        m = self.model
        if self.paged:
            return (self.num_blocks, self.block_tokens, m.kv_heads, m.head_dim)
        return (1, self.tokens, m.kv_heads, m.head_dim)

    def label(self) -> str:
        parts = [self.model.name, f"{self.tokens}tok", self.layout]
        if self.paged:
            parts += [f"b{self.block_tokens}", self.table]
        parts += [f"x{self.destinations}", self.mode]
        if self.mode == "layerwise":
            ms = "auto" if self.compute_ms == AUTO else f"{self.compute_ms:g}ms"
            parts.append(f"{ms}-{self.compute}")
        if self.memory != "own":
            parts.append(f"{self.memory}-memory")
        if self.lanes:
            parts.append(f"lanes={self.lanes}")
        if self.tls:
            parts.append(f"tls={self.tls}")
        return " ".join(parts)


def block_table(kind: str, n: int, seed: int) -> list[int]:
    """A block table of n blocks out of a pool of n: sequential, a random
    permutation, or mixed (runs of 1-16 consecutive blocks, shuffled)."""
    rng = random.Random(seed)
    if kind == "sequential":
        return list(range(n))
    if kind == "random":
        table = list(range(n))
        rng.shuffle(table)
        return table
    if kind == "mixed":
        runs: list[list[int]] = []
        start = 0
        while start < n:
            length = min(n - start, rng.randint(1, 16))
            runs.append(list(range(start, start + length)))
            start += length
        rng.shuffle(runs)
        return [b for run in runs for b in run]
    raise ValueError(f"unknown block table {kind!r}")
