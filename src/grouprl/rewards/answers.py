"""Math answer rewards: extract the final answer of a completion and compare it with the reference.

``extract_answer`` takes the *last* final-answer marker, the way MATH and GSM8K solutions are graded (a
model may box intermediate results, and the last one is what it committed to). Equivalence is decided in two
steps:

1. If both answers are plain decimal numbers (optional sign, ``1,000``-style thousands separators, optional
   leading ``$``/``\\$`` and trailing ``.``), they are compared as floats with a relative tolerance of 1e-6.
   This is fast and settles the common GSM8K case. It is slightly looser than math-verify, which rounds to six
   decimals: ``10`` and ``10.0000001`` are equal here and not there.
2. Otherwise both are wrapped in ``\\boxed{}`` and handed to math-verify (``parse`` then ``verify``), which
   handles LaTeX, fractions, roots, symbolic expressions, sets and intervals. Percentages are left to
   math-verify, which accepts ``50\\%`` as both ``50`` and ``0.5``.

Timeouts: math-verify guards every parse and comparison with ``signal.alarm``, which raises outside the main
thread. We call it with its guard off (``parsing_timeout=None``, ``timeout_seconds=None``) and put our own
per-sample ``signal.setitimer`` guard around it only when that is safe: in the main thread and with no other
timer running. grouprl calls rewards in the main thread of a worker process, so there a pathological answer
such as ``9^{9^{9^{9}}}`` costs one sample (0.0) rather than the whole call; elsewhere the caller's wall-clock
timeout (``reward_timeout``) is the only limit. Any exception for a sample scores that sample 0.0.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

from grouprl.alarm import deadline
from grouprl.messages import completion_text
from grouprl.rewards.extract import last_boxed

MAX_ANSWER_CHARS = 1000
"""Longer extracted answers score 0.0 without being parsed: no real answer is that long, and sympy's cost on
adversarial LaTeX grows quickly with length."""

SAMPLE_TIMEOUT = 5.0
"""Seconds allowed for math-verify on one sample when the in-process guard can be used (math-verify's own
default is 5 s)."""

_GSM8K = re.compile(r"####")
_ANSWER = re.compile(r"\banswer\b\**\s*(?:is\b\s*:?|:)\s*\**", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")


def _clean(answer: str) -> str:
    """Strip whitespace, a sentence-final period and one pair of ``$...$`` / ``\\(...\\)`` delimiters."""
    answer = answer.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            answer = answer[len(left):-len(right)].strip()
            break
    return answer.rstrip(".").strip()


def extract_answer(text) -> str | None:
    """The final answer of a completion, or None.

    In order of preference: the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (braces
    balanced; an unterminated one is ignored), else what follows the last ``####`` (GSM8K), else what follows
    the last ``Answer:`` / ``answer is``, up to the end of its line. ``$...$`` and a final period are removed.

    >>> extract_answer(r"so \\boxed{3} and finally \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("48/2 = 24\\n#### 24")
    '24'
    >>> extract_answer("The answer is $-7$.")
    '-7'
    >>> extract_answer(r"\\boxed{5") is None
    True
    """
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_GSM8K, _ANSWER):
        last = None
        for last in pattern.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is not None and (answer := _clean(text[last.end():].split("\n", 1)[0])):
            return answer
    return None


def _as_number(text: str) -> float | None:
    """A plain decimal number (``-1,000.5``, ``$12``, ``3.``) as float; anything else None."""
    text = text.strip().removeprefix("\\$").removeprefix("$").strip().rstrip(".")
    if not _NUMBER.fullmatch(text):
        return None
    return float(text.replace(",", ""))


class _SampleTimeout(BaseException):
    """A BaseException, like math-verify's own TimeoutException, so its ``except Exception`` cannot swallow
    it."""




_NOTICES = ("Timeout is disabled as", "equations=True in NormalizationConfig is deprecated")
"""What math-verify and latex2sympy log that does not apply here: that math-verify's timeouts are off
(``grouprl.alarm.deadline`` is ours), and, on every normalisation, that ``equations=True`` is deprecated
(open-r1 sets it; it still applies)."""


def _not_a_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_NOTICES)


def quiet_math_verify() -> None:
    """Drop ``_NOTICES`` from math-verify's and latex2sympy's logs (idempotent)."""
    for name in ("math_verify.parser", "math_verify.grader", "latex2sympy2_extended.math_normalization"):
        logging.getLogger(name).addFilter(_not_a_notice)


def _math_verify(prediction: str, reference: str) -> bool:
    """math-verify's verdict on two bare answers, with its signal-based timeouts off (see module
    docstring)."""
    from math_verify import parse, verify  # imported lazily: it pulls in sympy and its LaTeX parser

    quiet_math_verify()

    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def is_equivalent(prediction: str, reference: str, *, rel_tol: float = 1e-6,
                  timeout: float = SAMPLE_TIMEOUT) -> bool:
    """Whether two bare answers are mathematically equal: numbers by tolerance, the rest by math-verify.

    >>> is_equivalent("1,000", "1000"), is_equivalent(r"\\frac{1}{2}", "0.5"), is_equivalent("-3", "3")
    (True, True, False)
    """
    if len(prediction) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
        return False
    a, b = _as_number(prediction), _as_number(reference)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=rel_tol)
    try:
        with deadline(timeout, _SampleTimeout):
            return _math_verify(prediction, reference)
    except (Exception, _SampleTimeout):  # noqa: BLE001 - parser errors and timeouts alike score 0.0
        return False


def _reference(answer) -> str:
    """A reference column value as a bare answer: a full solution (``... #### 72``) is reduced to 72."""
    text = str(answer)
    return extract_answer(text) or text.strip()


def math_answer(prompts, completions, completion_ids=None, *, answer, **columns) -> list[float]:
    """Reward 1.0 when the completion's final answer (see ``extract_answer``) equals ``answer``, else 0.0.

    Equality is mathematical (``is_equivalent``): ``\\frac{1}{2}`` matches ``0.5``, ``(x+1)^2`` matches
    ``x^2+2x+1``. No extractable answer, a completion that is neither text nor a message list, or
    any error scores 0.0.

    >>> math_answer([""] * 4, [r"\\boxed{\\frac{1}{2}}", "#### 1,000", "Answer: 2", "no idea"],
    ...             answer=["0.5", "1000", "3", "1"])
    [1.0, 1.0, 0.0, 0.0]
    """
    out = []
    for completion, reference in zip(completions, answer, strict=True):
        try:
            prediction = extract_answer(completion_text(completion))
            out.append(float(prediction is not None and is_equivalent(prediction, _reference(reference))))
        except Exception:  # noqa: BLE001 - one bad sample must not fail the batch
            out.append(0.0)
    return out


def numeric_match(prompts, completions, completion_ids=None, *, answer, rel_tol: float = 1e-6,
                  **columns) -> list[float]:
    """Reward 1.0 when the final answer and ``answer`` are plain numbers within ``rel_tol``, else 0.0.

    For GSM8K-style integer answers; no symbolic parsing, so ``\\frac{1}{2}`` does not match ``0.5``.

    >>> numeric_match([""] * 3, ["#### 1,000", "Answer: 72.0", r"\\boxed{\\frac{1}{2}}"],
    ...               answer=[1000, "72", "0.5"])
    [1.0, 1.0, 0.0]
    """
    out = []
    for completion, reference in zip(completions, answer, strict=True):
        try:
            prediction = extract_answer(completion_text(completion))
            a = _as_number(prediction) if prediction is not None else None
            b = _as_number(_reference(reference))
            out.append(float(a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol)))
        except Exception:  # noqa: BLE001 - one bad sample must not fail the batch
            out.append(0.0)
    return out


def exact_match(prompts, completions, completion_ids=None, *, answer, **columns) -> list[float]:
    """Reward 1.0 when the final answer is exactly the string ``answer`` (surrounding whitespace aside).

    >>> exact_match([""] * 3, [r"\\boxed{x+1}", r"\\boxed{1+x}", "none"], answer=["x+1"] * 3)
    [1.0, 0.0, 0.0]
    """
    out = []
    for completion, reference in zip(completions, answer, strict=True):
        prediction = extract_answer(completion_text(completion))
        out.append(float(prediction is not None and prediction.strip() == str(reference).strip()))
    return out


REWARDS: dict[str, Callable] = {
    "math_answer": math_answer,
    "numeric_match": numeric_match,
    "exact_match": exact_match,
}
