"""Load any Hugging Face causal LM and its tokenizer from a local directory or a hub id, and format prompts.

Weights are read from safetensors only (no pickle). A name that is clearly a filesystem path but does not exist
fails here with a one-sentence error instead of a hub lookup that cannot succeed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}

# "name" or "owner/name": letters, digits, "-", "_", "." (the hub's repo id rule), not starting with "." or "-".
_HUB_ID = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")


def _check_source(name_or_path: str | os.PathLike, what: str) -> str:
    """Return ``name_or_path`` as a string, or raise ``FileNotFoundError`` if it can only be a missing local path."""
    name = os.fspath(name_or_path)
    if os.path.exists(name) or (_HUB_ID.match(name) and not name.startswith(("~", "."))):
        return name
    raise FileNotFoundError(
        f"Cannot load the {what}: '{name}' is not an existing directory (resolved to {Path(name).expanduser().resolve()}) "
        "and is not a hub id like 'owner/name'; pass the directory written by save_pretrained or a valid hub id."
    )


def load_tokenizer(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, padding_side: str = "left"
) -> PreTrainedTokenizerBase:
    """Load a tokenizer; if it has no pad token, use its EOS token for padding.

    ``padding_side`` defaults to ``"left"`` because prompts are left-padded for batched generation.
    """
    name = _check_source(name_or_path, "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(
        name, trust_remote_code=trust_remote_code, padding_side=padding_side
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer at '{name}' has neither a pad nor an EOS token, so batches cannot be padded; "
                "add a pad token with tokenizer.add_special_tokens({'pad_token': ...}) and save it."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    use_safetensors: bool = True,
) -> PreTrainedModel:
    """Load a causal LM in eval mode.

    ``dtype`` is one of ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the checkpoint's own dtype).
    ``use_safetensors=True`` refuses pickle checkpoints (``pytorch_model.bin``).
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype '{dtype}'; choose one of {sorted(DTYPES)}.")
    name = _check_source(name_or_path, "model")
    model = AutoModelForCausalLM.from_pretrained(
        name, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=use_safetensors
    )
    return model.eval()


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], system_prompt: str | None = None
) -> str:
    """Turn a prompt into the text the model continues.

    With a chat template: a string becomes one user message, ``system_prompt`` (if given and the messages have no
    system message) goes first, and the template is applied with the generation prompt appended. Without one: a
    string is returned as is, after ``system_prompt + "\\n"`` if given; a message list is an error.
    """
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise ValueError(
            "The prompt is a list of chat messages but the tokenizer has no chat template; "
            "set tokenizer.chat_template (a Jinja string) or give the prompts as plain strings."
        )
    return f"{system_prompt}\n{prompt}" if system_prompt is not None else prompt
