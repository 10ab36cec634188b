"""Countdown: combine the given numbers, each exactly once, with + - * / and parentheses to reach a target.

Prompts look like ``"Numbers: 3 7 25 50. Target: 75. Use each number once with + - * / ( ).\\nAnswer:"``; a
completion is correct when its answer (the text inside the last ``<answer>…</answer>``, else its last
non-empty line) is an arithmetic expression that uses exactly the given numbers and evaluates, in exact
rational arithmetic, to the target. Expressions are parsed by a small recursive-descent parser, never by
Python's ``eval``. Every generated problem is solvable: the target is built from a random expression over
the numbers, kept as the ``solution`` column.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

from grouprl.data.tasks.chat import chat_prompt, check_difficulty, check_eval_fraction
from grouprl.data.tasks.sampling import distinct_rows, split_of
from grouprl.errors import ConfigError
from grouprl.rewards.countdown import ExpressionError, countdown_reward, evaluate


def draw_problem(rng: random.Random, count: int, max_number: int) -> tuple[list[int], int, str] | None:
    """``(numbers, target, solution)``: ``count`` numbers in ``[1, max_number]`` and the positive integer
    value of a random expression over them; None when that value is not one."""
    numbers = [rng.randint(1, max_number) for _ in range(count)]
    order = numbers[:]
    rng.shuffle(order)
    text = str(order[0])
    for n in order[1:]:
        op = rng.choice("+-*/")
        text = f"({text}{op}{n})" if op in "+-" else f"{text}{op}{n}"
    try:
        value, _ = evaluate(text)
    except ExpressionError:
        return None
    if value.denominator != 1 or value <= 0:
        return None
    return numbers, value.numerator, text


@dataclass(frozen=True)
class CountdownTask:
    """Generator of countdown problems over ``count`` numbers in ``[1, max_number]``."""

    name: ClassVar[str] = "countdown"

    count: int = 4
    """How many numbers each problem gives (3 to 6)."""
    max_number: int = 50
    """Numbers are drawn from [1, max_number]."""
    eval_fraction: float = 0.1
    """Share of problems (by a stable hash of the prompt) held out for the eval split."""

    def __post_init__(self) -> None:
        if not 3 <= self.count <= 6 or self.max_number < 2:
            raise ConfigError(f"count={self.count}, max_number={self.max_number}: need 3 <= count <= 6 and "
                             "max_number >= 2")

    @property
    def reward_fns(self) -> list:
        return [countdown_reward]

    def _draw(self, rng: random.Random) -> dict[str, Any] | None:
        problem = draw_problem(rng, self.count, self.max_number)
        if problem is None:
            return None
        numbers, target, solution = problem
        prompt = (f"Numbers: {' '.join(map(str, numbers))}. Target: {target}. "
                  "Use each number once with + - * / ( ).\nAnswer:")
        return {"prompt": prompt, "numbers": numbers, "target": target, "solution": solution}

    def split_of(self, prompt: str) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction, tries_per_row=100)


class Level(NamedTuple):
    count: int  # numbers given
    max_number: int  # each in [1, max_number]
    max_target: int  # targets are in [1, max_target]


LEVELS = {1: Level(2, 50, 100), 2: Level(3, 50, 100), 3: Level(4, 50, 100), 4: Level(4, 100, 1000),
          5: Level(5, 100, 1000), 6: Level(6, 100, 1000)}
"""The chat form's difficulty levels; the count and the size of the numbers and targets never decrease."""

def _bounded_problem(rng: random.Random, level: Level) -> tuple[list[int], int, str] | None:
    """Like ``draw_problem``, but each operation is drawn among those that keep the running value an integer
    in ``[1, max_target]``, so that most draws are kept even with six numbers; None when none does."""
    numbers = [rng.randint(1, level.max_number) for _ in range(level.count)]
    order = numbers[:]
    rng.shuffle(order)
    value, text = Fraction(order[0]), str(order[0])
    for n in order[1:]:
        results = {"+": value + n, "-": value - n, "*": value * n, "/": value / n}
        ops = [op for op, r in results.items() if r.denominator == 1 and 1 <= r <= level.max_target]
        if not ops:
            return None
        op = rng.choice(ops)
        value = results[op]
        text = f"({text}{op}{n})" if op in "+-" else f"{text}{op}{n}"  # left to right, like draw_problem
    return numbers, value.numerator, text


CHAT_SYSTEM_PROMPT = ("Combine all the given numbers, each exactly once, with + - * / and parentheses so "
                      "that the result equals the target. Think briefly, then write only the expression "
                      "between <answer> and </answer>, for example <answer>(3+5)*2</answer>.")


@dataclass(frozen=True)
class ChatCountdownTask:
    """Countdown in chat form for instruct models, the expression in <answer> tags; difficulty 1 to 6."""

    name: ClassVar[str] = "chat_countdown"

    difficulty: int = 2
    """The level (1 to 6): how many numbers (2 to 6), how large (up to 50 or 100) and the targets' bound."""
    eval_fraction: float = 0.1
    """Share of problems (by a stable hash of the question) held out for the eval split."""

    def __post_init__(self) -> None:
        check_difficulty(self.name, self.difficulty, len(LEVELS))
        check_eval_fraction(self.name, self.eval_fraction)

    @property
    def level(self) -> Level:
        return LEVELS[self.difficulty]

    @property
    def reward_fns(self) -> list:
        return [countdown_reward]

    def _draw(self, rng: random.Random) -> dict[str, Any] | None:
        problem = _bounded_problem(rng, self.level)
        if problem is None:
            return None
        numbers, target, solution = problem
        question = f"Numbers: {' '.join(map(str, numbers))}. Target: {target}."
        return {"prompt": chat_prompt(CHAT_SYSTEM_PROMPT, question), "answer": solution, "numbers": numbers,
                "target": target, "difficulty": self.difficulty}

    def split_of(self, prompt) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction, tries_per_row=100)
