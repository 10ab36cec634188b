"""Arithmetic in chat form: ``What is 37 + 48 * 6?`` asked of an instruct model, with a stated answer format.

Unlike the ``arithmetic`` task (raw ``37+48=`` for the embedded character-level model), the prompt is a chat
conversation whose system message asks for reasoning and an answer in ``\\boxed{}`` (or ``<answer>`` tags, or
a closing "The answer is N."; the ``answer_format`` knob), and the verifier is the matching function of
``grouprl.rewards.numeric``. Multiplication binds tighter than ``+`` and ``-``, as usual; answers may be
negative. ``difficulty`` (1 to 6) sets the operand digits, the number of operands and the operators
(``LEVELS``); the ``operands`` and ``operators`` columns hold the expression.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from grouprl.data.tasks.chat import (
    chat_prompt,
    check_answer_format,
    check_difficulty,
    check_eval_fraction,
    system_prompt,
)
from grouprl.data.tasks.sampling import distinct_rows, split_of
from grouprl.rewards.numeric import VERIFIERS


class Level(NamedTuple):
    digits: int  # each operand is in [0, 10**digits)
    operands: int
    ops: tuple[str, ...]


LEVELS = {
    1: Level(2, 2, ("+",)),
    2: Level(2, 2, ("+", "-")),
    3: Level(2, 3, ("+", "-")),
    4: Level(3, 3, ("+", "-")),
    5: Level(3, 3, ("+", "-", "*")),
    6: Level(3, 4, ("+", "-", "*")),
}
"""The difficulty levels; digits, operands and operators never decrease from one level to the next."""


def value_of(operands: list[int], operators: list[str]) -> int:
    """The expression's value, ``*`` before ``+`` and ``-``.

    >>> value_of([2, 3, 4], ["+", "*"]), value_of([10, 4, 3], ["-", "-"])
    (14, 3)
    """
    terms, signs = [operands[0]], []
    for op, x in zip(operators, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(op)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


@dataclass(frozen=True)
class ChatArithmeticTask:
    """Integer arithmetic as a chat question for instruct models; difficulty 1 to 6."""

    name: ClassVar[str] = "chat_arithmetic"

    difficulty: int = 3
    """The level (1 to 6): operand digits, operand count and operators grow with it (``LEVELS``)."""
    answer_format: str = "boxed"
    """How the system prompt asks for the answer, and so the verifier: boxed, answer_tag or last_number."""
    eval_fraction: float = 0.1
    """Share of problems (by a stable hash of the question) held out for the eval split."""

    def __post_init__(self) -> None:
        check_difficulty(self.name, self.difficulty, len(LEVELS))
        check_answer_format(self.name, self.answer_format)
        check_eval_fraction(self.name, self.eval_fraction)

    @property
    def level(self) -> Level:
        return LEVELS[self.difficulty]

    @property
    def reward_fns(self) -> list:
        return [VERIFIERS[self.answer_format]]

    def _draw(self, rng: random.Random) -> dict[str, Any]:
        level = self.level
        operands = [rng.randrange(10**level.digits) for _ in range(level.operands)]
        operators = [rng.choice(level.ops) for _ in range(level.operands - 1)]
        text = " ".join([str(operands[0]), *(f"{op} {x}" for op, x in zip(operators, operands[1:]))])
        return {"prompt": chat_prompt(system_prompt(self.answer_format), f"What is {text}?"),
                "answer": str(value_of(operands, operators)), "difficulty": self.difficulty,
                "operands": operands, "operators": operators}

    def split_of(self, prompt) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction)
