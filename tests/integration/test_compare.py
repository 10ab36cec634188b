"""grouprl compare: every arm is a run directory, finished arms are reused, and one report is written."""

from grouprl.cli.main import main

ARGS = ["compare", "--algorithms", "grpo,dapo", "--seeds", "2", "--budget-steps", "2",
        "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=8", "eval.num_samples=0",
        "data.num_train=64", "algo.overlong_max_len=8", "algo.overlong_buffer_len=2"]


def test_compare_writes_a_report_and_reuses_finished_arms(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([*ARGS, "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| grpo |" in report and "| dapo |" in report and "What differed" in report
    assert "| loss_type | filters | shaping |" in report
    assert "| token_mean | nonzero_variance | soft_overlong |" in report
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 8  # no pass@k plot: eval.num_samples=0 and all(p.stat().st_size > 5000 for p in pngs)
    capsys.readouterr()
    # an "interrupted" compare: one arm lost its last checkpoint and evaluation; the others are reused
    lost = out / "dapo-seed1"
    before = (out / "grpo-seed0" / "metrics.jsonl").read_text()
    import shutil

    shutil.rmtree(lost)
    assert main([*ARGS, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("already finished, reused") == 3 and "running dapo-seed1" in err
    # the overlong lengths are DAPO's: grpo reads neither, so they are not applied to its arms (one line)
    assert err.count("compare: grpo reads none of algo.overlong_max_len=8, algo.overlong_buffer_len=2") == 1
    assert (out / "grpo-seed0" / "metrics.jsonl").read_text() == before
    assert (lost / "checkpoints" / "step-2").is_dir()


def test_unknown_algorithm_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", "--algorithms", "grpo,nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown nope" in capsys.readouterr().err


def test_an_arm_drops_only_what_its_pieces_do_not_read():
    """The switches and lists choose pieces, so every arm takes them; a length only soft_overlong reads is not
    given to an arm that does not shape with it."""
    from grouprl.compare import arm_overrides

    given = ["algo.dynamic_sampling=true", "algo.overlong_buffer_len=2", "algo.overlong_max_len=8",
             "train.lr=1"]
    assert arm_overrides("grpo", given) == (["algo.dynamic_sampling=true", "train.lr=1"],
                                            ["algo.overlong_buffer_len=2", "algo.overlong_max_len=8"])
    assert arm_overrides("grpo", [*given, "algo.shaping=[soft_overlong]"])[1] == []
    assert arm_overrides("dapo", given)[1] == []
