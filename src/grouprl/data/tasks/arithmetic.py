"""Integer arithmetic: prompts like ``"37+48="`` whose answer is the exact result, ``"85"``.

The task is the embedded default: small enough for a char-level model with under a million parameters to learn
on two CPU cores, yet with a carry structure that an under-trained model gets only partly right, which leaves
room for RL to turn sampled successes into greedy ones.

Operands are drawn uniformly from ``[0, 10**digits)``; ``+`` and ``-`` have equal precedence and are evaluated
left to right, so answers may be negative (``"3-15="`` → ``"-12"``). The train / eval split is a fixed
partition of the prompt space by a stable hash of the prompt text: it does not depend on the seed, so the two
splits are disjoint for every pair of seeds. (Only the exact prompt is held out: ``"48+37="`` may be in train
while ``"37+48="`` is in eval.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from grouprl.data.tasks.sampling import distinct_rows, split_of
from grouprl.errors import ConfigError
from grouprl.rewards.arithmetic import correct_answer

_OPS = ("+", "-")


@dataclass(frozen=True)
class ArithmeticTask:
    """Generator of ``a op b [op c ...] =`` prompts; see the module docstring for the rules."""

    name: ClassVar[str] = "arithmetic"

    digits: int = 2
    """Maximum digits per operand: each operand is uniform in ``[0, 10**digits)``. Carries make the work."""
    operands: int = 2
    """Number of operands per prompt (2 or more)."""
    ops: tuple[str, ...] = ("+",)
    """Operators to draw from, a subset of ``("+", "-")``; ``-`` brings negative answers. A list (from YAML or
    JSON) is stored as a tuple."""
    eval_fraction: float = 0.1
    """Share of the prompt space held out for the ``eval`` split."""

    def __post_init__(self) -> None:
        # frozen dataclass: the one sanctioned way to normalise
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.digits < 1 or self.operands < 2:
            raise ConfigError(
                f"digits={self.digits}, operands={self.operands}: need digits >= 1 and operands >= 2 "
                "so that every prompt is a real operation; raise the value that is too small."
            )
        if not self.ops or not set(self.ops) <= set(_OPS):
            raise ConfigError(f"ops={self.ops!r}: give a non-empty subset of {_OPS}, "
                              "the operators the task knows.")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(
                f"eval_fraction={self.eval_fraction}: must be strictly between 0 and 1 so both splits have "
                "prompts; 0.1 is a good default."
            )

    @property
    def reward_fns(self) -> list:
        """The RL reward: exact correctness of the answer."""
        return [correct_answer]

    def no_carry_answer(self, prompt: str) -> str:
        """A plausible wrong answer: column-wise addition that drops every carry (``"37+48="`` → ``"75"``).

        It equals the right answer exactly when no column carries. The embedded default is taught from
        demonstrations mixing both procedures, so RL has a behaviour to choose (see assets/default/README.md).

        >>> ArithmeticTask().no_carry_answer("37+48=")
        '75'
        """
        if set(self.ops) != {"+"}:
            raise ValueError("no_carry_answer is defined for addition only (ops=('+',))")
        terms = [term[::-1] for term in prompt.rstrip("=").split("+")]
        width = max(len(t) for t in terms)
        columns = [sum(int(t[i]) for t in terms if i < len(t)) % 10 for i in range(width)]
        return str(int("".join(map(str, reversed(columns)))))

    def split_of(self, prompt: str) -> str:
        """The split (``"train"`` or ``"eval"``) that ``prompt`` belongs to, from a stable hash of its
        text."""
        return split_of(prompt, self.eval_fraction)

    def generate(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct rows ``{"prompt", "answer"}`` of ``split``, deterministic in ``seed``.

        Raises ``ValueError`` when the split holds too few distinct prompts for ``n``.
        """
        space = (10**self.digits) ** self.operands * len(self.ops) ** (self.operands - 1)
        if n > space:
            raise ConfigError(f"asked for {n} distinct {split!r} prompts, but this task has only {space} "
                              "prompts in all; ask for fewer rows or raise digits / operands.")
        return distinct_rows(self._draw, task=self.name, split=split, n=n, seed=seed,
                             eval_fraction=self.eval_fraction)

    def _draw(self, rng: random.Random) -> dict[str, Any]:
        """One random problem as a row."""
        values = [rng.randrange(10**self.digits) for _ in range(self.operands)]
        ops = [rng.choice(self.ops) for _ in range(self.operands - 1)]
        result = values[0]
        prompt = str(values[0])
        for op, value in zip(ops, values[1:]):
            result = result + value if op == "+" else result - value
            prompt += f"{op}{value}"
        return {"prompt": prompt + "=", "answer": str(result)}
