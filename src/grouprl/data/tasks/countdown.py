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
from typing import Any, ClassVar

from grouprl.data.tasks.sampling import distinct_rows, split_of
from grouprl.errors import ConfigError
from grouprl.rewards.countdown import ExpressionError, countdown_reward, evaluate


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
        numbers = [rng.randint(1, self.max_number) for _ in range(self.count)]
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
        prompt = (f"Numbers: {' '.join(map(str, numbers))}. Target: {value.numerator}. "
                  "Use each number once with + - * / ( ).\nAnswer:")
        return {"prompt": prompt, "numbers": numbers, "target": value.numerator, "solution": text}

    def split_of(self, prompt: str) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction, tries_per_row=100)
