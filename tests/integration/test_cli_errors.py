"""Bad input on the command line: one line naming what and where, exit status 2, nothing half-written."""

import shutil

import pytest

from grouprl.cli.main import main
from grouprl.model.assets import DEFAULT_MODEL_DIR


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "1+1="}\n{"prompt": \n')
    (tmp_path / "nocol.jsonl").write_text('{"question": "1+1="}\n')
    (tmp_path / "noanswer.jsonl").write_text('{"prompt": "1+1=", "label": "2"}\n')
    (tmp_path / "bad.yaml").write_text("train: [oops\n")
    (tmp_path / "unknown.yaml").write_text("trainer:\n  lr: 1\n")
    (tmp_path / "long.jsonl").write_text('{"prompt": "%s", "answer": "1"}\n' % ("1" * 400))
    (tmp_path / "reward_bad.py").write_text("import nonexistent_module_xyz\n")
    (tmp_path / "not_trl.py").write_text("def one_arg(x):\n    return [0.0]\n\n"
                                         "def no_kwargs(prompts, completions):\n"
                                         "    return [0.0] * len(completions)\n\n"
                                         "def make(n):\n"
                                         "    return lambda completions, **kw: [n] * len(completions)\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "1+1="}\n{"prompt": "caf\xe9 2+2="}\n')
    (tmp_path / "number.jsonl").write_text('{"prompt": "1+1="}\n{"prompt": 42}\n')
    (tmp_path / "bad_messages.jsonl").write_text('{"messages": [{"role": "user"}]}\n')
    (tmp_path / "latin1.yaml").write_bytes(b"train:\n  steps: 2 # \xe9\n")
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(DEFAULT_MODEL_DIR / "config.json", config_only / "config.json")
    truncated = tmp_path / "truncated"
    shutil.copytree(DEFAULT_MODEL_DIR, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
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
    (["train.lr_scheduler=step"], "train.lr_scheduler='step' is not a fixed learning-rate curve; "
                                  "use one of linear"),
    (["algo.retain_k=1", "algorithm=gfpo"], "retain_k must be >= 2"),
    (["--resume", "{tmp}/not_a_checkpoint"], "not a checkpoint directory"),
    (["rewards=[{name: correct_answer, wieght: 2}]"],
     "has unknown key(s) wieght; an entry takes name, weight, kwargs, factory_kwargs, columns"),
    (["rewards=[{name: correct_answer, weight: abc}]"],
     "rewards[0].weight of 'correct_answer' must be a finite number"),
    (["data.path={tmp}/latin1.jsonl"], "latin1.jsonl line 2 column 16: byte 0xe9 is not UTF-8"),
    (["--config", "{tmp}/latin1.yaml"], "latin1.yaml line 2 column 14: byte 0xe9 is not UTF-8"),
    (["data.path={tmp}/number.jsonl"], "number.jsonl line 2: the 'prompt' column is a number (42)"),
    (["model.name_or_path={tmp}/config_only"],
     "config_only has no tokenizer (tokenizer.json or tokenizer.model), no safetensors weights; "
     "it holds: config.json"),
    (["model.name_or_path={tmp}/truncated"],
     "truncated/model.safetensors is not a complete safetensors file"),
    (["data.path={tmp}/bad_messages.jsonl"],
     "bad_messages.jsonl line 1: the 'messages' column has message 0"),
    (["algorithm=reinforce_pp_baseline", "algo.adv_eps=1e-3"], "algo: adv_eps is read by group_zscore, "
     "group_mean_batch_std, subset_zscore, maxrl, not by batch_whiten_tokens (the chosen advantage)"),
    (["data.task_kwargs={digit: 2}"], "data.task_kwargs: the arithmetic task has no knob digit"),
    # a reward TRL could not call is refused before any model loads (the model path does not even exist)
    (["rewards=[{tmp}/not_trl.py:one_arg]", "model.name_or_path=/does/not/exist"],
     "reward one_arg requires 'x', which is neither an argument TRL passes nor a dataset column "
     "(columns: answer)"),
    (["rewards=[{tmp}/not_trl.py:no_kwargs]", "model.name_or_path=/does/not/exist"],
     "reward no_kwargs does not accept completion_ids, trainer_state, log_extra, log_metric, answer; "
     "TRL calls"),
    (["rewards=[{name: {tmp}/not_trl.py:make, factory_kwargs: {m: 1}}]"],
     "its factory refused factory_kwargs={'m': 1}: TypeError"),
    (["rewards=[{name: correct_answer, columns: {solution: answer}}]"],
     "correct_answer's columns maps 'solution', which the dataset does not have (its columns: answer)"),
    (["rewards=[{name: accuracy, factory_kwargs: {}}]"], "reward 'accuracy' is a function, not a factory"),
    (["data.path={tmp}/noanswer.jsonl"],
     "reward correct_answer requires 'answer', which is neither an argument TRL passes nor a dataset column "
     "(columns: label)"),
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


def test_flags_and_overrides_in_any_order(files, capsys):
    """``train train.steps=3 --config x.yaml train.lr=1`` as people type it: the config error is reached."""
    code = main(["train", "train.steps=3", "--config", str(files / "none.yaml"), "train.lr=1e-3"])
    assert code == 2 and "none.yaml does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a stray word that is not key=value is still a usage error
        main(["train", "train.steps=3", "--config", str(files / "none.yaml"), "oops"])
    assert exit_info.value.code == 2 and "unrecognized arguments: oops" in capsys.readouterr().err


def test_an_internal_error_is_a_traceback_not_a_user_error(monkeypatch, capsys):
    """A ValueError from deep inside is a bug: traceback, one line saying so, exit 1 — never exit 2."""
    import grouprl.train.loop

    def broken(*args, **kwargs):
        raise ValueError("an invariant broke")

    monkeypatch.setattr(grouprl.train.loop, "train", broken)
    code = main(["train", "output.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "ValueError: an invariant broke" in err
    assert "internal error (ValueError); this is a bug" in err.splitlines()[-1]


MACHINES = {  # what the device checks see, whatever machine the test runs on
    "no_cuda": {"is_available": lambda: False},
    "one_gpu": {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0},
}


@pytest.mark.parametrize("args,machine,message", [
    (["model.device=cuda"], "no_cuda", "model.device=cuda but CUDA is not available"),
    (["model.device=cuda:3"], "one_gpu", "model.device=cuda:3 but this machine has 1 GPU(s)"),
    (["model.device=tpu"], "no_cuda", "model.device='tpu' is not a device"),
    (["train.precision=bf16"], "no_bf16", "train.precision=bf16 needs bfloat16 kernels"),
    (["train.precision=fp16"], "no_cuda", "train.precision must be one of auto, fp32, bf16-mixed, bf16"),
    (["model.attn_implementation=flash_attention_2"], "no_flash", "the flash_attn package is not installed"),
])
def test_a_device_or_precision_the_machine_lacks_exits_2(tmp_path, monkeypatch, capsys, args, machine,
                                                          message):
    import torch

    from grouprl.model import device as devices

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name, value in MACHINES.get(machine, MACHINES["no_cuda"]).items():
        monkeypatch.setattr(torch.cuda, name, value)
    if machine == "no_bf16":
        monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    if machine == "no_flash":
        monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    run_dir = tmp_path / "run"
    code = main(["train", *args, f"output.run_dir={run_dir}", "output.progress=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not run_dir.exists()
