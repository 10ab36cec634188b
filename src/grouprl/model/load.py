"""Load any Hugging Face causal LM and its tokenizer from a local directory, a hub id or a GGUF file, and
format prompts.

Weights are read from safetensors or GGUF only (no pickle). A name that is clearly a filesystem path but does
not exist fails here with a one-sentence error instead of a hub lookup that cannot succeed. A GGUF source
(``model.gguf``, or a directory plus ``gguf_file``) goes through ``grouprl.model.gguf``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from grouprl.errors import DataError, ModelError
from grouprl.model.gguf import gguf_path, load_gguf_model, load_gguf_tokenizer

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}

# "name" or "owner/name": letters, digits, "-", "_", "." (the hub's repo id rule), not starting with "." or
# "-".
_HUB_ID = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")


def check_source(name_or_path: str | os.PathLike, what: str) -> str:
    """Return ``name_or_path`` as a string, or raise ``ModelError`` if it can only be a missing local path."""
    name = os.fspath(name_or_path)
    if os.path.exists(name) or (_HUB_ID.match(name) and not name.startswith(("~", "."))):
        return name
    raise ModelError(
        f"Cannot load the {what}: '{name}' is not an existing directory "
        f"(resolved to {Path(name).expanduser().resolve()}) and is not a hub id like 'owner/name'; "
        "pass the directory written by save_pretrained or a valid hub id."
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def check_safetensors(file: Path) -> None:
    """Read ``file``'s header: a truncated or foreign file is a ``ModelError`` naming it (no tensor is
    loaded)."""
    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{file} is not a complete safetensors file ({str(err).splitlines()[0]}); it may be "
                         "truncated: copy or save it again") from None


def check_model_dir(path: Path, need: tuple[str, ...] = ("config", "tokenizer", "weights")) -> None:
    """A local model directory must hold what is ``need``ed: a config, a tokenizer, safetensors weights that
    open.

    The error names what is missing and lists what the directory does hold, so a half-copied or pickle-only
    checkpoint is one clear line instead of a library traceback.
    """
    found = sorted(p.name for p in path.iterdir())
    listing = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "") or "nothing"
    shards = sorted(path.glob("*.safetensors"))
    missing = []
    if "config" in need and "config.json" not in found:
        missing.append("config.json")
    if "tokenizer" in need and not any(name in found for name in TOKENIZER_FILES):
        missing.append(f"tokenizer ({' or '.join(TOKENIZER_FILES[:2])})")
    if "weights" in need and not shards:
        pickle_only = any(name.endswith((".bin", ".pt", ".pth", ".ckpt")) for name in found)
        missing.append("safetensors weights"
                       + (" (only pickle weights, which grouprl never loads: re-save with "
                          "save_pretrained(..., safe_serialization=True))" if pickle_only else ""))
    if missing:
        ggufs = [name for name in found if name.lower().endswith(".gguf")]
        fix = (f"It holds a GGUF file: pass {path / ggufs[0]} itself, or set model.gguf_file={ggufs[0]}"
               if ggufs else "Pass a directory written by save_pretrained (model and tokenizer)")
        raise ModelError(f"model directory {path} has no {', no '.join(missing)}; it holds: {listing}. {fix}")
    for shard in shards if "weights" in need else ():
        check_safetensors(shard)


def load_tokenizer(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, padding_side: str = "left",
    gguf_file: str | None = None,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer; if it has no pad token, use its EOS token for padding.

    ``padding_side`` defaults to ``"left"`` because prompts are left-padded for batched generation. A GGUF
    source (a ``.gguf`` path, or a directory plus ``gguf_file``) gives the tokenizer and chat template in it.
    """
    if (gguf := gguf_path(name_or_path, gguf_file)) is not None:
        name, tokenizer = str(gguf), load_gguf_tokenizer(gguf, padding_side=padding_side)
    else:
        name = check_source(name_or_path, "tokenizer")
        if os.path.isdir(name):
            check_model_dir(Path(name), need=("tokenizer",))
        tokenizer = _from_pretrained(AutoTokenizer, name, "tokenizer", trust_remote_code=trust_remote_code,
                                     padding_side=padding_side)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
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
    gguf_file: str | None = None,
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM in eval mode, on ``device``.

    ``dtype`` is one of ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the checkpoint's own
    dtype; float32 for a GGUF, whose tensors are dequantised to it). ``use_safetensors=True`` refuses pickle
    checkpoints (``pytorch_model.bin``). A GGUF source (a ``.gguf`` path, or a directory plus ``gguf_file``)
    gives an ordinary model with the GGUF's dequantised weights (``grouprl.model.gguf``).
    ``attn_implementation`` (``sdpa``, ``eager``, ``flash_attention_2``; None: transformers' default) is the
    attention kernel of every forward.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype '{dtype}'; choose one of {sorted(DTYPES)}.")
    if (gguf := gguf_path(name_or_path, gguf_file)) is not None:
        model = load_gguf_model(gguf, torch.float32 if dtype == "auto" else DTYPES[dtype])
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        return model.to(device).eval()
    name = check_source(name_or_path, "model")
    if os.path.isdir(name):
        check_model_dir(Path(name), need=("config", "weights") if use_safetensors else ("config",))
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = _from_pretrained(AutoModelForCausalLM, name, "model", dtype=DTYPES[dtype],
                             trust_remote_code=trust_remote_code, use_safetensors=use_safetensors, **kwargs)
    return model.to(device).eval()


def _from_pretrained(auto, name: str, what: str, **kwargs):
    """``auto.from_pretrained``; a hub id that cannot be fetched (no network, no such repo) is a
    ``ModelError``.

    A local directory was checked by ``check_model_dir`` first, so an error from loading it is left as it is:
    it is not a mistake the user can fix from the message.
    """
    try:
        return auto.from_pretrained(name, **kwargs)
    except OSError as err:
        if os.path.isdir(name):
            raise
        raise ModelError(f"Cannot load the {what} '{name}' from the hub "
                         f"({str(err).strip().splitlines()[0]}); pass a local directory written by "
                         "save_pretrained, or check the id and the network") from None


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]], system_prompt: str | None = None,
    chat_template_kwargs: dict | None = None,
) -> str:
    """Turn a prompt into the text the model continues.

    With a chat template: a string becomes one user message, ``system_prompt`` (if given and the messages have
    no system message) goes first, and the template is applied with the generation prompt appended (and
    ``chat_template_kwargs`` passed to it). Without one: a string is returned as is, after
    ``system_prompt + "\\n"`` if given; a message list is an error.
    """
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **(chat_template_kwargs or {}))
    if not isinstance(prompt, str):
        raise DataError(
            "The prompt is a list of chat messages but the tokenizer has no chat template; "
            "set tokenizer.chat_template (a Jinja string) or give the prompts as plain strings."
        )
    return f"{system_prompt}\n{prompt}" if system_prompt is not None else prompt
