"""The environment protocol, compatible with TRL's ``environment_factory``, and the tools' JSON schemas.

An environment is a class whose instances hold one episode's state:

- ``__init__(self)`` takes no argument; one instance serves many episodes (it is reset before each);
- ``reset(self, **row) -> str | list[dict] | None``: called with the dataset row's columns at the start of an
  episode. A string is appended to the last user message of the row's prompt (TRL's rule), or is the whole
  prompt when the row's prompt is empty; a message list replaces the prompt; None keeps the row's prompt;
- every public method (a name not starting with ``_``) other than the reserved names below is a *tool*: its
  parameters must carry type hints, and its docstring's first paragraph and ``Args:`` lines describe it to
  the model. Its schema (``tool_schema``) is what the chat template receives as ``tools=``;
- ``get_reward(self) -> float`` (optional, reserved): the episode's reward from the environment's state,
  called once when the episode ends; it becomes the reward function named ``environment``;
- ``respond(self, message: str) -> str | None`` (optional, reserved; a grouprl extension, TRL has none): what
  the environment says when a model turn makes no tool call, sent back as a user message; None (or no such
  method) ends the episode. Games with feedback and no tools use it.

Tools run with a wall-clock timeout and a cap on the result's size (``env/host.py``); whatever a tool does
wrong becomes an error message to the model, counted in ``env/tool_errors``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable

from grouprl.errors import ConfigError

RESERVED = ("reset", "get_reward", "respond")
"""Public method names that are part of the protocol, never tools."""

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def tool_names(cls: type) -> list[str]:
    """The tools of an environment class: its public callables other than the reserved names, in order."""
    return [name for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and name not in RESERVED and callable(member)]


def _json_type(hint, where: str) -> dict:
    """A JSON-schema fragment for a parameter's annotation."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        values = list(typing.get_args(hint))
        return {"type": _JSON_TYPES.get(type(values[0]), "string"), "enum": values}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _json_type(options[0], where)
        return {"type": [_json_type(a, where)["type"] for a in options]}
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return {"type": "array", **({"items": _json_type(args[0], where)} if args else {})}
    if origin is dict:
        return {"type": "object"}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    raise ConfigError(f"{where} has the type {getattr(hint, '__name__', hint)!r}, which has no JSON-schema "
                      "type; use str, int, float, bool, list, dict or a Literal")


def _docstring(fn: Callable) -> tuple[str, dict[str, str]]:
    """The first paragraph of ``fn``'s docstring and its ``Args:`` descriptions (Google style)."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    args: dict[str, str] = {}
    section = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", doc, re.M)
    if section:
        for match in re.finditer(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", section.group(1), re.M):
            args[match.group(1)] = match.group(2).strip()
    return summary, args


def tool_schema(cls: type, name: str) -> dict:
    """The OpenAI/transformers function schema of the tool ``name`` of ``cls``, from its signature.

    >>> class Env:
    ...     def add(self, a: int, b: int = 0) -> int:
    ...         '''Add two numbers.
    ...
    ...         Args:
    ...             a: the first
    ...         '''
    ...         return a + b
    >>> tool_schema(Env, "add")["function"]["parameters"]["required"]
    ['a']
    """
    fn = getattr(cls, name)
    where = f"environment {cls.__name__}: tool {name}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as err:  # noqa: BLE001 - an annotation that does not resolve is the user's to fix
        raise ConfigError(f"{where}: its type hints do not resolve ({err})") from None
    summary, described = _docstring(fn)
    properties, required = {}, []
    for param in list(inspect.signature(fn).parameters.values())[1:]:  # after self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"{where}: *{param.name} cannot be described to the model; give each argument "
                              "a name and a type hint")
        if param.name not in hints:
            raise ConfigError(f"{where}: parameter {param.name!r} has no type hint; the model is told each "
                              f"argument's type, so annotate it (e.g. {param.name}: int)")
        described_as = {"description": described[param.name]} if param.name in described else {}
        properties[param.name] = {**_json_type(hints[param.name], f"{where}, parameter {param.name}"),
                                  **described_as}
        if param.default is param.empty:
            required.append(param.name)
    return {"type": "function", "function": {"name": name, "description": summary or name,
                                             "parameters": {"type": "object", "properties": properties,
                                                            "required": required}}}


def check_environment(cls: object, spec: str) -> list[dict]:
    """Check an environment class against the protocol; returns its tools' schemas. One ``ConfigError`` line
    naming the class and the fix otherwise."""
    if not isinstance(cls, type):
        raise ConfigError(f"environment {spec!r} is a {type(cls).__name__}, not a class; name a class whose "
                          "reset(**row) starts an episode")
    if not callable(getattr(cls, "reset", None)):
        raise ConfigError(f"environment {spec!r}: class {cls.__name__} has no reset method; add "
                          "def reset(self, **row) -> str | None, which starts an episode")
    try:
        init = inspect.signature(cls)
        init.bind()
    except TypeError:
        raise ConfigError(f"environment {spec!r}: {cls.__name__}() needs arguments; its __init__ must take "
                          "none (as TRL's environment_factory calls it)") from None
    except ValueError:  # no inspectable signature (a builtin base): nothing to check
        pass
    return [tool_schema(cls, name) for name in tool_names(cls)]
