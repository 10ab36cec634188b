"""An open-r1 GRPO recipe and every file of configs/ run as they are."""

import json
from pathlib import Path

import pytest
import yaml

from grouprl.algo import PRESETS
from grouprl.cli.main import main
from grouprl.config import load_config
from grouprl.data.tasks import get_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["output.plots=false", "output.progress=false", "eval.every=0", "data.num_eval=0"]


def open_r1_recipe(tmp_path: Path, **changes) -> Path:
    """The shape of open-r1's recipes/*/grpo/config_*.yaml, at toy sizes, on a local JSONL of arithmetic."""
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"problem": r["prompt"], "answer": r["answer"]}) + "\n"
                            for r in get_task("arithmetic").generate("train", 16, 0)))
    recipe = {
        "model_name_or_path": "default", "model_revision": "main", "torch_dtype": "float32",
        "attn_implementation": "flash_attention_2", "dataset_name": str(data),
        "dataset_prompt_column": "problem",
        "system_prompt": "Answer with the number only.", "bf16": True, "use_vllm": True,
        "vllm_gpu_memory_utilization": 0.7, "do_eval": False, "gradient_accumulation_steps": 2,
        "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "hub_model_id": "me/tiny-grpo", "hub_strategy": "every_save", "learning_rate": 1.0e-3,
        "log_completions": True, "log_level": "info", "logging_first_step": True, "logging_steps": 1,
        "logging_strategy": "steps", "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "max_prompt_length": 64, "max_completion_length": 4,
        "max_steps": 2, "num_generations": 2, "num_train_epochs": 1, "output_dir": str(tmp_path / "run"),
        "overwrite_output_dir": True, "per_device_eval_batch_size": 4, "per_device_train_batch_size": 2,
        "push_to_hub": False, "report_to": ["none"], "reward_funcs": ["correct_answer", "integer_format"],
        "reward_weights": [1.0, 0.5], "save_strategy": "epoch", "save_total_limit": 1, "seed": 42,
        "temperature": 0.7, "warmup_ratio": 0.5,
    }
    path = tmp_path / "config_demo.yaml"
    path.write_text(yaml.safe_dump({**recipe, **changes}, sort_keys=False))
    return path


def test_an_open_r1_recipe_trains(tmp_path, capsys):
    assert main(["train", "--config", str(open_r1_recipe(tmp_path)), "output.plots=false",
                 "output.progress=false"]) == 0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["batch/sequences"] == 4  # 2 x 2 / 2 prompts x G=2
    completion = json.loads((run / "completions.jsonl").read_text().splitlines()[0])
    assert {"reward/correct_answer", "reward/integer_format"} <= set(completion)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["lr"] == 1e-3 and resolved["train"]["warmup_steps"] == 1
    assert resolved["rewards"] == [{"name": "correct_answer", "weight": 1.0},
                                   {"name": "integer_format", "weight": 0.5}]
    assert resolved["model"]["gradient_checkpointing"] is True and resolved["train"]["seed"] == 42
    assert (run / "checkpoints" / "step-2").is_dir()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("grouprl: ignoring")]
    assert len(warnings) == 1 and "hub_model_id" in warnings[0] and "use_vllm" in warnings[0]


def test_an_open_r1_reward_that_grouprl_lacks_fails_in_one_line(tmp_path, capsys):
    """open-r1's sandboxed code rewards need E2B/Morph/Piston, so they are not built in (docs/rewards.md)."""
    recipe = open_r1_recipe(tmp_path, reward_funcs=["ioi_code", "format"], reward_weights=[1.0, 1.0])
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("grouprl train: error: unknown reward 'ioi_code'; built-in: ")


def test_configs_has_one_valid_file_per_preset_and_the_trl_and_open_r1_examples():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert names == set(PRESETS) | {"trl_style", "open_r1_style"}
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        if path.stem in PRESETS:
            assert cfg.algorithm == path.stem, path
            assert cfg.model.name_or_path == "default" and path.read_text().startswith("# "), path


def test_every_recipe_file_loads_and_names_a_chat_task():
    """configs/recipes/ are for real models (make demo-real): each resolves, with a chat task's knobs."""
    recipes = sorted((CONFIGS / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = load_config(path)
        assert cfg.data.task in ("word_problems", "chat_arithmetic", "chat_countdown"), path
        assert path.read_text().startswith("# "), path


@pytest.mark.parametrize("name", ["grpo", "trl_style"])
def test_a_config_file_runs(tmp_path, name, monkeypatch):
    # the files name paths relative to the repository, as the README runs them
    monkeypatch.chdir(CONFIGS.parent)
    overrides = ["train.steps=2", "train.prompts_per_step=2", "rollout.num_generations=2",
                 "train.micro_batch_size=0", f"output.run_dir={tmp_path / 'run'}", *TINY]
    assert main(["train", "--config", str(CONFIGS / f"{name}.yaml"), *overrides]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()
