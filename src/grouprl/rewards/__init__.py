"""Reward functions: the TRL protocol, name resolution and the weighted combination.

A reward function is a plain callable (sync or async)::

    fn(prompts: list[str], completions: list[str], completion_ids=None, **dataset_columns) -> list[float | None]

``None`` means "not applicable to this sample": it is left out of that function's statistics and contributes
0 to the weighted sum. What a function does wrong becomes the fallback value (0 by default) and a count in
``reward/<fn>/errors``, never a crash: raising, or returning something that is not a list (or tuple, or a
numpy array / tensor) of exactly one value per completion, costs every sample of the call; a value that is not
a number (a string included), NaN or infinite costs that sample only. The first fault of each kind is printed
once per function, naming it and what was wrong.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import math
import reprlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from grouprl.data.tasks.arithmetic import correct_answer, integer_format
from grouprl.data.tasks.countdown import countdown_reward
from grouprl.errors import RewardError
from grouprl.rewards.answers import REWARDS as ANSWER_REWARDS
from grouprl.rewards.code import REWARDS as CODE_REWARDS
from grouprl.rewards.length import REWARDS as LENGTH_REWARDS
from grouprl.rewards.tags import REWARDS as TAG_REWARDS

BUILTIN_REWARDS: dict[str, Callable] = {
    "correct_answer": correct_answer,
    "integer_format": integer_format,
    "countdown": countdown_reward,
    **ANSWER_REWARDS,
    **CODE_REWARDS,
    **LENGTH_REWARDS,
    **TAG_REWARDS,
}


@dataclass
class Reward:
    name: str
    fn: Callable
    weight: float = 1.0


def load_reward_fn(spec: str) -> Callable:
    """A built-in short name, ``package.module:function`` or ``path/to/file.py:function``."""
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    if ":" not in spec:
        raise RewardError(f"unknown reward {spec!r}; built-in: {', '.join(sorted(BUILTIN_REWARDS))}; or give "
                          "module:function or path/to/file.py:function")
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise RewardError(f"reward file {path} does not exist (from reward {spec!r})")
            module_name = f"grouprl_user_reward_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except RewardError:
        raise
    except Exception as err:  # an import error in user code is reported, not raised raw
        raise RewardError(f"reward {spec!r}: importing {target} failed: {type(err).__name__}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {target} has no callable {attr!r}")
    return fn


def resolve_rewards(entries: list, default: list[Callable]) -> list[Reward]:
    """Config entries (``"name"`` or ``{name: ..., weight: ...}``) → rewards; empty: the task's own."""
    if not entries:
        return [Reward(fn.__name__, fn) for fn in default]
    rewards = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            name, weight = entry, 1.0
        elif isinstance(entry, dict) and entry.get("name") == "reward_model" and set(entry) <= {"name", "weight",
                                                                                             "path"}:
            if "path" not in entry:
                raise RewardError("rewards: reward_model needs a path: {name: reward_model, path: DIR_OR_HUB_ID}")
            from grouprl.rewards.model import RewardModel

            rewards.append(Reward("reward_model", RewardModel(str(entry["path"])), _weight(entry, i)))
            continue
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str) and set(entry) <= {"name", "weight",
                                                                                               "kwargs"}:
            name, weight = entry["name"], _weight(entry, i)
        else:
            raise RewardError(f"rewards: entry {entry!r} must be a name or {{name: ..., weight: ..., kwargs: ...}}")
        fn = load_reward_fn(name)
        kwargs = entry.get("kwargs", {}) if isinstance(entry, dict) else {}
        if not isinstance(kwargs, dict):
            raise RewardError(f"rewards: kwargs of {name!r} must be a mapping, got {kwargs!r}")
        rewards.append(Reward(name.rpartition(":")[2] or name, functools.partial(fn, **kwargs) if kwargs else fn,
                              weight))
    return rewards


def _weight(entry: dict, index: int) -> float:
    """``rewards[index].weight`` as a float: a number, not a string or a bool."""
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise RewardError(f"rewards[{index}].weight of {entry.get('name')!r} must be a finite number, got {weight!r}; "
                          "e.g. {name: correct_answer, weight: 1.0}")
    return float(weight)


class BadReturn(Exception):
    """A reward function's return is not one value per completion; the message says what it returned."""


@dataclass
class Returned:
    """What one call gave, already as plain floats (so a worker sends the trainer nothing else)."""

    values: list[float | None]  # NaN where the function's value was not a finite number
    first_bad: tuple[int, str] | None = None  # (sample, "'x' (str)") of the first such value


def call_reward(fn: Callable, prompts, completions, completion_ids, columns) -> Returned:
    """One call of a reward function under the TRL protocol; an async function is run to completion.

    Raises ``BadReturn`` when the result is not a sequence of ``len(completions)`` values, and whatever the
    function raises.
    """
    out = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    raw = _as_list(out, len(completions))
    values = [_as_float(v) for v in raw]
    bad = next((i for i, v in enumerate(values) if v is not None and not math.isfinite(v)), None)
    return Returned(values, None if bad is None else (bad, _show(raw[bad])))


async def _await(awaitable):
    return await awaitable


def _as_list(out, n: int) -> list:
    """A list, a tuple, or an array with ``tolist()`` (numpy, torch) of ``n`` values; anything else is a
    ``BadReturn`` — a dict, a string, a generator or a scalar included, though ``list()`` would take some."""
    if not isinstance(out, (list, tuple)) and callable(getattr(out, "tolist", None)):
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        raise BadReturn(f"returned {_show(out)}, not a list of {n} values")
    if len(out) != n:
        raise BadReturn(f"returned {len(out)} values for {n} completions")
    return list(out)


def describe(err: BaseException) -> str:
    """``"RuntimeError: boom"``; just ``"MemoryError"`` for an exception without a message."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _show(value) -> str:
    """``'x' (str)``, ``0.5 (float)``; ``a generator`` for what has no readable repr."""
    shown = reprlib.repr(value)
    return f"a {type(value).__name__}" if shown.startswith("<") else f"{shown} ({type(value).__name__})"


def _as_float(value) -> float | None:
    """A returned value as float; None stays None; anything unusable (a string too) becomes NaN."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)
    except Exception:  # noqa: BLE001 - e.g. a two-element tensor: whatever float() refuses is not a number
        return math.nan


@dataclass
class Scores:
    total: torch.Tensor  # [N] float64, weighted sum (None counts 0)
    parts: dict[str, torch.Tensor]  # name -> [N], NaN where not applicable
    errors: dict[str, int]  # name -> samples that got the fallback because of an exception or a bad value
    timeouts: dict[str, int]  # name -> samples that got the fallback because the call timed out


class RewardRunner:
    """Scores completions with every reward function; never raises because of what a function does.

    With ``isolate=True`` (the trainer's default) the functions run in a forked worker process with a
    wall-clock ``timeout`` per call (see ``runner.py``); otherwise in this process.
    """

    def __init__(self, rewards: list[Reward], *, timeout: float = 60.0, fallback: float = 0.0,
                 isolate: bool = True, memory_mb: int = 8192) -> None:
        from grouprl.rewards.runner import RewardWorker, fork_available

        self.rewards, self.fallback = rewards, fallback
        self.worker = (RewardWorker([r.fn for r in rewards], timeout, memory_mb)
                       if isolate and fork_available() else None)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def _run(self, index: int, args: tuple) -> tuple[str, object]:
        if self.worker is not None:
            return self.worker.call(index, args)
        try:
            return "ok", call_reward(self.rewards[index].fn, *args)
        except BadReturn as err:
            return "bad", str(err)
        except Exception as err:  # noqa: BLE001 - a failing reward must not end training
            return "error", describe(err)

    def score(self, prompts: list[str], completions: list[str], completion_ids, columns: dict, *,
              first_only: bool = False) -> Scores:
        N = len(completions)
        out = Scores(torch.zeros(N, dtype=torch.float64), {}, {}, {})
        for index, reward in enumerate(self.rewards[:1] if first_only else self.rewards):
            status, payload = self._run(index, (prompts, completions, completion_ids, columns))
            errors = timeouts = 0
            if status == "ok":
                values = payload.values
                errors = sum(v is not None and not math.isfinite(v) for v in values)
                if payload.first_bad is not None:
                    sample, shown = payload.first_bad
                    _warn_once(reward.name, "value", f"returned {shown} for sample {sample}", completions[sample])
                values = [self.fallback if v is not None and not math.isfinite(v) else v for v in values]
            else:
                what = {"timeout": "timed out (reward_timeout)", "bad": payload}.get(status, f"failed ({payload})")
                _warn_once(reward.name, status, what, completions[0] if completions else "")
                values = [self.fallback] * N
                errors, timeouts = (0, N) if status == "timeout" else (N, 0)
            out.parts[reward.name] = torch.tensor([math.nan if v is None else v for v in values],
                                                  dtype=torch.float64)
            out.total += reward.weight * torch.nan_to_num(out.parts[reward.name], nan=0.0)
            out.errors[reward.name], out.timeouts[reward.name] = errors, timeouts
        return out


_WARNED: set[tuple[str, str]] = set()
_SAMPLE = reprlib.Repr()
_SAMPLE.maxstring = 200


def _warn_once(name: str, kind: str, what: str, sample: str) -> None:
    """Print the first fault of each kind (``value``, ``bad``, ``error``, ``timeout``) of a function."""
    if (name, kind) not in _WARNED:
        _WARNED.add((name, kind))
        print(f"warning: reward {name} {what} (sample completion: {_SAMPLE.repr(sample)}); using the fallback "
              "value", file=sys.stderr)
