"""Countdown: solvable problems, a verifier that parses (never evals) and insists on each number once."""

import pytest

from grouprl.data.tasks import get_task
from grouprl.rewards.countdown import ExpressionError, countdown_reward, evaluate


def test_generated_problems_are_solvable_and_splits_disjoint():
    task = get_task("countdown")
    train, evals = task.generate("train", 200, 0), task.generate("eval", 20, 0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    rewards = countdown_reward(None, [r["solution"] for r in train], numbers=[r["numbers"] for r in train],
                               target=[r["target"] for r in train])
    assert rewards == [1.0] * 200
    assert task.generate("train", 5, 0) == train[:5]


@pytest.mark.parametrize("completion,expected", [
    ("(50+25)*(7-3)/4", 1.0),
    ("<think>try</think><answer>(7-3)*(50+25)/4</answer>", 1.0),
    ("(50+25)*(7-3)/4 = 75", 1.0),
    ("50+25", 0.0),  # does not use every number
    ("(50+25)*(7-3)/4+0", 0.0),  # an extra number
    ("(50+25)*(7-3)/4*4/4", 0.0),  # 4 used three times
    ("(50+25)*(7-3)/(4", 0.0),
    ("", 0.0),
    ("__import__('os').system('true')", 0.0),
    ("1" * 500, 0.0),
    ("(50+25)*(7-3)/(4-4)", 0.0),
])
def test_verifier(completion, expected):
    assert countdown_reward([""], [completion], numbers=[[50, 25, 7, 3, 4]], target=[75]) == [expected]


def test_parser_is_exact_and_strict():
    assert evaluate("1/3+1/3+1/3")[0] == 1
    for bad in ("2**3", "a+1", "1+", "()", "3 4"):
        with pytest.raises(ExpressionError):
            evaluate(bad)
