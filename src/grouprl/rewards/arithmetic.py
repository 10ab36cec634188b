"""The arithmetic task's verifiers: exact correctness of an integer answer, and its format alone."""

from __future__ import annotations

import re

from grouprl.messages import completion_text

_INTEGER = re.compile(r"-?\d+")


def correct_answer(prompts, completions, completion_ids=None, *, answer, **columns) -> list[float]:
    """Reward 1.0 when a completion, stripped of surrounding whitespace, is exactly its answer, else 0.0.

    The verifier of the arithmetic task, following the TRL reward protocol. The EOS token is not part of a
    decoded completion. Anything else (empty text, extra characters, leading zeros, non-text) scores 0.0.

    >>> correct_answer(["2+2="] * 5, ["4", " 4\\n", "04", "", "4 apples"], answer=["4"] * 5)
    [1.0, 1.0, 0.0, 0.0, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    return [float(t is not None and t.strip() == str(a)) for t, a in zip(texts, answer, strict=True)]


def integer_format(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """Reward 1.0 when a completion, stripped of surrounding whitespace, is an integer, else 0.0.

    Checks the answer format only, not the value.

    >>> integer_format(["2+2="] * 4, ["5", "-12", "4 apples", ""])
    [1.0, 1.0, 0.0, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    return [float(t is not None and _INTEGER.fullmatch(t.strip()) is not None) for t in texts]
