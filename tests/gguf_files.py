"""Tiny GGUF files written with the ``gguf`` package, as llama.cpp writes a Llama: a random model of a few
tens of KB and a byte-level BPE tokenizer (every byte is a token, plus two merges) with a chat template.

Only the metadata keys and tensor names transformers' GGUF loader reads are written, with the generic
``add_uint32`` / ``add_string`` calls, so any gguf version from the declared floor writes the same file. Every
number in the config is exact in float32 (GGUF stores them so), so the model read back computes exactly what
the model written does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (= pad), as in SmolLM2's GGUF
MERGES = ["Ġ t", "h e"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255: printable Latin-1 bytes stand for themselves, the
    rest map to code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


TOKENS = [*SPECIALS, *byte_alphabet(), *("".join(m.split()) for m in MERGES)]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random Llama over ``TOKENS``: hidden 16, 2 layers, 2 heads sharing 1 KV head, tied embeddings."""
    config = LlamaConfig(vocab_size=len(TOKENS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         rms_norm_eps=2.0**-20, rope_theta=10000.0, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q and k with each head's rotary halves interleaved; transformers undoes it on load."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(path: Path, model: LlamaForCausalLM | None = None, *, architecture: str = "llama",
               chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """Write ``model`` (default: ``tiny_llama()``) to ``path`` as a float32 GGUF of ``architecture``."""
    from gguf import GGUFWriter

    model = model if model is not None else tiny_llama()
    c = model.config
    writer = GGUFWriter(str(path), architecture)
    writer.add_string("general.name", "grouprl tiny test llama")
    for key, value in (("context_length", c.max_position_embeddings), ("block_count", c.num_hidden_layers),
                       ("embedding_length", c.hidden_size), ("feed_forward_length", c.intermediate_size),
                       ("attention.head_count", c.num_attention_heads),
                       ("attention.head_count_kv", c.num_key_value_heads), ("vocab_size", c.vocab_size),
                       ("rope.dimension_count", c.hidden_size // c.num_attention_heads)):
        writer.add_uint32(f"{architecture}.{key}", value)
    writer.add_float32(f"{architecture}.rope.freq_base", 10000.0)
    writer.add_float32(f"{architecture}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", TOKENS)
    writer.add_array("tokenizer.ggml.token_type", [3] * len(SPECIALS) + [1] * (len(TOKENS) - len(SPECIALS)))
    writer.add_array("tokenizer.ggml.merges", MERGES)
    for key, value in (("unknown", 0), ("bos", 1), ("eos", 2), ("padding", 2)):
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", value)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    if chat_template is not None:
        writer.add_string("tokenizer.chat_template", chat_template)

    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm":
             "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for layer in range(c.num_hidden_layers):
        for hf, ggml in names.items():
            weight = weights[f"model.layers.{layer}.{hf}.weight"]
            if ggml == "attn_q":
                weight = _llama_cpp_permute(weight, c.num_attention_heads)
            elif ggml == "attn_k":
                weight = _llama_cpp_permute(weight, c.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{ggml}.weight", weight)
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])  # no output.weight: tied embeddings
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
