"""Loading models and tokenizers from local save_pretrained directories, and prompt formatting."""

from __future__ import annotations

import pytest
import torch

from grouprl.errors import ModelError
from grouprl.model.load import format_prompt, load_model, load_tokenizer
from grouprl.model.tokenizer import build_char_tokenizer

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.mark.parametrize(
    ("fixture", "arch"), [("tiny_llama_dir", "LlamaForCausalLM"), ("tiny_qwen2_dir", "Qwen2ForCausalLM")]
)
def test_load_model_from_local_dir(request, fixture, arch):
    model = load_model(request.getfixturevalue(fixture))
    assert type(model).__name__ == arch
    assert not model.training
    assert model.dtype == torch.float32
    logits = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size)


def test_load_model_dtype(tiny_llama_dir):
    assert load_model(tiny_llama_dir, dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'"):
        load_model(tiny_llama_dir, dtype="fp8")


def test_load_tokenizer_from_model_dir(tiny_qwen2_dir):
    tok = load_tokenizer(tiny_qwen2_dir)
    assert tok.decode(tok("1+1=2")["input_ids"]) == "1+1=2"
    assert load_tokenizer(tiny_qwen2_dir, padding_side="right").padding_side == "right"


def test_load_tokenizer_uses_eos_when_pad_missing(tmp_path):
    tok = build_char_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<eos>"


@pytest.mark.parametrize(
    "missing", ["/no/such/checkpoint", "./missing_ckpt", "runs/x/checkpoints/step-5", "~/nope"]
)
def test_missing_local_path_is_a_clear_error(missing):
    with pytest.raises(ModelError, match="not an existing directory"):
        load_model(missing)
    with pytest.raises(ModelError, match="save_pretrained"):
        load_tokenizer(missing)


def test_format_prompt_without_chat_template(char_tokenizer):
    assert format_prompt(char_tokenizer, "2+2=") == "2+2="
    assert format_prompt(char_tokenizer, "2+2=", "Answer.") == "Answer.\n2+2="
    with pytest.raises(ValueError, match="no chat template"):
        format_prompt(char_tokenizer, [{"role": "user", "content": "2+2="}])


def test_format_prompt_with_chat_template(tmp_path):
    tok = build_char_tokenizer()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)  # the template survives save/load
    assert format_prompt(tok, "2+2=") == "<user>2+2=\n<assistant>"
    assert format_prompt(tok, "2+2=", "Be brief.") == "<system>Be brief.\n<user>2+2=\n<assistant>"
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]
    # an existing system message is kept, not doubled
    assert format_prompt(tok, messages, "ignored") == "<system>S\n<user>u\n<assistant>"
