"""Environments for multi-turn and tool-using rollouts (TRL's ``environment_factory`` protocol).

``ENVIRONMENTS`` names the built-ins; ``environment=`` in the config is one of them, ``package.module:Class``
or ``path/to/file.py:Class`` (loaded as reward files are). A built-in is registered with ``rows`` (its prompt
generator ``rows(split, n, seed)``, used when no ``data.path`` is given) and ``rewards`` (the reward names it
is scored by when ``rewards`` is empty) and may bring ``settings``, the config its embedded player trains
with (applied by the config loader to keys not given). The protocol is in ``protocol.py``, the episode loop in
``episode.py``, where the instances live and tools run in ``host.py``; docs/environments.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from grouprl.env.builtin import (
    CALCULATOR_SETTINGS,
    Calculator,
    GuessNumber,
    PythonTool,
    calculator_rows,
    guess_rows,
)
from grouprl.env.parse import TOOL_PARSERS
from grouprl.env.protocol import check_environment, tool_names, tool_schema
from grouprl.errors import ConfigError
from grouprl.registry import Registry

ENVIRONMENTS: Registry = Registry("environment")
ENVIRONMENTS.register("calculator", rows=calculator_rows, rewards=("correct_answer",),
                      settings=CALCULATOR_SETTINGS)(Calculator)
ENVIRONMENTS.register("guess_number", rows=guess_rows, rewards=())(GuessNumber)
ENVIRONMENTS.register("python", rows=None, rewards=())(PythonTool)


def load_environment(spec: str) -> type:
    """The environment class ``spec`` names, checked against the protocol (``ConfigError`` otherwise)."""
    if spec in ENVIRONMENTS:
        cls = ENVIRONMENTS.get(spec)
    elif ":" not in spec:
        raise ConfigError(f"environment: unknown {spec!r}; built-in: {', '.join(ENVIRONMENTS.names())}; "
                          "or give package.module:Class or path/to/file.py:Class")
    else:
        cls = _import(spec)
    check_environment(cls, spec)
    return cls


def _import(spec: str):
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ConfigError(f"environment file {path} does not exist (from environment={spec!r})")
            name = f"grouprl_user_env_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # before running it: pickled copies of its instances find the class
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as err:  # an import error in user code is one line, not a traceback
        raise ConfigError(f"environment {spec!r}: importing {target} failed: "
                          f"{type(err).__name__}: {err}") from None
    if not hasattr(module, attr):
        raise ConfigError(f"environment {spec!r}: {target} has no {attr!r}")
    return getattr(module, attr)


def environment_reward(prompts=None, completions=None, environment_reward=(), **kwargs) -> list:
    """The reward function named ``environment``: each episode's ``get_reward()``, passed as a column."""
    return list(environment_reward)


def builtin_info(spec: str) -> dict:
    """What a built-in environment was registered with (``{}`` for a user class)."""
    return ENVIRONMENTS.info(spec) if spec in ENVIRONMENTS else {}


__all__ = ["ENVIRONMENTS", "TOOL_PARSERS", "builtin_info", "check_environment", "environment_reward",
           "load_environment", "tool_names", "tool_schema"]
