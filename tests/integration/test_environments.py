"""``grouprl train environment=...`` end to end (calculator on its embedded player, guess_number on the
embedded default, which does not learn the game: both must run, evaluate and log; ``grouprl show`` prints
the trajectories), a TRL-style environment file with a reward reading ``environments``, and bad input."""

from __future__ import annotations

import json

import pytest

from grouprl.cli.main import main

FAST = ["train.steps=2", "train.prompts_per_step=2", "rollout.num_generations=2", "data.num_train=16",
        "output.progress=false", "output.plots=false", "rollout.max_turns=3"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("env,backend", [("calculator", "auto"), ("guess_number", "hf")])
def test_train_with_a_builtin_environment_logs_episode_metrics(tmp_path, env, backend, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    budget = [] if env == "calculator" else ["rollout.max_new_tokens=16"]  # the player's own: 112 tokens
    assert main(["train", *FAST, f"environment={env}", f"rollout.backend={backend}", "data.num_eval=4",
                 "eval.num_samples=2", f"output.run_dir={run_dir}", *budget]) == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["env/turns_mean"] >= 1 and 0 <= row["env/token_frac"] < 1
        assert row["env/tool_calls_mean"] >= 0 and row["env/tool_errors_mean"] >= 0
    if env == "guess_number":  # every turn gets feedback, so the environment writes tokens
        assert any(r["env/token_frac"] > 0 for r in rows) and "reward/environment/mean" in rows[0]
    else:  # the embedded player calls a tool and reads its result
        assert all(r["env/tool_calls_mean"] > 0 and r["env/token_frac"] > 0 for r in rows)
    evals = read_jsonl(run_dir / "eval.jsonl")  # held-out episodes before and after
    assert [e["step"] for e in evals] == [0, 2]
    assert all(0 <= e["eval/pass@1"] <= 1 and e["eval/turns_mean"] >= 1 and "eval/mean@2" in e for e in evals)
    logged = read_jsonl(run_dir / "completions.jsonl")[0]
    completion = logged["completion"]
    assert isinstance(completion, list) and completion[0]["role"] == "assistant"
    assert logged["episode/turns"] >= 1
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "300")  # the table wide enough not to fold a message
    assert main(["show", str(run_dir)]) == 0
    assert "assistant: " in capsys.readouterr().out


ENV_FILE = '''
class Lookup:
    def reset(self, **kwargs) -> str | None:
        self.key, self.calls = kwargs["key"], 0
        return None

    def look(self, name: str) -> str:
        """
        Look a name up.

        Args:
            name: The name
        """
        self.calls += 1
        return "found" if name == self.key else "no"


def used_no_tool(environments, **kwargs):
    return [float(env.calls == 0) for env in environments]
'''


def test_a_trl_style_environment_file_with_an_environments_reward(tmp_path):
    (tmp_path / "lookup.py").write_text(ENV_FILE)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"find {k}", "key": k}) + "\n" for k in "abcd"))
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "rollout.max_new_tokens=16", f"environment={tmp_path}/lookup.py:Lookup",
                 f"data.path={data}",
                 f"rewards=[{tmp_path}/lookup.py:used_no_tool]", f"output.run_dir={run_dir}"]) == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[-1]["reward/used_no_tool/errors"] == 0 and rows[-1]["reward/used_no_tool/mean"] is not None


@pytest.mark.parametrize("source,args,message", [
    ("class E:\n    def look(self, a: int) -> int:\n        return a\n", [],
     "class E has no reset method"),
    ("class E:\n    def reset(self, **row):\n        return None\n"
     "    def look(self, a):\n        return a\n", [], "tool look: parameter 'a' has no type hint"),
    ("class E:\n    def reset(self, **row):\n        return None\n", ["rollout.max_turns=0"],
     "rollout.max_turns must be >= 1"),
])
def test_bad_environment_input_exits_2_with_one_line(tmp_path, capsys, source, args, message):
    (tmp_path / "env.py").write_text(source)
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, f"environment={tmp_path}/env.py:E", f"output.run_dir={run_dir}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (run_dir / "metrics.jsonl").exists()
