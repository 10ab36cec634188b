"""``algo.rollout_correction`` end to end on the embedded default: the sampler's log-probs reach the loss on
both backends and on the multi-turn path, the metrics are logged, and bad settings are one line, exit 2."""

import json

import pytest

from grouprl.cli.main import main

FAST = ["train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=8",
        "eval.num_samples=2", "data.num_train=64", "output.progress=false", "output.plots=false",
        "train.lr=1e-3"]
KEYS = ("rollout_corr/ratio_mean", "rollout_corr/ratio_max", "rollout_corr/frac_clipped")


def rows_of(tmp_path, *overrides):
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, f"output.run_dir={run_dir}", *overrides]) == 0
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [
    ["algo.rollout_correction=token_truncate"],  # the fast backend (auto)
    ["rollout.backend=hf", "algo.rollout_correction=token_mask", "algo.rollout_correction_min=0.5"],
    # multi-turn episodes: the model's turns carry the sampler's log-probs, the environment's tokens none
    ["environment=guess_number", "rollout.max_new_tokens=16", "rollout.max_turns=3",
     "algo.rollout_correction=sequence_mask"],
])
def test_the_correction_trains_and_logs_the_sampler_trainer_ratio(tmp_path, overrides):
    """The sampler and the trainer compute the same float32 distribution by different code paths, so w is 1
    up to float32 rounding (measured: max |w - 1| about 5e-6): nothing is truncated or masked at the
    default bounds."""
    rows = rows_of(tmp_path, *overrides)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert all(row[k] is not None for k in KEYS), row
        assert abs(row["rollout_corr/ratio_mean"] - 1) < 1e-3 and 0.99 < row["rollout_corr/ratio_max"] < 1.01
        assert row["rollout_corr/frac_clipped"] == 0.0
        assert row["update/steps"] == 1 and row["loss/policy"] is not None


def test_without_a_correction_no_metric_is_logged(tmp_path):
    row = rows_of(tmp_path, "train.steps=1")[0]
    assert "loss/policy" in row and not any(k in row for k in KEYS)


@pytest.mark.parametrize("overrides,message", [
    (["algo.rollout_correction=token_clip"], "unknown rollout correction 'token_clip'"),
    (["algo.rollout_correction=token_truncate", "algo.rollout_correction_max=1.0"],
     "rollout_correction_max must be > 1"),
    (["algo.rollout_correction=sequence_mask", "algo.rollout_correction_min=1.5"],
     "rollout_correction_min must be in [0, 1)"),
    (["algorithm=gspo", "algo.rollout_correction=sequence_mask"],
     "GSPO's ratio is already a per-sequence geometric mean, clipped per sequence"),
    (["algo.rollout_correction_max=3"], "rollout_correction_max is read by"),
])
def test_a_bad_correction_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    run_dir = tmp_path / "run"
    code = main(["train", *overrides, f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert not run_dir.exists()
