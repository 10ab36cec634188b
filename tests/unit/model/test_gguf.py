"""GGUF as a model source: a tiny GGUF written by the test (tests/gguf_files.py) loads as the model it was
written from, converts to a HF directory that plain transformers loads to the same logits, and a damaged or
foreign file is one ModelError line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gguf_files import CHAT_TEMPLATE, tiny_llama, write_gguf
from grouprl.errors import ModelError
from grouprl.model.gguf import SOURCE_FILE, convert_gguf, read_header, sha256_file
from grouprl.model.load import format_prompt, load_model, load_tokenizer

IDS = torch.tensor([[1, 5, 80, 100, 3, 200, 260, 2]])


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_a_gguf_loads_as_the_model_it_was_written_from(gguf_file):
    model = load_model(gguf_file)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.dtype == torch.float32 and model.config.tie_word_embeddings
    # float32 tensors and float32-exact config values: the same weights and the same operations, so the same
    # roundings (tests/tolerance.py: an exact claim at n = 0)
    assert torch.equal(model(IDS).logits, tiny_llama()(IDS).logits)
    assert load_model(gguf_file, dtype="bfloat16").dtype == torch.bfloat16


def test_the_tokenizer_and_chat_template_come_from_the_gguf(gguf_file):
    tokenizer = load_tokenizer(gguf_file)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                                              "<|im_end|>")
    assert tokenizer.padding_side == "left"
    ids = tokenizer("the cat", add_special_tokens=False)["input_ids"]
    assert ids[:2] == [119, 260] and tokenizer.decode(ids) == "the cat"  # "t", then the merge "he"
    text = format_prompt(tokenizer, "2+2=", system_prompt="Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2=<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tokenizer(text, add_special_tokens=False)["input_ids"].count(2) == 2  # <|im_end|> stays one token


def test_a_directory_plus_gguf_file_is_the_same_source(gguf_file):
    model = load_model(gguf_file.parent, gguf_file=gguf_file.name)
    assert torch.equal(model(IDS).logits, load_model(gguf_file)(IDS).logits)
    assert load_tokenizer(gguf_file.parent, gguf_file=gguf_file.name).chat_template == CHAT_TEMPLATE


def test_loading_a_gguf_saves_like_any_model_and_leaves_the_rng_alone(gguf_file, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = load_model(gguf_file)
    assert torch.equal(torch.rand(3), expected)  # a seeded run draws the same numbers whatever it loads
    model.save_pretrained(tmp_path)  # transformers' own GGUF-loaded model refuses this
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path)(IDS).logits, model(IDS).logits)


def test_convert_writes_a_directory_plain_transformers_loads_to_the_same_logits(gguf_file, tmp_path):
    out = convert_gguf(gguf_file, tmp_path / "converted")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            SOURCE_FILE} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    reference = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    converted = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(converted(IDS).logits, reference(IDS).logits)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.eos_token == "<|im_end|>"
    text = "<|im_start|>user\nthe cat<|im_end|>"
    assert tokenizer(text)["input_ids"] == load_tokenizer(gguf_file)(text)["input_ids"]
    record = json.loads((out / SOURCE_FILE).read_text())
    assert record["sha256"] == sha256_file(gguf_file) and record["architecture"] == "llama"
    with pytest.raises(ModelError, match="already exists"):
        convert_gguf(gguf_file, out)


def test_convert_to_bfloat16_halves_the_weights(gguf_file, tmp_path):
    full = convert_gguf(gguf_file, tmp_path / "f32") / "model.safetensors"
    half = convert_gguf(gguf_file, tmp_path / "bf16", dtype="bfloat16") / "model.safetensors"
    assert AutoModelForCausalLM.from_pretrained(half.parent).dtype == torch.bfloat16
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_the_header_says_what_the_file_holds(gguf_file):
    header = read_header(gguf_file)
    assert (header.architecture, header.name, header.version) == ("llama", "grouprl tiny test llama", 3)
    assert header.tensor_types == {"F32": 1 + 9 * 2 + 1} and header.needed_bytes == gguf_file.stat().st_size


@pytest.mark.parametrize(("cut", "message"), [(0.5, "is truncated: it has"), (0.002, "truncated or damaged")])
def test_a_truncated_gguf_is_one_line(gguf_file, tmp_path, cut, message):
    data = gguf_file.read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: int(len(data) * cut)])
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelError, match=message):
            load(broken)
    with pytest.raises(ModelError, match=message):
        convert_gguf(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_gguf_is_one_line(tmp_path):
    (tmp_path / "model.gguf").write_text('{"not": "a gguf"}')
    with pytest.raises(ModelError, match="is not a GGUF file"):
        load_model(tmp_path / "model.gguf")


def test_an_unsupported_architecture_is_one_line(tmp_path):
    path = write_gguf(tmp_path / "odd.gguf", architecture="nosucharch")
    with pytest.raises(ModelError, match="'nosucharch' model, an architecture transformers .* cannot load"):
        load_model(path)
    with pytest.raises(ModelError, match="cannot load from GGUF"):
        convert_gguf(path, tmp_path / "out")


def test_missing_or_misnamed_gguf_sources_are_one_line(gguf_file, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent.gguf")
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(gguf_file.parent, gguf_file="absent.gguf")
    with pytest.raises(ModelError, match="needs model.name_or_path to be the local directory"):
        load_model(tmp_path / "nowhere", gguf_file="tiny.gguf")
    with pytest.raises(ModelError, match="set only one of them"):
        load_model(gguf_file, gguf_file="tiny.gguf")
    folder = tmp_path / "only-gguf"
    folder.mkdir()
    shutil.copy(gguf_file, folder / "tiny.gguf")
    with pytest.raises(ModelError, match="It holds a GGUF file: pass .*tiny.gguf itself, or set "
                       "model.gguf_file"):
        load_model(folder)


def test_convert_into_a_place_that_cannot_be_written_is_one_line(gguf_file, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ModelError, match="cannot write .*a-file/out"):
        convert_gguf(gguf_file, tmp_path / "a-file" / "out")
