"""End to end on the embedded default: every preset trains a few steps; runs are reproducible; checkpoints
load with plain transformers; the run directory holds what docs/contracts.md promises."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from grouprl.algo import PRESETS
from grouprl.cli.main import main
from grouprl.model.assets import DEFAULT_MODEL_DIR

FAST = ["train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=8",
        "eval.num_samples=2", "data.num_train=64", "output.progress=false", "train.lr=1e-3"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def train(tmp_path, *overrides, name="run"):
    run_dir = tmp_path / name
    assert main(["train", *FAST, f"output.run_dir={run_dir}", *overrides]) == 0
    return run_dir


@pytest.mark.parametrize("algorithm", sorted(PRESETS))
def test_every_preset_trains_end_to_end(tmp_path, algorithm):
    shaped = "soft_overlong" in PRESETS[algorithm].shaping
    extra = ["algo.overlong_max_len=8", "algo.overlong_buffer_len=2"] if shaped else []
    run_dir = train(tmp_path, f"algorithm={algorithm}", *extra)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        # finite (NaN is written as null)
        assert row["loss/policy"] is not None and abs(row["loss/policy"]) < 1e3
    assert sum(r["update/steps"] for r in rows) >= 1, "no optimizer step was taken"
    before = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    after = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "step-2")
    changed = any(not torch.equal(a, b)
                  for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert changed, "parameters did not change"


def test_run_directory_contents(tmp_path):
    run_dir = train(tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "completions.jsonl", "eval.jsonl", "report.md"):
        assert (run_dir / name).is_file(), name
    for plot in ("reward", "accuracy", "kl", "entropy", "length", "clip"):
        png = run_dir / "plots" / f"{plot}.png"
        assert png.is_file() and png.stat().st_size > 5000, plot
    completion = read_jsonl(run_dir / "completions.jsonl")[0]
    assert {"step", "prompt", "completion", "reward", "advantage", "reward/correct_answer"} <= set(completion)
    metrics = read_jsonl(run_dir / "metrics.jsonl")[0]
    for key in ("reward/mean", "reward/std", "accuracy", "frac_reward_zero_std", "loss/policy", "kl/mean",
                "clip/low_frac", "clip/high_frac", "entropy", "completion/len_mean",
                "completion/truncated_frac", "grad_norm", "lr", "time/rollout", "time/update", "tokens_per_s",
                "reward/correct_answer/mean"):
        assert key in metrics, key
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2]
    assert {"eval/pass@1", "eval/pass@2", "eval/mean@2"} <= set(evals[0])
    card = (run_dir / "checkpoints" / "step-2" / "README.md").read_text()  # the model card has the final eval
    assert "# grpo checkpoint, step 2 of 2" in card and "Held-out prompts at step 2:" in card
    assert f"| eval/pass@1 | {evals[-1]['eval/pass@1']:.4f} |" in card


def test_same_seed_same_metrics(tmp_path):
    a = read_jsonl(train(tmp_path, "algorithm=dapo", "algo.overlong_max_len=8", "algo.overlong_buffer_len=2",
                         "train.num_iterations=2", name="a") / "metrics.jsonl")
    b = read_jsonl(train(tmp_path, "algorithm=dapo", "algo.overlong_max_len=8", "algo.overlong_buffer_len=2",
                         "train.num_iterations=2", name="b") / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.startswith(("time/", "memory/")) and k != "tokens_per_s"} for r in rows]
    assert strip(a) == strip(b)


def test_checkpoint_loads_with_plain_transformers(tmp_path):
    run_dir = train(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "step-2")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert (run_dir / "checkpoints" / "step-2" / "model.safetensors").is_file()


def test_a_nan_loss_skips_the_update_and_leaves_weights_untouched(tmp_path, monkeypatch):
    from grouprl.train import step as stages

    real = stages.policy_loss

    def poisoned(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(stages, "policy_loss", poisoned)
    run_dir = tmp_path / "nan"
    assert main(["train", *FAST, "train.steps=2", f"output.run_dir={run_dir}", "data.num_eval=0"]) == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["update/skipped_nonfinite"] for r in rows] == [1, 1]
    assert all(r["update/steps"] == 0 for r in rows)
    before = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR).state_dict()
    after = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "step-2").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_repeated_nan_stops_the_run_with_a_clear_message(tmp_path, monkeypatch, capsys):
    from grouprl.train import step as stages

    real = stages.policy_loss
    monkeypatch.setattr(stages, "policy_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"), {}))
    run_dir = tmp_path / "nan"
    code = main(["train", *FAST, "train.steps=5", "train.max_nonfinite_steps=2", f"output.run_dir={run_dir}",
                 "data.num_eval=0"])
    assert code == 2
    assert "2 steps in a row had a NaN/inf loss or gradient" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "step-2").is_dir()


def test_sigterm_finishes_the_step_checkpoints_and_resume_continues(tmp_path):
    import signal as sig
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "term"
    args = [*FAST, "train.steps=200", "data.num_eval=0", f"output.run_dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "grouprl", "train", *args], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run_dir / "metrics.jsonl").exists()
                                          and len(read_jsonl(run_dir / "metrics.jsonl")) >= 2):
        time.sleep(0.05)
    proc.send_signal(sig.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped by signal after step" in err
    done = len(read_jsonl(run_dir / "metrics.jsonl"))
    assert (run_dir / "checkpoints" / f"step-{done}").is_dir()
    assert main(["train", "--resume", "auto", *FAST, "train.steps=" + str(done + 1), "data.num_eval=0",
                 f"output.run_dir={run_dir}"]) == 0
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, done + 2))


@pytest.mark.parametrize("extra", [["rollout.backend=fast"], ["rollout.backend=hf"],
                                   ["model.lora.r=4", "train.num_iterations=2"]])
def test_no_deprecation_warning_from_grouprl_calls(tmp_path, extra):
    """A library's FutureWarning/DeprecationWarning attributed to grouprl's own code is an error here: the
    call stops working at the library's next release (e.g. transformers' ``past_key_values`` → ``cache``)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tmp_path, *extra, "output.plots=false")
    deprecations = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                    if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, deprecations


def test_length_ordered_micro_batches_train_as_consecutive_ones(tmp_path, capsys):
    """train.micro_batch_order=length regroups the update's rows by length: same step up to float rounding
    (a small budget so that the plan makes several micro-batches)."""
    small = ("train.activation_budget_mib=1", "train.num_iterations=2")
    a = read_jsonl(train(tmp_path, *small, name="rows") / "metrics.jsonl")
    b = read_jsonl(train(tmp_path, *small, "train.micro_batch_order=length", name="length") / "metrics.jsonl")
    for ra, rb in zip(a, b, strict=True):
        assert ra["reward/mean"] == rb["reward/mean"]  # the first step's rollout is the same
        for key in ("grad_norm", "entropy", "loss/policy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key
        break
    assert main(["train", *FAST, "train.micro_batch_order=shortest", f"output.run_dir={tmp_path / 'x'}"]) == 2
    assert "train.micro_batch_order" in capsys.readouterr().err
