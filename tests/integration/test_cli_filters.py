"""Filters and shaping through the command line: a bad name is one line and exit 2 before any model loads, the
list of algorithms shows each preset's pieces, and the list form trains exactly as the old switches do."""

import json

from grouprl.cli.main import main

FAST = ["train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=8",
        "eval.num_samples=2", "data.num_train=64", "output.progress=false", "output.plots=false"]


def test_an_unknown_filter_is_one_line_and_exit_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "algorithm=dapo", "algo.filters=[nonzero_variance,drop_truncate]",
                 f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "algo: filters: unknown group filter 'drop_truncate'; known: drop_truncated, nonzero_variance, " \
           "retain_k" in err
    assert not run_dir.exists()


def test_a_setting_only_an_unchosen_shaping_reads_is_refused(tmp_path, capsys):
    code = main(["train", "algorithm=grpo", "algo.overlong_buffer_len=2",
                 f"output.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "algo: overlong_buffer_len is read by soft_overlong, not by any chosen shaping (none is on); " \
           "drop it or add soft_overlong to shaping" in err


def test_list_algorithms_shows_the_filters_and_shaping(capsys):
    assert main(["list", "algorithms"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["name"][7:9] == ["filters", "shaping"]
    assert lines["dapo"][7:9] == ["nonzero_variance", "soft_overlong"]
    assert lines["gfpo"][7:9] == ["retain_k", "none"] and lines["grpo"][7:9] == ["none", "none"]


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/")) and k != "tokens_per_s"}
            for r in rows]


def test_the_list_form_trains_as_the_switches_do(tmp_path):
    common = [*FAST, "algorithm=grpo", "algo.overlong_max_len=8", "algo.overlong_buffer_len=2",
              "algo.kl_estimator=k1", "algo.beta=0.01"]
    switches, lists = tmp_path / "switches", tmp_path / "lists"
    assert main(["train", *common, "algo.dynamic_sampling=true", "algo.overlong_filter=true",
                 "algo.soft_overlong=true", "algo.kl_placement=reward", f"output.run_dir={switches}"]) == 0
    assert main(["train", *common, "algo.filters=[drop_truncated,nonzero_variance]",
                 "algo.shaping=[kl_in_reward,soft_overlong]", f"output.run_dir={lists}"]) == 0
    a, b = _metrics(switches), _metrics(lists)
    assert a == b and "sampling/groups_sampled" in a[0] and "loss/kl" not in a[0]
