"""Tool-call parsers: the model's text of one turn → the calls it makes, or why a call could not be read.

``TOOL_PARSERS`` names them (``rollout.tool_parser``); each is ``parse(text) -> list[Call | Malformed]``,
empty when the turn calls no tool. The default, ``hermes``, reads the format that Hermes and Qwen chat
templates teach: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from grouprl.registry import Registry

TOOL_PARSERS: Registry = Registry("tool-call parser")


@dataclass(frozen=True)
class Call:
    """One well-formed call: the tool's name and its arguments."""

    name: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Malformed:
    """A call the parser found but could not read; ``reason`` is sent back to the model."""

    reason: str


_BLOCK = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


@TOOL_PARSERS.register("hermes")
def hermes(text: str) -> list[Call | Malformed]:
    """``<tool_call>{"name": str, "arguments": object}</tool_call>`` blocks, in order.

    >>> hermes('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>')
    [Call(name='add', arguments={'a': 1, 'b': 2})]
    >>> hermes("<tool_call>{add(1, 2)}</tool_call>")[0].reason
    'the tool call is not JSON (Expecting property name enclosed in double quotes at column 2)'
    >>> hermes("no call here")
    []
    """
    out: list[Call | Malformed] = []
    for match in _BLOCK.finditer(text):
        body, closed = match.group(1).strip(), match.group(2)
        if not closed:
            out.append(Malformed("the tool call has no closing </tool_call>"))
            continue
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            out.append(Malformed(f"the tool call is not JSON ({err.msg} at column {err.colno})"))
            continue
        out.append(_call(data))
    return out


def _call(data) -> Call | Malformed:
    """A decoded call object → ``Call``; arguments may arrive as a JSON string (OpenAI's form)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return Malformed('a tool call must be a JSON object {"name": ..., "arguments": {...}}')
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return Malformed(f"the arguments of {data['name']} are a string that is not a JSON object")
    if not isinstance(arguments, dict):
        return Malformed(f"the arguments of {data['name']} must be a JSON object of named values")
    return Call(data["name"], arguments)
