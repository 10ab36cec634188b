"""Noisy demonstrations of the calculator environment, from which ``grouprl sft --environment calculator``
builds the embedded model that plays it (``assets/default-calculator``).

A demonstration is one episode as the model would play it: a tool call, the tool's result, then the result
as the answer. With probability ``wrong_rate`` it calls the *confused* tool of the problem's operation
(``CONFUSED``: adds where it should subtract, multiplies where it should divide, ...) and answers what that
tool returned, so a model trained on them knows both tools for each kind of problem and calls the wrong one
most of the time: RL with the verifier has a choice to correct.
"""

from __future__ import annotations

import json
import re

from grouprl.env.builtin import Calculator

_KINDS = (("buys", "add"), ("loses", "sub"), ("bags of", "mul"), ("kids", "div"))
"""A word of each kind of problem ``calculator_rows`` writes, and the tool that solves it."""

CONFUSED = {"add": "sub", "sub": "add", "mul": "add", "div": "mul"}
"""The tool a noisy demonstration calls instead of the right one."""


def calculator_plan(prompt: str) -> tuple[str, int, int]:
    """The right tool for a ``calculator_rows`` problem and its two numbers, in the order they appear.

    >>> calculator_plan("Ann has 37 pens, buys 5. Pens?")
    ('add', 37, 5)
    """
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    tool = next(name for word, name in _KINDS if word in prompt)
    return tool, a, b


def call_text(tool: str, a: int, b: int) -> str:
    """A call in the ``hermes`` format, compact JSON."""
    body = json.dumps({"name": tool, "arguments": {"a": a, "b": b}}, separators=(",", ":"))
    return f"<tool_call>{body}</tool_call>"


def calculator_demo(prompt: str, wrong: bool) -> tuple[str, str, str, str]:
    """``(tool, call, result, answer)`` of one demonstration: the call's text, what the tool returns, and the
    final answer (the result)."""
    tool, a, b = calculator_plan(prompt)
    if wrong:
        tool = CONFUSED[tool]
    result = getattr(Calculator(), tool)(a, b)
    return tool, call_text(tool, a, b), result, result
