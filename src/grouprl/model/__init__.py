"""Model-side building blocks: tokenizer, loading, prompt formatting, chunked log-probs."""

from grouprl.model.configs import tiny_llama_config, tiny_qwen2_config
from grouprl.model.load import format_prompt, load_model, load_tokenizer
from grouprl.model.logprobs import position_ids_from_mask, sequence_logprobs
from grouprl.model.tokenizer import DEFAULT_ALPHABET, build_char_tokenizer

__all__ = [
    "DEFAULT_ALPHABET",
    "build_char_tokenizer",
    "format_prompt",
    "load_model",
    "load_tokenizer",
    "position_ids_from_mask",
    "sequence_logprobs",
    "tiny_llama_config",
    "tiny_qwen2_config",
]
