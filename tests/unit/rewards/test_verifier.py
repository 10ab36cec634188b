"""The ``verifier`` key: which reward defines ``accuracy`` and what evaluation accepts."""

import pytest

from grouprl.rewards import Reward, RewardError, RewardRunner, verifier_name


def length(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


def exact(prompts, completions, *, answer, **kw):
    return [float(c == a) for c, a in zip(completions, answer)]


REWARDS = [Reward("length", length), Reward("exact", exact)]


def test_default_is_the_first_reward():
    assert verifier_name(REWARDS, None) == "length"


def test_a_named_verifier_is_scored_alone_when_asked():
    runner = RewardRunner(REWARDS, isolate=False, verifier="exact")
    scores = runner.score(["p"] * 2, ["4", "55"], None, {"answer": ["4", "4"]}, verifier_only=True)
    assert runner.verifier == "exact" and list(scores.parts) == ["exact"]
    assert scores.parts["exact"].tolist() == [1.0, 0.0]


def test_an_unknown_verifier_names_the_rewards():
    with pytest.raises(RewardError,
                       match="verifier: no reward is named 'exactt'; the rewards are length, exact"):
        verifier_name(REWARDS, "exactt")
