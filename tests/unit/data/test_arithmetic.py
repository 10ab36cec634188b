"""The built-in arithmetic task: determinism, disjoint splits, correct answers, and its verifier."""

import doctest
import re

import pytest

from grouprl.data.tasks import TASKS, get_task
from grouprl.data.tasks.arithmetic import ArithmeticTask
from grouprl.errors import ConfigError
from grouprl.rewards import arithmetic
from grouprl.rewards.arithmetic import correct_answer, integer_format


def _evaluate(prompt: str) -> int:
    """Independent reference: parse ``a op b op c ... =`` with a regex and fold left to right."""
    tokens = re.findall(r"\d+|[+-]", prompt.removesuffix("="))
    total = int(tokens[0])
    for op, value in zip(tokens[1::2], tokens[2::2]):
        total = total + int(value) if op == "+" else total - int(value)
    return total


def test_registry_lookup_and_unknown_name():
    assert "arithmetic" in TASKS
    task = get_task("arithmetic", digits=3)
    assert task.name == "arithmetic" and task.digits == 3
    with pytest.raises(ConfigError, match="data.task: unknown task .no_such_task.; known tasks: arithmetic"):
        get_task("no_such_task")


@pytest.mark.parametrize("split", ["train", "eval"])
def test_generate_is_deterministic_in_seed(split):
    task = ArithmeticTask()
    assert task.generate(split, 50, seed=3) == task.generate(split, 50, seed=3)
    assert task.generate(split, 50, seed=3) != task.generate(split, 50, seed=4)


def test_rows_are_distinct_and_have_prompt_and_answer():
    rows = ArithmeticTask().generate("train", 500, seed=0)
    assert len({r["prompt"] for r in rows}) == 500
    assert all(isinstance(r["prompt"], str) and isinstance(r["answer"], str) for r in rows)


def test_splits_are_disjoint_across_seeds():
    task = ArithmeticTask()
    train = {r["prompt"] for seed in range(3) for r in task.generate("train", 2000, seed)}
    held_out = {r["prompt"] for seed in range(3) for r in task.generate("eval", 500, seed)}
    assert train and held_out and not train & held_out


@pytest.mark.parametrize(
    "knobs", [{}, {"digits": 3}, {"digits": 1, "operands": 3, "ops": ("+", "-")}, {"ops": ("-",)}]
)
def test_answers_are_correct(knobs):
    task = ArithmeticTask(**knobs)
    for row in task.generate("train", 200, seed=0) + task.generate("eval", 50, seed=0):
        operands = re.findall(r"\d+", row["prompt"])
        assert len(operands) == task.operands
        assert all(int(x) < 10**task.digits for x in operands)
        assert int(row["answer"]) == _evaluate(row["prompt"])
        assert row["answer"] == str(int(row["answer"]))  # canonical form: no leading zeros, no "+"


def test_ops_given_as_a_list_are_stored_as_a_tuple():
    assert ArithmeticTask(ops=["+", "-"]).ops == ("+", "-")


def test_subtraction_produces_negative_answers():
    rows = ArithmeticTask(ops=("-",)).generate("train", 100, seed=0)
    assert any(r["answer"].startswith("-") for r in rows)


def test_too_many_rows_is_an_error():
    with pytest.raises(ValueError, match="distinct 'eval' prompts"):
        ArithmeticTask(digits=1).generate("eval", 50, seed=0)  # only 100 one-digit sums exist


@pytest.mark.parametrize(
    "knobs", [{"digits": 0}, {"operands": 1}, {"ops": ("*",)}, {"ops": ()}, {"eval_fraction": 1.0}]
)
def test_invalid_knobs_are_rejected(knobs):
    with pytest.raises(ValueError):
        ArithmeticTask(**knobs)


def test_correct_answer_cases():
    completions = ["85", " 85\n", "86", "", "085", "85 ", "eighty-five", "85.0", "8 5", "-85", None]
    rewards = correct_answer(["37+48="] * len(completions), completions, answer=["85"] * len(completions))
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_correct_answer_accepts_trl_call_style():
    """TRL passes everything by keyword, including columns the reward does not use."""
    rewards = correct_answer(
        prompts=["1+1=", "2+2="], completions=["2", "5"], completion_ids=[[6], [9]], answer=["2", "4"],
        trainer_state=None,
    )
    assert rewards == [1.0, 0.0]


def test_task_reward_is_the_verifier():
    assert ArithmeticTask().reward_fns == [correct_answer]


def test_integer_format():
    assert integer_format(None, ["12", " -3 ", "1a", "", "+4"]) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_doctests():
    result = doctest.testmod(arithmetic)
    assert result.attempted >= 2 and result.failed == 0
