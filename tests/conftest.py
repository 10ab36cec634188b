"""Shared fixtures: a local character tokenizer and tiny random causal LMs saved with ``save_pretrained``.

Nothing is downloaded; every model is built from a config with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from grouprl.model.configs import tiny_llama_config, tiny_qwen2_config
from grouprl.model.tokenizer import build_char_tokenizer


def _save_tiny_model(path: Path, config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Save a randomly initialised (seed 0) causal LM with ``config`` and ``tokenizer`` to ``path``."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def char_tokenizer() -> PreTrainedTokenizerFast:
    """The project's character tokenizer (pad 0, bos 1, eos 2, unk 3). Session-shared: do not mutate."""
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, char_tokenizer: PreTrainedTokenizerFast) -> Path:
    """A ``save_pretrained`` directory: random tiny Llama (hidden 64, 2 layers) plus the char tokenizer."""
    config = tiny_llama_config(len(char_tokenizer), hidden_size=64, num_layers=2, intermediate_size=128)
    return _save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), config, char_tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory, char_tokenizer: PreTrainedTokenizerFast) -> Path:
    """A ``save_pretrained`` directory: random tiny Qwen2 (hidden 64, 2 layers, GQA, tied head) plus the
    tokenizer."""
    config = tiny_qwen2_config(len(char_tokenizer))
    return _save_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), config, char_tokenizer)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip on a machine without CUDA (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (a gpu test)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
