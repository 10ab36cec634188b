"""Reward functions run in a worker process: exceptions, hangs, NaN, crashes and bad returns become the
fallback value and are counted; nothing reaches the trainer."""

import asyncio
import math
import os

import pytest

from grouprl.rewards import Reward, RewardError, RewardRunner, load_reward_fn, resolve_rewards


def good(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


def raises(prompts, completions, **kw):
    raise RuntimeError("boom")


def hangs(prompts, completions, **kw):
    while True:
        pass


def nan_and_none(prompts, completions, **kw):
    return [math.nan, None, "x", 1.0]


def crashes(prompts, completions, **kw):
    os._exit(3)


def wrong_length(prompts, completions, **kw):
    return [1.0]


async def asynchronous(prompts, completions, **kw):
    await asyncio.sleep(0)
    return [2.0] * len(completions)


def uses_columns(prompts, completions, completion_ids=None, *, answer, **kw):
    return [float(c == a) for c, a in zip(completions, answer)]


ARGS = (["p"] * 4, ["a", "bb", "", "dddd"], None, {"answer": ["a", "x", "", "y"]})


@pytest.mark.parametrize("isolate", [True, False])
def test_good_async_and_columns(isolate):
    runner = RewardRunner([Reward("good", good), Reward("async", asynchronous, 0.5), Reward("cols", uses_columns)],
                          isolate=isolate)
    try:
        out = runner.score(*ARGS)
    finally:
        runner.close()
    assert out.parts["good"].tolist() == [1.0, 2.0, 0.0, 4.0]
    assert out.total.tolist() == [1 + 1 + 1, 2 + 1 + 0, 0 + 1 + 1, 4 + 1 + 0]
    assert out.errors == {"good": 0, "async": 0, "cols": 0}


def test_failures_become_the_fallback_and_are_counted():
    runner = RewardRunner([Reward("raises", raises), Reward("hangs", hangs), Reward("nan", nan_and_none),
                           Reward("crashes", crashes), Reward("wrong", wrong_length), Reward("good", good)],
                          timeout=1.0, fallback=-1.0)
    try:
        out = runner.score(*ARGS)
        again = runner.score(*ARGS)  # the worker was replaced after the hang and the crash
    finally:
        runner.close()
    assert out.parts["raises"].tolist() == [-1.0] * 4 and out.errors["raises"] == 4
    assert out.parts["hangs"].tolist() == [-1.0] * 4 and out.timeouts["hangs"] == 4
    nan = out.parts["nan"].tolist()
    assert nan[0] == -1.0 and math.isnan(nan[1]) and nan[2] == -1.0 and nan[3] == 1.0
    assert out.errors["nan"] == 2  # NaN and "x"; None is "not applicable", not an error
    assert out.errors["crashes"] == 4 and out.errors["wrong"] == 4
    assert out.parts["good"].tolist() == again.parts["good"].tolist() == [1.0, 2.0, 0.0, 4.0]


def test_loading_by_name_module_and_file(tmp_path):
    (tmp_path / "my_reward.py").write_text("def fn(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    assert load_reward_fn("correct_answer").__name__ == "correct_answer"
    assert load_reward_fn("math:sqrt") is math.sqrt
    assert load_reward_fn(f"{tmp_path}/my_reward.py:fn")([""], ["x"]) == [1.0]
    rewards = resolve_rewards([{"name": "correct_answer", "weight": 2.0}], [])
    assert (rewards[0].name, rewards[0].weight) == ("correct_answer", 2.0)
    with pytest.raises(RewardError, match="unknown reward 'nope'; built-in: code_tests, correct_answer"):
        load_reward_fn("nope")


def test_kwargs_configure_a_built_in_reward():
    rewards = resolve_rewards([{"name": "soft_overlong_penalty", "kwargs": {"max_len": 5, "cache_len": 2}}], [])
    out = RewardRunner(rewards, isolate=False).score(["p"] * 2, ["ab", "abcde"], [[1, 2], [1, 2, 3, 4, 5]], {})
    assert out.parts["soft_overlong_penalty"].tolist() == [0.0, -1.0]
    with pytest.raises(RewardError, match="kwargs of 'length_penalty' must be a mapping"):
        resolve_rewards([{"name": "length_penalty", "kwargs": 3}], [])


def test_the_worker_dies_with_a_killed_trainer(tmp_path):
    """kill -9 of the trainer must not leave its reward worker behind (it holds a forked copy of the model)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "trainer.py"
    script.write_text(
        "import time\n"
        "from grouprl.rewards import Reward, RewardRunner\n"
        "runner = RewardRunner([Reward('len', lambda prompts, completions, **kw: [1.0] * len(completions))])\n"
        "print(runner.worker.process.pid, flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{worker_pid}/stat") as handle:  # a zombie waiting for init to reap it is gone too
            if handle.read().split()[2] == "Z":
                return
        time.sleep(0.05)
    raise AssertionError(f"reward worker {worker_pid} outlived its killed trainer")
