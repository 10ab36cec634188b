"""Word problems: GSM8K-like stories of several steps about one person's collection, with integer answers.

A problem starts with a count (``Maya has 12 shells.``), changes it in ``steps`` sentences and asks for the
final count. The changes are adding or taking away an amount, adding or taking away a number of equal groups
(``She buys 3 bags with 5 shells in each.``), doubling or tripling, and keeping one of ``k`` equal shares;
every intermediate count is a positive integer within the level's bound, and every division is exact. From
level 4 on, sentences with numbers that do not matter are mixed in, as GSM8K does now and then.

``difficulty`` (1 to 6) sets the number of steps, the operations allowed, how large the numbers get and the
distracting sentences (``LEVELS``). The ``steps`` column holds the operations as ``[op, *numbers]`` lists
(``["add_groups", 3, 5]``) and ``start`` the first count, so the answer can be recomputed (``apply``); the
``solution`` column is the worked chain of equations. The system prompt states the answer format (the
``answer_format`` knob: ``boxed``, ``answer_tag`` or ``last_number``), and the verifier is the matching
function of ``grouprl.rewards.numeric``.
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
    steps: int  # sentences that change the count
    start_max: int  # the first count is in [3, start_max]
    operand_max: int  # amounts added or taken away are at most this
    value_max: int  # every intermediate count stays at most this
    ops: tuple[str, ...]  # the operations drawn from
    distractors: int  # sentences with numbers that do not matter


_PLUS_MINUS = ("add", "sub")
_GROUPS = (*_PLUS_MINUS, "add_groups", "sub_groups")
_ALL = (*_GROUPS, "mul", "div")

LEVELS = {
    1: Level(1, 10, 10, 30, _PLUS_MINUS, 0),
    2: Level(2, 20, 10, 60, _GROUPS, 0),
    3: Level(3, 30, 20, 150, _ALL, 0),
    4: Level(4, 50, 30, 400, _ALL, 1),
    5: Level(5, 100, 50, 1000, _ALL, 1),
    6: Level(7, 200, 100, 5000, _ALL, 2),
}
"""The difficulty levels; steps, numbers and distractors never decrease from one level to the next."""

_NAMES = [("Maya", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Zoe", "she"), ("Omar", "he"),
          ("Lena", "she"), ("Ravi", "he"), ("Ines", "she"), ("Kofi", "he"), ("Mei", "she"), ("Tomas", "he"),
          ("Sara", "she"), ("Jack", "he"), ("Nia", "she"), ("Ivan", "he")]
_FRIENDS = ["a cousin", "a neighbour", "a classmate", "a friend", "an aunt", "a teacher"]
_ITEMS = ["shells", "marbles", "stickers", "cookies", "pencils", "stamps", "cards", "books", "eggs", "beads",
          "apples", "coins"]
_GROUPS_OF = ["bags", "boxes", "packs", "jars", "baskets"]
_PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "him", "his")}  # subject, object, possessive
_THEN = ["", "Then ", "After that, ", "Later, ", "Next, "]


def apply(start: int, steps: list[list]) -> int:
    """The count after ``steps``, from ``start``: the reference the tests and the generator agree on.

    >>> apply(12, [["add_groups", 3, 5], ["sub", 7], ["div", 4]])
    5
    """
    value = start
    for op, *args in steps:
        if op == "add":
            value += args[0]
        elif op == "sub":
            value -= args[0]
        elif op == "add_groups":
            value += args[0] * args[1]
        elif op == "sub_groups":
            value -= args[0] * args[1]
        elif op == "mul":
            value *= args[0]
        elif op == "div":
            if value % args[0]:
                raise ValueError(f"{value} does not split into {args[0]} equal shares")
            value //= args[0]
        else:
            raise ValueError(f"unknown operation {op!r}")
    return value


def _step(rng: random.Random, level: Level, value: int) -> list | None:
    """One operation that keeps the count a positive integer within the level, or None."""
    op, a = rng.choice(level.ops), level.operand_max
    if op == "add":
        step = ["add", rng.randint(2, a)]
    elif op == "sub":
        step = ["sub", rng.randint(1, min(a, value - 1))] if value > 1 else None
    elif op in ("add_groups", "sub_groups"):
        step = [op, rng.randint(2, 6), rng.randint(2, min(12, a))]
    elif op == "mul":
        step = ["mul", rng.choice((2, 3))]
    else:
        shares = [k for k in range(2, 6) if value % k == 0 and value // k >= 2]
        step = ["div", rng.choice(shares)] if shares else None
    if step is None:
        return None
    after = apply(value, [step])
    return step if 1 <= after <= level.value_max else None


def _sentence(rng: random.Random, step: list, pronoun: str, items: str) -> str:
    he, him, his = _PRONOUNS[pronoun]
    op, *n = step
    if op == "add":
        text = rng.choice([f"{he} buys {n[0]} more {items}", f"{he} finds {n[0]} more {items}",
                           f"{rng.choice(_FRIENDS)} gives {him} {n[0]} {items}"])
    elif op == "sub":
        text = rng.choice([f"{he} gives {n[0]} {items} to {rng.choice(_FRIENDS)}",
                           f"{he} loses {n[0]} {items}", f"{he} sells {n[0]} of {his} {items}"])
    elif op == "add_groups":
        text = f"{he} buys {n[0]} {rng.choice(_GROUPS_OF)} with {n[1]} {items} in each"
    elif op == "sub_groups":
        text = f"{he} gives each of {n[0]} friends {n[1]} {items}"
    elif op == "mul":
        text = f"the number of {items} {he} has {'doubles' if n[0] == 2 else 'triples'}"
    else:
        text = f"{he} splits {his} {items} into {n[0]} equal groups and keeps only one group"
    then = rng.choice(_THEN)
    return f"{then}{text}." if then else f"{text[0].upper()}{text[1:]}."


def _distractor(rng: random.Random, name: str, items: str) -> str:
    other = rng.choice([i for i in _ITEMS if i != items])
    relative = rng.choice(["cousin", "neighbour", "friend"])
    return rng.choice([f"{name}'s {relative} has {rng.randint(2, 40)} {other}.",
                       f"{name} is {rng.randint(8, 15)} years old.",
                       f"A box of {other} costs {rng.randint(2, 20)} dollars at the shop."])


def _equation(value: int, step: list) -> str:
    """``"12 + 3 * 5 = 27"``: one line of the worked solution."""
    op, *n = step
    sign = {"add": "+", "sub": "-", "add_groups": "+", "sub_groups": "-", "mul": "*", "div": "/"}[op]
    return f"{value} {sign} {' * '.join(map(str, n))} = {apply(value, [step])}"


@dataclass(frozen=True)
class WordProblemsTask:
    """GSM8K-like multi-step stories with integer answers, in chat form; difficulty 1 to 6."""

    name: ClassVar[str] = "word_problems"

    difficulty: int = 2
    """The level (1 to 6): steps, operations, number sizes and distractors grow with it (``LEVELS``)."""
    answer_format: str = "boxed"
    """How the system prompt asks for the answer, and so the verifier: boxed, answer_tag or last_number."""
    eval_fraction: float = 0.1
    """Share of problems (by a stable hash of the story) held out for the eval split."""

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

    def _draw(self, rng: random.Random) -> dict[str, Any] | None:
        level = self.level
        name, pronoun = rng.choice(_NAMES)
        items = rng.choice(_ITEMS)
        start = rng.randint(3, level.start_max)
        value, steps, lines = start, [], []
        for _ in range(level.steps):
            step = next((s for s in (_step(rng, level, value) for _ in range(10)) if s is not None), None)
            if step is None:
                return None
            lines.append(_equation(value, step))
            steps.append(step)
            value = apply(value, [step])
        sentences = [_sentence(rng, step, pronoun, items) for step in steps]
        for _ in range(level.distractors):
            sentences.insert(rng.randint(0, len(sentences)), _distractor(rng, name, items))
        question = f"How many {items} does {name} have now?"
        story = " ".join([f"{name} has {start} {items}.", *sentences, question])
        return {"prompt": chat_prompt(system_prompt(self.answer_format), story), "answer": str(value),
                "difficulty": self.difficulty, "start": start, "steps": steps, "solution": "\n".join(lines)}

    def split_of(self, prompt) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction)
