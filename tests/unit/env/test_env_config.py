"""What ``environment=`` changes at start-up: a built-in environment's embedded player and its settings
(only for the keys not given, and only while the policy is that player), and the context check counting
the tools' schemas in the prompt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from grouprl.config import load_config
from grouprl.env.builtin import CALCULATOR_SETTINGS, Calculator
from grouprl.env.protocol import check_environment
from grouprl.errors import DataError
from grouprl.model.assets import ASSETS_DIR, resolve_model_path
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.train.setup import _check_context


def test_calculator_brings_its_player_and_its_settings_for_keys_not_given():
    cfg = load_config(None, ["environment=calculator", "train.steps=3"])
    assert cfg.model.name_or_path == "default-calculator"
    assert resolve_model_path(cfg.model.name_or_path) == str(ASSETS_DIR / "default-calculator")
    assert cfg.rollout.max_new_tokens == CALCULATOR_SETTINGS["rollout.max_new_tokens"]
    assert cfg.train.steps == 3  # given: kept


def test_another_model_keeps_the_schema_defaults():
    cfg = load_config(None, ["environment=calculator", "model.name_or_path=some/model"])
    assert cfg.model.name_or_path == "some/model" and cfg.rollout.max_new_tokens == 8
    plain = load_config(None, ["environment=guess_number"])  # no embedded player
    assert plain.model.name_or_path == "default" and plain.train.steps == 200


def test_the_context_check_counts_the_tools_schemas():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = ("{% if tools %}{{ tools | tojson }}{% endif %}"
                               "{% for m in messages %}{{ m.content }}{% endfor %}")
    tools = check_environment(Calculator, "calculator")
    cfg = load_config(None, ["rollout.max_new_tokens=8"])
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    rows = [{"prompt": "2+2="}]
    assert _check_context(tokenizer, model, rows, cfg) == 4
    with pytest.raises(DataError, match="tools' schemas included"):
        _check_context(tokenizer, model, rows, cfg, tools)
