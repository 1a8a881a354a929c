"""A tiny Llama config for vLLM's dummy weights (no download)."""

from __future__ import annotations


def write_tiny_llama(path: str, layers: int = 4) -> str:
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        torch_dtype="float16",
    ).save_pretrained(path)
    return path
