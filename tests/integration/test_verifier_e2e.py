"""The ``verifier`` key end to end: the named reward, not the first, is ``accuracy``; a wrong name is one
line."""

import json

import pytest

from grouprl.cli.main import main

FAST = ["train.steps=1", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=0",
        "data.num_train=64", "output.progress=false", "eval.every=0",
        "rewards=[integer_format, correct_answer]"]


def test_accuracy_is_the_named_verifier(tmp_path):
    assert main(["train", *FAST, "verifier=correct_answer", f"output.run_dir={tmp_path}"]) == 0
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["accuracy"] == pytest.approx(row["reward/correct_answer/mean"])


def test_an_unknown_verifier_fails_before_training(tmp_path, capsys):
    assert main(["train", *FAST, "verifier=correct", f"output.run_dir={tmp_path}"]) == 2
    assert "verifier: no reward is named 'correct'" in capsys.readouterr().err
