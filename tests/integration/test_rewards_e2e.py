"""User rewards and datasets end to end: a TRL reward file trains unchanged; failing, hanging, NaN, memory
hogging, worker-killing and badly returning rewards are survived by a real run, with the counts in
metrics.jsonl."""

import json

from grouprl.cli.main import main

FAST = ["train.steps=3", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=0",
        "data.num_train=64", "output.progress=false", "eval.every=0"]

TRL_REWARD = '''
import re

def reward_len(completions, **kwargs):
    """Written for TRL's GRPOTrainer: prefer short answers."""
    return [-float(len(c)) for c in completions]

def digits_only(prompts, completions, **kwargs):
    return [1.0 if re.fullmatch(r"\\d+", c.strip()) else 0.0 for c in completions]
'''

FLAKY = '''
import math
import pathlib

COUNTER = pathlib.Path(__file__).with_name("calls.txt")  # on disk: the worker is replaced after each hang

def every_tenth_raises(prompts, completions, **kwargs):
    n = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1
    COUNTER.write_text(str(n))
    if n % 10 == 0:
        raise RuntimeError("flaky")
    return [1.0] * len(completions)

def hangs(prompts, completions, **kwargs):
    while True:
        pass

def nan(prompts, completions, **kwargs):
    return [math.nan] * len(completions)
'''

FAULTY = '''
import os

def hogs_memory(prompts, completions, **kwargs):
    return [float(len(bytearray(3 * 1024 ** 3)))] * len(completions)  # 3 GiB; the run allows 512 MiB

def exits(prompts, completions, **kwargs):
    os._exit(1)

def wrong_count(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)

def strings(prompts, completions, **kwargs):
    return ["1.0"] * len(completions)

def length(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]
'''


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_trl_reward_file_trains_unchanged_on_a_jsonl_dataset(tmp_path):
    (tmp_path / "rewards.py").write_text(TRL_REWARD)
    with open(tmp_path / "data.jsonl", "w") as handle:
        for a in range(20):
            handle.write(json.dumps({"question": f"{a}+{a}=", "answer": str(2 * a)}) + "\n")
    run_dir = tmp_path / "run"
    code = main(["train", *FAST, f"data.path={tmp_path}/data.jsonl", "data.prompt_column=question",
                 f"rewards=[{tmp_path}/rewards.py:reward_len, "
                 f"{{name: {tmp_path}/rewards.py:digits_only, weight: 2}}]",
                 f"output.run_dir={run_dir}"])
    assert code == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == 3 and "reward/reward_len/mean" in rows[0] and "reward/digits_only/mean" in rows[0]
    completion = read_jsonl(run_dir / "completions.jsonl")[0]
    expected = completion["reward/reward_len"] + 2 * completion["reward/digits_only"]
    assert abs(completion["reward"] - expected) < 1e-9


def test_failing_hanging_and_nan_rewards_are_survived(tmp_path):
    (tmp_path / "flaky.py").write_text(FLAKY)
    run_dir = tmp_path / "run"
    code = main(["train", *FAST, "train.steps=10", "reward_timeout=0.5", "reward_fail_fast=false",
                 f"output.run_dir={run_dir}",
                 f"rewards=[correct_answer, {tmp_path}/flaky.py:every_tenth_raises, "
                 f"{tmp_path}/flaky.py:hangs, {tmp_path}/flaky.py:nan]"])
    assert code == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == 10
    assert sum(r["reward/every_tenth_raises/errors"] for r in rows) == 16  # the 10th call: 16 samples
    assert all(r["reward/hangs/timeouts"] == 16 for r in rows)
    assert all(r["reward/nan/errors"] == 16 for r in rows)
    assert all(r["loss/policy"] is not None for r in rows)
    # a mean is over the function's own values: a fallback is not one (all-failing functions have none)
    assert all(r["reward/hangs/mean"] is None and r["reward/nan/mean"] is None for r in rows)


def test_reward_faults_are_counted_and_the_run_finishes(tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    run_dir = tmp_path / "run"
    bad = ["hogs_memory", "exits", "wrong_count", "strings"]
    rewards = ", ".join(f"{tmp_path}/faulty.py:{name}" for name in ["length", *bad])
    code = main(["train", "train.steps=2", "train.prompts_per_step=2", "rollout.num_generations=2",
                 "data.num_eval=0", "eval.every=0", "output.progress=false", "output.plots=false",
                 "reward_memory_mb=512", "reward_fail_fast=false", f"rewards=[{rewards}]",
                 f"output.run_dir={run_dir}"])
    assert code == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == 2
    for row in rows:
        assert all(row[f"reward/{name}/errors"] == 4 for name in bad), row  # 2 prompts x 2 generations
        assert all(row[f"reward/{name}/mean"] is None for name in bad), row  # fallbacks are not values
        assert row["reward/length/errors"] == 0
    for completion in read_jsonl(run_dir / "completions.jsonl"):
        assert completion["reward/length"] == len(completion["completion"])
        assert completion["reward"] == completion["reward/length"]  # every bad one scored the fallback, 0
