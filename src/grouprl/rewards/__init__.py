"""Reward functions: the TRL protocol, name resolution and the weighted combination.

A reward function is a plain callable (sync or async)::

    fn(prompts: list[str], completions: list[str], completion_ids=None, **dataset_columns) -> list[float | None]

``None`` means "not applicable to this sample": it is left out of that function's statistics and contributes
0 to the weighted sum. A function that raises, or returns a non-number or NaN for a sample, gets the fallback
value (0 by default) for the affected samples, and the event is counted in ``reward/<fn>/errors`` —
never a crash.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import math
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


def call_reward(fn: Callable, prompts, completions, completion_ids, columns) -> list:
    """One call of a reward function under the TRL protocol; an async function is run to completion."""
    out = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    return list(out)


async def _await(awaitable):
    return await awaitable


def _as_float(value) -> float | None:
    """A returned value as float; None stays None; anything unusable becomes NaN (counted as an error)."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


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
                 isolate: bool = True) -> None:
        from grouprl.rewards.runner import RewardWorker, fork_available

        self.rewards, self.fallback = rewards, fallback
        self.worker = RewardWorker([r.fn for r in rewards], timeout) if isolate and fork_available() else None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def _run(self, index: int, args: tuple) -> tuple[str, object]:
        if self.worker is not None:
            return self.worker.call(index, args)
        try:
            return "ok", call_reward(self.rewards[index].fn, *args)
        except Exception as err:  # noqa: BLE001 - a failing reward must not end training
            return "error", f"{type(err).__name__}: {err}"

    def score(self, prompts: list[str], completions: list[str], completion_ids, columns: dict, *,
              first_only: bool = False) -> Scores:
        N = len(completions)
        out = Scores(torch.zeros(N, dtype=torch.float64), {}, {}, {})
        for index, reward in enumerate(self.rewards[:1] if first_only else self.rewards):
            status, payload = self._run(index, (prompts, completions, completion_ids, columns))
            errors = timeouts = 0
            if status == "ok" and len(payload) != N:
                status, payload = "error", f"returned {len(payload)} values for {N} completions"
            if status == "ok":
                values = [_as_float(v) for v in payload]
                errors = sum(v is not None and not math.isfinite(v) for v in values)
                if errors:
                    _warn_once(reward.name, "returned a non-number or NaN", completions[:1])
                values = [self.fallback if v is not None and not math.isfinite(v) else v for v in values]
            else:
                what = "timed out" if status == "timeout" else f"failed ({payload})"
                _warn_once(reward.name, what, completions[:1])
                values = [self.fallback] * N
                errors, timeouts = (0, N) if status == "timeout" else (N, 0)
            out.parts[reward.name] = torch.tensor([math.nan if v is None else v for v in values],
                                                  dtype=torch.float64)
            out.total += reward.weight * torch.nan_to_num(out.parts[reward.name], nan=0.0)
            out.errors[reward.name], out.timeouts[reward.name] = errors, timeouts
        return out


_WARNED: set[str] = set()


def _warn_once(name: str, what: str, sample: list[str]) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        print(f"warning: reward {name} {what} (sample completion: {sample[0]!r}); using the fallback value",
              file=sys.stderr)
