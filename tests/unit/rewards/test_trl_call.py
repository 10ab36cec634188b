"""Reward functions are called exactly as TRL's GRPOTrainer calls them, in the worker and in-process: the two
forms of prompts and completions, every column, ``trainer_state`` and the ``log_extra`` / ``log_metric``
hooks; entries may name factories and map columns; a function TRL could not call is refused at start-up."""

import asyncio
import pickle

import pytest

from grouprl.rewards import (
    TRL_KEYWORDS,
    Reward,
    RewardError,
    RewardRunner,
    RewardState,
    dataset_columns,
    resolve_rewards,
    reward_inputs,
)

ROWS = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="}],
         "solution": "2", "completion": "ignored", "level": 1},
        {"prompt": "2+2=", "solution": "4", "completion": "ignored", "level": 2}]


def test_reward_inputs_have_trl_forms():
    prompts, completions, columns = reward_inputs(ROWS, ["2", "3", "4", "5"], 2)
    assert prompts == [ROWS[0]["prompt"]] * 2 + ["2+2="] * 2  # as the rows give them, no template applied
    assert completions == [[{"role": "assistant", "content": "2"}], [{"role": "assistant", "content": "3"}],
                           "4", "5"]  # message lists for a chat row, strings for a text row
    # TRL drops prompt, completion
    assert columns == {"solution": ["2", "2", "4", "4"], "level": [1, 1, 2, 2]}
    assert dataset_columns(ROWS) == {"solution", "level"}


def records(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
    """Returns what it was given, as numbers: the test reads them back through log_extra."""
    log_metric("seen", float(len(completions)))
    log_metric("seen", 1.0)
    log_extra("kwargs", [",".join(sorted(columns))] * len(completions))
    log_extra("form", [type(c).__name__ for c in completions])
    log_extra("object", [object] * (len(completions) - 1))  # short, and not JSON: padded, and as text
    return [float(trainer_state.global_step)] * len(completions)


async def async_records(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    kwargs["log_metric"]("async", 2.0)
    return [float(len(p) if isinstance(p, list) else -1) for p in prompts]


@pytest.mark.parametrize("isolate", [True, False])
def test_the_call_passes_state_and_hooks_and_returns_what_was_logged(isolate):
    prompts, completions, columns = reward_inputs(ROWS, ["2", "3", "4", "5"], 2)
    runner = RewardRunner([Reward("records", records), Reward("async", async_records)], isolate=isolate)
    try:
        out = runner.score(prompts, completions, [[5], [6], [7], [8]], columns,
                           state=RewardState(global_step=7, max_steps=10))
    finally:
        runner.close()
    assert out.parts["records"].tolist() == [7.0] * 4  # trainer_state.global_step
    assert out.parts["async"].tolist() == [2.0, 2.0, -1.0, -1.0]  # prompts: the message list, or the string
    assert out.errors == {"records": 0, "async": 0}
    report = out.report
    assert report.metrics == {"seen": [4.0, 1.0], "async": [2.0]}
    assert report.extra["kwargs"] == ["level,solution"] * 4
    assert report.extra["form"] == ["list", "list", "str", "str"]
    assert report.extra["object"] == ["<class 'object'>"] * 3 + [None]
    assert report.failed["records"].tolist() == [False] * 4


def test_the_trainer_state_is_plain_and_picklable():
    state = RewardState(global_step=3, max_steps=9, epoch=0.5, is_world_process_zero=False)
    assert pickle.loads(pickle.dumps(state)) == state


def test_failed_samples_are_marked_and_the_first_fault_kept():
    def half_nan(prompts, completions, **kwargs):
        return [1.0, float("nan")] * (len(completions) // 2)

    def raises(prompts, completions, **kwargs):
        raise RuntimeError("boom")

    runner = RewardRunner([Reward("half", half_nan), Reward("raises", raises)], isolate=False)
    out = runner.score(["p"] * 4, ["a"] * 4, None, {})
    assert out.report.failed["half"].tolist() == [False, True, False, True]
    assert out.report.failed["raises"].tolist() == [True] * 4
    assert out.report.first_error == {"half": "returned nan (float) for sample 1",
                                      "raises": "failed (RuntimeError: boom)"}
    assert (out.report.scored, out.report.n) == (4, 4)


USER_REWARDS = '''
def make_contains(needle, bonus=1.0):
    """A factory: open-r1's get_*_reward style."""
    def contains_reward(completions, **kwargs):
        return [bonus * (needle in c) for c in completions]
    return contains_reward

def make_nameless(value):
    import functools
    return functools.partial(lambda completions, value, **kwargs: [value] * len(completions), value=value)

def needs_solution(completions, solution, **kwargs):
    return [float(c == s) for c, s in zip(completions, solution)]

def not_a_factory(**kwargs):
    return 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "user_rewards.py"
    path.write_text(USER_REWARDS)
    return path


def test_a_factory_is_called_once_and_named_after_its_result(user_file):
    contains, nameless = resolve_rewards([
        {"name": f"{user_file}:make_contains", "factory_kwargs": {"needle": "4", "bonus": 2.0},
         "weight": 0.5},
        {"name": f"{user_file}:make_nameless", "factory_kwargs": {"value": 3.0}}], [])
    assert (contains.name, contains.weight, nameless.name) == ("contains_reward", 0.5, "make_nameless")
    assert contains.fn(completions=["14", "5"]) == [2.0, 0.0]
    assert nameless.fn(completions=["a"]) == [3.0]


def test_columns_reach_a_function_under_its_keyword(user_file):
    [reward] = resolve_rewards([{"name": f"{user_file}:needs_solution", "columns": {"answer": "solution"}}],
                               [], {"answer"})
    out = RewardRunner([reward], isolate=False).score(["p"] * 2, ["4", "5"], None, {"answer": ["4", "4"]})
    assert out.parts["needs_solution"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "{f}:make_contains", "factory_kwargs": {"needel": "4"}},
     r"reward '.*:make_contains': its factory refused factory_kwargs=\{'needel': '4'\}: TypeError"),
    ({"name": "{f}:not_a_factory", "factory_kwargs": {}},
     r"its factory returned 3 \(int\), not a reward function"),
    ({"name": "{f}:make_contains", "factory_kwargs": 3}, "factory_kwargs of .* must be a mapping, got 3"),
    ({"name": "{f}:needs_solution", "columns": {"answer": 3}}, "columns of .* must map a dataset column to a "
                                                                "keyword name, e.g. {answer: solution}"),
    ({"name": "{f}:needs_solution", "columns": {"label": "solution"}},
     "rewards: needs_solution's columns maps 'label', which the dataset does not have "
     "\\(its columns: answer\\)"),
    ({"name": "{f}:needs_solution"},
     "reward needs_solution requires 'solution', which is neither an argument TRL passes nor a dataset "
     "column \\(columns: answer\\); TRL calls a reward function as fn\\(prompts=..."),
    ({"name": "{f}:make_contains", "wieght": 2},
     "has unknown key\\(s\\) wieght; an entry takes name, weight, kwargs, factory_kwargs, columns"),
], ids=["factory-refuses", "not-callable", "not-a-mapping", "bad-columns", "absent-column", "missing-keyword",
        "unknown-key"])
def test_bad_entries_are_one_line(user_file, entry, message):
    entry = {**entry, "name": entry["name"].format(f=user_file)}
    with pytest.raises(RewardError, match=message) as info:
        resolve_rewards([entry], [], {"answer"})
    assert "\n" not in str(info.value)


def arity_one(x):
    return [0.0]


def no_var_kwargs(prompts, completions):
    return [0.0] * len(completions)


def positional_only(prompts, completions, /, **kwargs):
    return [0.0] * len(completions)


def takes_everything(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, answer):
    return [0.0] * len(completions)


@pytest.mark.parametrize(("fn", "message"), [
    (arity_one,
     "reward arity_one requires 'x', which is neither an argument TRL passes nor a dataset column"),
    (no_var_kwargs, "reward no_var_kwargs does not accept completion_ids, trainer_state, log_extra, "
                    "log_metric, answer; TRL calls .*: add \\*\\*kwargs to its parameters"),
    (positional_only, "reward positional_only: parameter 'prompts' is positional-only, but TRL calls"),
])
def test_a_function_trl_could_not_call_is_refused(fn, message):
    with pytest.raises(RewardError, match=message):
        resolve_rewards([], [fn], {"answer"})


def test_what_trl_can_call_passes_the_check():
    resolve_rewards([], [takes_everything, records, async_records], {"answer"})
    assert set(TRL_KEYWORDS) == {"prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                                 "log_metric"}
    # without the dataset's columns only what holds for every dataset is checked
    with pytest.raises(RewardError, match="does not accept prompts, completions"):
        resolve_rewards([], [arity_one], None)
