"""The countdown task's verifier: an arithmetic expression over the given numbers, each used exactly once,
that reaches the target.

Expressions are parsed by a small recursive-descent parser in exact rational arithmetic, never by Python's
``eval``.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from grouprl.messages import completion_text
from grouprl.rewards.extract import last_tagged

_TOKEN = re.compile(r"\s*(?:(\d+)|(\S))")
MAX_EXPRESSION_CHARS = 200  # longer "expressions" are rejected before parsing


class ExpressionError(ValueError):
    """Not a well-formed expression over integers with + - * / and parentheses."""


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        number, symbol = match.groups()
        if symbol is not None and symbol not in "+-*/()":
            raise ExpressionError(f"unexpected character {symbol!r}")
        out.append(number if number is not None else symbol)
        pos = match.end()
    return out


def evaluate(text: str) -> tuple[Fraction, list[int]]:
    """The exact value of ``text`` and the integers it uses, in order.

    >>> evaluate("(50 + 25) * (7 - 3) / 4")
    (Fraction(75, 1), [50, 25, 7, 3, 4])
    """
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError("expression too long")
    tokens, used = _tokens(text), []
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom() -> Fraction:
        token = peek()
        if token is None:
            raise ExpressionError("unexpected end")
        if token == "(":
            take()
            value = expr()
            if peek() != ")":
                raise ExpressionError("missing ')'")
            take()
            return value
        if token.isdigit():
            take()
            used.append(int(token))
            return Fraction(int(token))
        raise ExpressionError(f"unexpected {token!r}")

    def term() -> Fraction:
        value = atom()
        while peek() in ("*", "/"):
            op, right = take(), atom()
            if op == "/" and right == 0:
                raise ExpressionError("division by zero")
            value = value * right if op == "*" else value / right
        return value

    def expr() -> Fraction:
        value = term()
        while peek() in ("+", "-"):
            op, right = take(), term()
            value = value + right if op == "+" else value - right
        return value

    value = expr()
    if pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[pos]!r}")
    return value, used


def answer_text(completion: str) -> str:
    """The last ``<answer>…</answer>`` span, else the last non-empty line."""
    tagged = last_tagged(completion)
    if tagged is not None:
        return tagged
    lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
    return lines[-1].split("=")[0] if lines else ""


def countdown_reward(prompts, completions, completion_ids=None, *, numbers, target, **columns) -> list[float]:
    """1.0 when the answer uses each given number exactly once and equals the target, else 0.0.

    >>> countdown_reward([""] * 3, ["(50+25)*(7-3)/4", "<answer>50+25</answer>", "__import__('os')"],
    ...                  numbers=[[50, 25, 7, 3, 4]] * 3, target=[75] * 3)
    [1.0, 0.0, 0.0]
    """
    out = []
    for completion, given, goal in zip(completions, numbers, target, strict=True):
        try:
            value, used = evaluate(answer_text(completion_text(completion) or ""))
        except ExpressionError:
            out.append(0.0)
            continue
        out.append(float(Counter(used) == Counter(given) and value == goal))
    return out
