"""Bad input on the command line: one line naming what and where, exit status 2, nothing half-written."""

import pytest

from grouprl.cli.main import main


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "1+1="}\n{"prompt": \n')
    (tmp_path / "nocol.jsonl").write_text('{"question": "1+1="}\n')
    (tmp_path / "bad.yaml").write_text("train: [oops\n")
    (tmp_path / "unknown.yaml").write_text("trainer:\n  lr: 1\n")
    (tmp_path / "long.jsonl").write_text('{"prompt": "%s"}\n' % ("1" * 400))
    (tmp_path / "reward_bad.py").write_text("import nonexistent_module_xyz\n")
    return tmp_path


CASES = [
    (["train.lr=abc"], "train.lr: expected float"),
    (["train.nope=1"], "unknown config key 'train.nope'"),
    (["rollout.num_generations=1"], "rollout.num_generations must be >= 2"),
    (["algorithm=nope"], "unknown algorithm 'nope'"),
    (["algo.clip=log_clip"], "geometric ratio and the log-space clip go together"),
    (["model.name_or_path=/does/not/exist"], "'/does/not/exist' is not an existing directory"),
    (["data.path={tmp}/missing.jsonl"], "missing.jsonl does not exist"),
    (["data.path={tmp}/empty.jsonl"], "empty.jsonl is empty"),
    (["data.path={tmp}/broken.jsonl"], "broken.jsonl line 2: not valid JSON"),
    (["data.path={tmp}/nocol.jsonl"], "nocol.jsonl line 1: no 'prompt' column"),
    (["--config", "{tmp}/bad.yaml"], "bad.yaml line"),
    (["--config", "{tmp}/unknown.yaml"], "unknown config key 'trainer'"),
    (["--config", "{tmp}/none.yaml"], "does not exist"),
    (["rewards=[no_such_reward]"], "unknown reward 'no_such_reward'"),
    (["rewards=[{tmp}/reward_bad.py:fn]"], "importing"),
    (["rewards=[{tmp}/missing.py:fn]"], "missing.py does not exist"),
    (["rewards=[os:no_such_fn]"], "has no callable 'no_such_fn'"),
    (["data.path={tmp}/long.jsonl"], "exceeds the model's context of"),
    (["data.task=nope"], "unknown task 'nope'"),
    (["data.task_kwargs={digits: 0}"], "digits=0"),
    (["data.num_train=999999"], "has only 10000 prompts in all"),
    (["train.lr=-1"], "train.lr must be > 0"),
    (["rollout.top_p=2"], "rollout.top_p must be in (0, 1]"),
    (["train.lr_scheduler=step"], "train.lr_scheduler must be constant, linear or cosine"),
    (["algo.retain_k=1", "algorithm=gfpo"], "retain_k must be >= 2"),
    (["--resume", "{tmp}/not_a_checkpoint"], "not a checkpoint directory"),
    (["rewards=[{name: correct_answer, wieght: 2}]"], "must be a name or {name: ..., weight: ..., kwargs: ...}"),
]


@pytest.mark.parametrize("args,message", CASES)
def test_bad_input_exits_2_with_one_line(files, capsys, args, message):
    run_dir = files / "run"
    args = [a.replace("{tmp}", str(files)) for a in args]
    code = main(["train", *args, f"output.run_dir={run_dir}", "output.progress=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message.replace("{tmp}", str(files)) in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not run_dir.exists(), "a failed start must not leave a run directory"
