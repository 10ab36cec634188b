"""Issue 18's presets through the command line: listed with their paper ids and settings, and an incoherent
combination is one line and exit 2 before any model loads."""

import pytest

from grouprl.cli.main import main


def test_list_algorithms_shows_the_new_rows_with_paper_ids(capsys):
    assert main(["list", "algorithms"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["maxrl"][1:3] == ["2602.02710", "maxrl"]
    assert lines["gppo"][1] == "2508.07629" and lines["gppo"][4] == "gppo"
    assert lines["ce_gppo"][1] == "2509.20712" and lines["ce_gppo"][-2:] == ["clip_ratio_c=3.0",
                                                                            "gppo_beta1=0.75"]
    # (i) the token selections, with their settings
    assert lines["clip_cov"][1:5] == ["2505.22617", "group_zscore", "token", "clip_cov"]
    assert lines["clip_cov"][-3:] == ["clip_cov_ratio=0.0002", "clip_cov_lb=1.0", "clip_cov_ub=5.0"]
    assert lines["kl_cov"][1] == "2505.22617" and lines["kl_cov"][-2:] == ["kl_cov_ratio=0.0002",
                                                                          "beta_kl_cov=1.0"]
    assert lines["m2po"][1] == "2510.01161" and lines["m2po"][4] == "none"
    assert lines["m2po"][-1] == "m2po_tau=0.04"


@pytest.mark.parametrize("overrides,message", [
    (["algorithm=maxrl", "algo.shaping=[soft_overlong]", "algo.overlong_max_len=8",
      "algo.overlong_buffer_len=2"],
     "algo: advantage='maxrl' divides by the group's mean reward, a success rate, but the shaping "
     "soft_overlong subtracts from the reward"),
    (["algorithm=ce_gppo", "algo.gppo_beta1=-1"], "gppo_beta1 and gppo_beta2 must be >= 0"),
    (["algorithm=kl_cov", "algo.beta_kl_cov=-0.5"], "beta_kl_cov must be >= 0"),
    (["algorithm=clip_cov", "algo.clip_cov_lb=6"], "clip_cov_lb must be below clip_cov_ub"),
    (["algorithm=m2po", "algo.m2po_tau=0"], "m2po_tau must be > 0"),
    (["algorithm=grpo", "algo.entropy_target=100"],
     "entropy_target=100 is above log(vocabulary size) = log(100)"),
])
def test_an_incoherent_combination_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    run_dir = tmp_path / "run"
    code = main(["train", *overrides, f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert not run_dir.exists()


def test_entropy_target_adapts_the_coefficient_logs_it_and_resumes_it(tmp_path):
    """(i) alpha starts at entropy_coef, moves by lr * (target - H) each step (dual ascent, >= 0), is logged
    as entropy/alpha and saved in trainer_state.json, and a resumed run continues from the saved value."""
    import json

    from grouprl.algo import next_alpha

    run_dir = tmp_path / "run"
    args = ["algorithm=grpo", "algo.beta=0", "algo.entropy_target=3.0", "algo.entropy_target_lr=0.5",
            "train.prompts_per_step=2", "rollout.num_generations=2", "data.num_eval=0", "data.num_train=16",
            "output.progress=false", "output.save_every=1", f"output.run_dir={run_dir}"]
    assert main(["train", *args, "train.steps=2"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["entropy/alpha"] == 0.0  # entropy_coef's default
    assert rows[1]["entropy/alpha"] == pytest.approx(next_alpha(0.0, rows[0]["entropy"], 3.0, 0.5), abs=1e-12)
    state = json.loads((run_dir / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    saved = state["entropy_alpha"]
    want = next_alpha(rows[1]["entropy/alpha"], rows[1]["entropy"], 3.0, 0.5)
    assert saved == pytest.approx(want, abs=1e-12) and saved > 0
    assert main(["train", "--resume", "auto", *args, "train.steps=3"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[2]["entropy/alpha"] == pytest.approx(saved, abs=1e-12)
