"""The built-in environments: a calculator with four tools, a guessing game with feedback and no tools, and
a Python interpreter over the code sandbox. Each comes with a generator of its prompt rows (used when no
``data.path`` is given) and the rewards it is scored by when ``rewards`` is empty."""

from __future__ import annotations

import random
import re


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


class Calculator:
    """Arithmetic word problems, with tools that add, subtract, multiply and divide. Scored by
    ``correct_answer``: the last message must be the number."""

    def reset(self, **row) -> None:
        return None  # the row's prompt is the problem

    def add(self, a: float, b: float) -> str:
        """Add two numbers.

        Args:
            a: the first number
            b: the second number
        """
        return _number(a + b)

    def sub(self, a: float, b: float) -> str:
        """Subtract b from a.

        Args:
            a: the number to subtract from
            b: the number to subtract
        """
        return _number(a - b)

    def mul(self, a: float, b: float) -> str:
        """Multiply two numbers.

        Args:
            a: the first factor
            b: the second factor
        """
        return _number(a * b)

    def div(self, a: float, b: float) -> str:
        """Divide a by b.

        Args:
            a: the dividend
            b: the divisor, not zero
        """
        if b == 0:
            raise ZeroDivisionError("division by zero")
        return _number(a / b)


_PROBLEMS = [  # (text, answer); short enough for the embedded model's 64-token context
    ("Ann has {a} pens, buys {b}. Pens?", lambda a, b: a + b),
    ("Bo has {a} cards, loses {b}. Cards?", lambda a, b: a - b),
    ("{a} bags of {b} nuts. Nuts?", lambda a, b: a * b),
]


def calculator_rows(split: str, n: int, seed: int) -> list[dict]:
    """``n`` word problems with integer answers; the splits are drawn from different streams."""
    rng = random.Random(f"calculator-{split}-{seed}")
    rows = []
    for _ in range(n):
        kind = rng.randrange(len(_PROBLEMS) + 1)
        if kind == len(_PROBLEMS):  # division with an exact quotient
            b, q = rng.randint(2, 9), rng.randint(2, 12)
            rows.append({"prompt": f"{b * q} nuts, {b} kids. Each?", "answer": str(q)})
            continue
        text, answer = _PROBLEMS[kind]
        a, b = rng.randint(10, 60), rng.randint(2, 9)
        rows.append({"prompt": text.format(a=a, b=b), "answer": str(answer(a, b))})
    return rows


CALCULATOR_SETTINGS = {
    "model.name_or_path": "default-calculator",
    "rollout.max_new_tokens": 112,
    "rollout.max_turns": 2,
    "train.steps": 40,
    "train.prompts_per_step": 16,
    "train.lr": 2e-4,
    "data.num_eval": 256,
    "eval.every": 0,
    "eval.batch_size": 64,
}
"""What ``environment=calculator`` trains with on its embedded player (``assets/default-calculator``): a call
and an answer fit in 2 turns and 112 tokens; the rest is the run of benchmarks/multiturn.py. Each applies
where the config does not set the key, and none when ``model.name_or_path`` names another model."""


class GuessNumber:
    """Guess a secret number; after each wrong guess the environment says ``higher`` or ``lower``. No tools:
    the model's answer goes to ``respond``. ``get_reward`` is 1.0 when it found the number within the turn
    limit (``rollout.max_turns``), else 0.0."""

    def reset(self, target, **row) -> None:
        self.target, self.found, self.guesses = int(target), False, 0
        return None

    def respond(self, message: str) -> str | None:
        numbers = re.findall(r"-?\d+", message)
        if not numbers:
            return "say a number"
        self.guesses += 1
        guess = int(numbers[-1])
        if guess == self.target:
            self.found = True
            return None  # the episode ends
        return "higher" if guess < self.target else "lower"

    def get_reward(self) -> float:
        return float(self.found)


def guess_rows(split: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(f"guess-{split}-{seed}")
    return [{"prompt": "Guess my number, 1 to 20:", "target": rng.randint(1, 20)} for _ in range(n)]


class PythonTool:
    """A Python interpreter as a tool, over the sandbox of the code rewards (``rewards/code.py``): each call
    runs in a fresh isolated interpreter. The prompts and scoring come from the data (e.g. the ``code``
    task's rows and rewards)."""

    def reset(self, **row) -> None:
        return None

    def run(self, code: str) -> str:
        """Run a Python script and return what it printed.

        Args:
            code: the script's source
        """
        from grouprl.rewards.code import run_sandboxed

        result = run_sandboxed(code, timeout=5.0)
        if result.timed_out:
            return "timed out after 5 s"
        return result.stdout + (result.stderr[-500:] if not result.ok else "")
