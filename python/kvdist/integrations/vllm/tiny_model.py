"""A tiny Llama config for vLLM's dummy weights (no download)."""

from __future__ import annotations


def write_tiny_llama(path: str, layers: int = 4, kv_heads: int = 2, head_dim: int = 32) -> str:
    """hidden 128, 4 query heads by default (KV: 256 bytes per token and layer
    in fp16). More kv_heads x head_dim makes a KV-heavy model: a big cache
    for little compute, which is where the transfer shows."""
    from transformers import LlamaConfig

    heads = max(4, kv_heads)
    LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        torch_dtype="float16",
    ).save_pretrained(path)
    return path
