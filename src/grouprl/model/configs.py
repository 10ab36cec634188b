"""Configs for tiny causal LMs built from scratch (tests, the embedded default), matching the char
tokenizer."""

from __future__ import annotations

from transformers import LlamaConfig, Qwen2Config

from grouprl.model.tokenizer import SPECIAL_TOKENS

PAD_ID, BOS_ID, EOS_ID = (SPECIAL_TOKENS.index(t) for t in ("<pad>", "<bos>", "<eos>"))


def tiny_llama_config(
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 344,
    max_position_embeddings: int = 256,
) -> LlamaConfig:
    """A small Llama config whose pad/bos/eos ids are those of ``build_char_tokenizer``."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
    )


def tiny_qwen2_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 256,
) -> Qwen2Config:
    """A small Qwen2 config (grouped-query attention, tied embeddings) with the char tokenizer's special
    ids."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=True,
    )
