"""Small function-writing problems checked by running hidden asserts in the sandbox (``code_tests``).

A prompt asks for ``def f(x): ...`` with a one-line specification; the ``tests`` column holds assert
statements computed from a reference implementation (kept as ``solution``). The reward is the fraction of
asserts the completion passes, run by ``grouprl.rewards.code`` in its sandbox, never in the trainer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from grouprl.data.tasks.sampling import distinct_rows, split_of
from grouprl.errors import ConfigError
from grouprl.rewards.code import code_tests_reward

# (specification template, reference implementation template, input sampler). {a} and {b} are drawn ints.
FAMILIES = [
    ("returns x multiplied by {a}, plus {b}", "return x * {a} + {b}", lambda r: r.randint(-50, 50)),
    ("returns the sum of the decimal digits of the non-negative integer x",
     "return sum(int(c) for c in str(x))", lambda r: r.randint(0, 10**6)),
    ("returns True if x is divisible by {a}, else False", "return x % {a} == 0", lambda r: r.randint(0, 500)),
    ("returns the string x repeated {a} times", "return x * {a}",
     lambda r: "".join(r.choice("abcxyz") for _ in range(r.randint(1, 4)))),
    ("returns the list x sorted in descending order", "return sorted(x, reverse=True)",
     lambda r: [r.randint(-9, 9) for _ in range(r.randint(0, 6))]),
    ("returns the number of vowels (a, e, i, o, u) in the string x", "return sum(c in 'aeiou' for c in x)",
     lambda r: "".join(r.choice("abcdeiou ") for _ in range(r.randint(0, 10)))),
    ("returns the largest element of the non-empty list x minus {a}", "return max(x) - {a}",
     lambda r: [r.randint(-99, 99) for _ in range(r.randint(1, 6))]),
]


@dataclass(frozen=True)
class CodeTask:
    """Generator of ``def f(x)`` problems with ``tests_per_problem`` hidden asserts each."""

    name: ClassVar[str] = "code"

    tests_per_problem: int = 4
    """Asserts per problem; the reward is the fraction passed."""
    eval_fraction: float = 0.1
    """Share of problems (by a stable hash of the prompt) held out for the eval split."""

    def __post_init__(self) -> None:
        if self.tests_per_problem < 1:
            raise ConfigError(f"tests_per_problem={self.tests_per_problem}: need at least one test")

    @property
    def reward_fns(self) -> list:
        return [code_tests_reward]

    def _draw(self, rng: random.Random) -> dict[str, Any]:
        spec, body, sample = rng.choice(FAMILIES)
        knobs = {"a": rng.randint(2, 9), "b": rng.randint(-9, 9)}
        solution = f"def f(x):\n    {body.format(**knobs)}\n"
        namespace: dict[str, Any] = {}
        exec(solution, namespace)  # noqa: S102 - our own reference code, never a completion
        inputs = [sample(rng) for _ in range(self.tests_per_problem)]
        tests = [f"assert f({x!r}) == {namespace['f'](x)!r}" for x in inputs]
        prompt = (f"Write a Python function f(x) that {spec.format(**knobs)}. "
                  "Answer with a ```python code block.\n")
        return {"prompt": prompt, "tests": tests, "solution": solution}

    def split_of(self, prompt: str) -> str:
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, deterministic in ``seed``."""
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction)
