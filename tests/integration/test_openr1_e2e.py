"""An open-r1 user's rewards train unchanged on a conversational dataset; a reward that always fails stops the
run (or, when tolerated, leaves null fallbacks); a function TRL could not call is refused before any model
loads."""

import json
import os
import shutil

import pytest

from grouprl.cli.main import main
from grouprl.model.assets import DEFAULT_MODEL_DIR
from grouprl.model.load import load_tokenizer

TINY = ["train.prompts_per_step=2", "rollout.num_generations=4", "eval.every=0", "data.num_eval=0",
        "output.plots=false", "output.progress=false"]

# A backslash at the end of a line in this string joins that line to the next one (the code is unchanged).
OPEN_R1_STYLE = '''
import json, os, pathlib

CALLS = pathlib.Path(__file__).with_name("calls.jsonl")


def _record(fn, prompts, completions, kwargs):
    with open(CALLS, "a") as handle:
        handle.write(json.dumps({"fn": fn, "pid": os.getpid(), "prompt": prompts[0], \
"completion": completions[0],
                                 "step": kwargs["trainer_state"].global_step,
                                 "columns": sorted(k for k in kwargs if k not in ("trainer_state", \
"log_extra",
                                                                                   "log_metric"))}) + "\\n")


def exact_solution(completions, solution, **kwargs):
    """open-r1's signature and message handling: completions[i][0]["content"], the solution column."""
    _record("exact_solution", kwargs["prompts"], completions, {**kwargs, "solution": solution})
    contents = [completion[0]["content"] for completion in completions]
    return [float(c.strip() == s.strip("$")) for c, s in zip(contents, solution)]


async def shorter(prompts, completions, **kwargs):
    """Async, and logs through TRL's hooks; varies within a group, so the gradient is not zero."""
    _record("shorter", prompts, completions, kwargs)
    lengths = [len(completion[0]["content"]) for completion in completions]
    kwargs["log_metric"]("mean_chars", sum(lengths) / len(lengths))
    kwargs["log_extra"]("chars", lengths)
    return [-float(n) for n in lengths]


def get_contains_reward(needle):
    def contains_reward(completions, **kwargs):
        _record("contains_reward", kwargs["prompts"], completions, kwargs)
        return [float(needle in completion[0]["content"]) for completion in completions]
    return contains_reward


def from_answer(prompts, completions, reference, **kwargs):
    """Reads the dataset's answer column as ``reference`` (mapped with columns:)."""
    _record("from_answer", prompts, completions, {**kwargs, "reference": reference})
    return [float(completion[0]["content"].strip() == r) for completion, r in zip(completions, reference)]


def boom_from_step_2(prompts, completions, trainer_state, **kwargs):
    if trainer_state.global_step >= 1:
        raise RuntimeError("boom")
    return [0.0] * len(completions)


def scalar(completions, **kwargs):
    return 0.5
'''

BUILT_INS = ("accuracy, format, tag_count, reasoning_steps, length, cosine, repetition_penalty, code_format, "
             "{name: soft_overlong_punishment, "
             "factory_kwargs: {max_completion_len: 4, soft_punish_cache: 2}}")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The embedded default model with a chat template that renders only the messages' contents, so that a
    conversational "12+7=" is the same text the model was trained to continue."""
    path = tmp_path_factory.mktemp("chat_model")
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(DEFAULT_MODEL_DIR / name, path / name)
    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def run(tmp_path, chat_model):
    """A conversational dataset with open-r1's solution column (and an answer column), the reward file, and a
    ``grouprl train`` on them; returns (exit status, run directory, stderr)."""
    (tmp_path / "r.py").write_text(OPEN_R1_STYLE)
    with open(tmp_path / "data.jsonl", "w") as handle:
        for a in range(12):
            prompt = [{"role": "user", "content": f"{a}+{a + 3}="}]
            handle.write(json.dumps({"prompt": prompt, "solution": f"${2 * a + 3}$",
                                     "answer": str(2 * a + 3)}) + "\n")

    def train(rewards: str, *overrides, capsys):
        run_dir = tmp_path / "run"
        code = main(["train", *TINY, f"model.name_or_path={chat_model}", f"data.path={tmp_path}/data.jsonl",
                     f"rewards=[{rewards.replace('{r}', str(tmp_path / 'r.py'))}]",
                     f"output.run_dir={run_dir}", *overrides])
        return code, run_dir, capsys.readouterr().err

    return train


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_open_r1_rewards_train_on_a_conversational_dataset(run, tmp_path, capsys):
    user = ("{r}:exact_solution, {r}:shorter, "
            "{name: {r}:get_contains_reward, factory_kwargs: {needle: '1'}}, "
            "{name: {r}:from_answer, columns: {answer: reference}}")
    code, run_dir, err = run(f"{user}, {BUILT_INS}", "train.steps=3", f"data.eval_path={tmp_path}/data.jsonl",
                             "data.num_eval=2", "eval.num_samples=0", capsys=capsys)
    assert code == 0, err
    names = ["exact_solution", "shorter", "contains_reward", "from_answer", "accuracy", "format", "tag_count",
             "reasoning_steps", "length", "cosine", "repetition_penalty", "code_format",
             "soft_overlong_punishment"]
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(row[f"reward/{name}/errors"] == 0 and row[f"reward/{name}/timeouts"] == 0
                   for name in names), row
        assert row["reward_log/mean_chars"] >= 0  # log_metric, averaged over the step
    assert any(r["grad_norm"] > 0 for r in rows)

    calls = read_jsonl(tmp_path / "calls.jsonl")
    assert {c["fn"] for c in calls} == {"exact_solution", "shorter", "contains_reward", "from_answer"}
    assert all(c["pid"] != os.getpid() for c in calls)  # called in the reward worker
    for call in calls:  # TRL's conversational form, the row's prompt untouched by the chat template
        assert call["prompt"][0]["role"] == "user" and call["prompt"][0]["content"].endswith("=")
        assert [m["role"] for m in call["completion"]] == ["assistant"]
        assert isinstance(call["completion"][0]["content"], str)
    assert sorted({c["step"] for c in calls}) == [0, 1, 2, 3]  # trainer_state.global_step; 3: the last eval
    assert {c["fn"] for c in calls if c["step"] == 3} == {"exact_solution"}  # evaluation calls the verifier
    assert [r["step"] for r in read_jsonl(run_dir / "eval.jsonl")] == [0, 3]
    # answer: renamed
    assert {tuple(c["columns"]) for c in calls if c["fn"] == "from_answer"} == {
        ("completion_ids", "reference", "solution")}
    assert {tuple(c["columns"]) for c in calls if c["fn"] == "shorter"} == {("answer", "completion_ids",
                                                                             "solution")}

    completions = read_jsonl(run_dir / "completions.jsonl")
    for completion in completions:
        assert completion["reward_errors"] == []
        assert completion["extra/chars"] == len(completion["completion"]) == -completion["reward/shorter"]
        assert completion["prompt"][0]["role"] == "user"


def test_a_reward_that_fails_on_every_sample_stops_the_run(run, capsys):
    code, run_dir, err = run("{r}:shorter, {r}:boom_from_step_2", "train.steps=3", capsys=capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line and not line.startswith("warning: ")]
    assert len(lines) == 1 and err.splitlines()[-1] == lines[0] and "Traceback" not in err
    assert lines[0].startswith("grouprl train: error: reward boom_from_step_2 got reward_fallback "
                               "on every sample of step 2 (8 samples); its first fault: failed "
                               "(RuntimeError: boom)")
    assert "reward_fail_fast=false" in lines[0]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]  # the completed step is kept
    assert {r["step"] for r in read_jsonl(run_dir / "completions.jsonl")} == {1}
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


def test_a_tolerated_failure_trains_on_with_null_fallbacks(run, capsys):
    code, run_dir, err = run("{r}:shorter, {r}:boom_from_step_2", "train.steps=3", "reward_fail_fast=false",
                             capsys=capsys)
    assert code == 0, err
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["reward/boom_from_step_2/errors"] for r in rows] == [0, 8, 8]
    for completion in read_jsonl(run_dir / "completions.jsonl"):
        failed = completion["step"] >= 2
        assert completion["reward_errors"] == (["boom_from_step_2"] if failed else [])
        assert (completion["reward/boom_from_step_2"] is None) == failed  # a fallback is not a real 0
        assert completion["reward"] == completion["reward/shorter"]  # the fallback (0) adds nothing


def test_a_scalar_return_stops_the_run_at_the_first_step(run, capsys):
    code, run_dir, err = run("{r}:shorter, {r}:scalar", "train.steps=2", capsys=capsys)
    assert code == 2
    assert ("reward scalar got reward_fallback on every sample of step 1 (8 samples); its first fault: "
            "returned 0.5 (float), not a list of 8 values") in err
    assert not (run_dir / "metrics.jsonl").exists()  # no step was completed
