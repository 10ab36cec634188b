"""Reward functions run in a worker process: exceptions, hangs, NaN, crashes, memory hogs and bad returns
become the fallback value and are counted; nothing reaches the trainer."""

import asyncio
import math
import os
import resource
import signal

import pytest

import grouprl.rewards
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
    runner = RewardRunner([Reward("good", good), Reward("async", asynchronous, 0.5),
                           Reward("cols", uses_columns)], isolate=isolate)
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


BAD_RETURNS = {
    "a_float": (lambda prompts, completions, **kw: 0.5, "returned 0.5 (float), not a list of 4 values"),
    "none": (lambda prompts, completions, **kw: None, "returned None (NoneType), not a list of 4 values"),
    "a_generator": (lambda prompts, completions, **kw: (1.0 for _ in completions),
                    "returned a generator, not a list"),
    "a_dict": (lambda prompts, completions, **kw: {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, "(dict), not a list"),
    "a_string": (lambda prompts, completions, **kw: "1234", "returned '1234' (str), not a list of 4 values"),
    "three": (lambda prompts, completions, **kw: [1.0, 2.0, 3.0], "returned 3 values for 4 completions"),
}


@pytest.fixture
def warnings(monkeypatch, capsys):
    ("""The reward warnings printed during a test (each fault kind of a function is printed once """
     """per process).""")
    monkeypatch.setattr(grouprl.rewards, "_WARNED", set())
    return lambda: capsys.readouterr().err


@pytest.mark.parametrize("isolate", [True, False])
def test_a_return_that_is_not_one_value_per_completion_is_a_counted_error(isolate, warnings):
    runner = RewardRunner([Reward(name, fn) for name, (fn, _) in BAD_RETURNS.items()]
                          + [Reward("good", good)], isolate=isolate, fallback=-1.0)
    try:
        out = runner.score(*ARGS)
        again = runner.score(*ARGS)
    finally:
        runner.close()
    printed = warnings()
    for name, (_, message) in BAD_RETURNS.items():
        assert out.parts[name].tolist() == [-1.0] * 4 and out.errors[name] == again.errors[name] == 4
        assert printed.count(f"warning: reward {name} ") == 1  # once, though it failed twice
        assert f"warning: reward {name} " in printed and message in printed.split(f"reward {name} ")[1]
    assert out.parts["good"].tolist() == [1.0, 2.0, 0.0, 4.0] and out.errors["good"] == 0


def strings(prompts, completions, **kw):
    return ["1.5", 1.0, "x", b"2"]


@pytest.mark.parametrize("isolate", [True, False])
def test_strings_are_not_numbers(isolate, warnings):
    runner = RewardRunner([Reward("strings", strings)], isolate=isolate)
    try:
        out = runner.score(*ARGS)
    finally:
        runner.close()
    assert out.parts["strings"].tolist() == [0.0, 1.0, 0.0, 0.0] and out.errors["strings"] == 3
    assert "warning: reward strings returned '1.5' (str) for sample 0 (sample completion: 'a')" in warnings()


def allocates_1gib(prompts, completions, **kw):
    return [float(len(bytearray(1024 ** 3)))] * len(completions)


def allocates_64gib(prompts, completions, **kw):
    return [float(len(bytearray(64 * 1024 ** 3)))] * len(completions)


def killed_like_by_the_oom_killer(prompts, completions, **kw):
    os.kill(os.getpid(), signal.SIGKILL)


def address_space(prompts, completions, **kw):
    """[soft RLIMIT_AS, VmSize] of the worker in MiB (-1: no limit), its pid, its oom_score_adj."""
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    with open("/proc/self/status") as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    with open("/proc/self/oom_score_adj") as adj:
        oom = float(adj.read())
    return [-1.0 if soft == resource.RLIM_INFINITY else soft / 2**20, vm_kib / 1024, float(os.getpid()), oom]


def test_the_memory_limit_is_a_budget_above_what_the_fork_inherited():
    runner = RewardRunner([Reward("space", address_space)], memory_mb=512)
    unlimited = RewardRunner([Reward("space", address_space)], memory_mb=0)
    try:
        soft, vm, pid, oom = runner.score(*ARGS).parts["space"].tolist()
        no_limit = unlimited.score(*ARGS).parts["space"].tolist()[0]
    finally:
        runner.close()
        unlimited.close()
    assert pid == runner.worker.process.pid != os.getpid()
    assert 512 - 64 <= soft - vm <= 512  # the call itself may have mapped a little since the worker started
    assert vm > 100  # the worker maps the trainer's torch already: a limit counted from 0 would starve it
    assert oom == 1000  # the worker, not the trainer, is the OOM killer's first choice
    assert no_limit == -1.0


def test_memory_hogs_are_counted_errors_and_the_worker_survives(warnings):
    runner = RewardRunner([Reward("hog", allocates_1gib), Reward("huge", allocates_64gib),
                           Reward("good", good)], memory_mb=256)
    try:
        pid = runner.worker.process.pid
        out = runner.score(*ARGS)
        assert runner.worker.process.pid == pid  # MemoryError was caught in the worker, which lives on
        again = runner.score(*ARGS)
    finally:
        runner.close()
    assert out.errors["hog"] == out.errors["huge"] == again.errors["hog"] == 4
    assert out.parts["hog"].tolist() == [0.0] * 4
    assert out.parts["good"].tolist() == again.parts["good"].tolist() == [1.0, 2.0, 0.0, 4.0]
    assert "warning: reward hog failed (MemoryError)" in warnings()


def test_a_killed_worker_is_replaced_and_its_call_counted(warnings):
    runner = RewardRunner([Reward("killed", killed_like_by_the_oom_killer), Reward("good", good)])
    try:
        pid = runner.worker.process.pid
        out = runner.score(*ARGS)
        assert runner.worker.process.pid != pid
        again = runner.score(*ARGS)
    finally:
        runner.close()
    assert out.errors["killed"] == again.errors["killed"] == 4
    assert out.parts["good"].tolist() == again.parts["good"].tolist() == [1.0, 2.0, 0.0, 4.0]
    assert ("reward killed failed (the reward worker died (killed by SIGKILL, "
            "e.g. by the OOM killer)") in warnings()


def test_loading_by_name_module_and_file(tmp_path):
    (tmp_path / "my_reward.py").write_text("def fn(prompts, completions, **kw):\n"
                                           "    return [1.0] * len(completions)\n")
    assert load_reward_fn("correct_answer").__name__ == "correct_answer"
    assert load_reward_fn("math:sqrt") is math.sqrt
    assert load_reward_fn(f"{tmp_path}/my_reward.py:fn")([""], ["x"]) == [1.0]
    rewards = resolve_rewards([{"name": "correct_answer", "weight": 2.0}], [])
    assert (rewards[0].name, rewards[0].weight) == ("correct_answer", 2.0)
    with pytest.raises(RewardError, match="unknown reward 'nope'; built-in: accuracy, answer_tag_number, "
                                          "boxed_number, code_format"):
        load_reward_fn("nope")


def test_kwargs_configure_a_built_in_reward():
    rewards = resolve_rewards([{"name": "soft_overlong_penalty",
                                "kwargs": {"max_len": 5, "cache_len": 2}}], [])
    out = RewardRunner(rewards, isolate=False).score(["p"] * 2, ["ab", "abcde"],
                                                     [[1, 2], [1, 2, 3, 4, 5]], {})
    assert out.parts["soft_overlong_penalty"].tolist() == [0.0, -1.0]
    with pytest.raises(RewardError, match="kwargs of 'length_penalty' must be a mapping"):
        resolve_rewards([{"name": "length_penalty", "kwargs": 3}], [])


def test_the_worker_dies_with_a_killed_trainer(tmp_path):
    ("""kill -9 of the trainer must not leave its reward worker behind """
     """(it holds a forked copy of the model).""")
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "trainer.py"
    script.write_text(
        "import time\n"
        "from grouprl.rewards import Reward, RewardRunner\n"
        "runner = RewardRunner([Reward('len', "
        "lambda prompts, completions, **kw: [1.0] * len(completions))])\n"
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


def test_reward_memory_mb_is_a_config_key():
    from grouprl.config import ConfigError, load_config

    assert load_config(None, []).reward_memory_mb == 8192
    assert load_config(None, ["reward_memory_mb=0"]).reward_memory_mb == 0
    with pytest.raises(ConfigError, match="reward_memory_mb must be >= 0 MiB"):
        load_config(None, ["reward_memory_mb=-1"])
