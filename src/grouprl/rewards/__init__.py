"""Reward functions: TRL's call, name resolution, start-up checks and the weighted combination.

A reward function is a plain callable (sync or async), called the way TRL's GRPOTrainer calls it::

    fn(prompts=..., completions=..., completion_ids=..., **dataset_columns,
       trainer_state=..., log_extra=..., log_metric=...) -> list[float | None]

``prompts`` are the rows' prompts as the dataset gives them (strings, or lists of chat messages);
``completions`` are strings for a string prompt and one-message assistant lists for a message-list prompt
(``grouprl.messages``); ``completion_ids`` the sampled tokens, unpadded; every other column a list aligned
with the completions. ``trainer_state`` is a ``RewardState``; ``log_extra(column, values)`` and
``log_metric(name, value)`` record per-sample columns for completions.jsonl and scalars for metrics.jsonl.

``None`` means "not applicable to this sample": it is left out of that function's statistics and contributes
0 to the weighted sum. What a function does wrong becomes the fallback value (0 by default) and a count in
``reward/<fn>/errors``, never a crash inside the runner: raising, or returning something that is not a list
(or tuple, or a numpy array / tensor) of exactly one value per completion, costs every sample of the call; a
value that is not a number (a string included), NaN or infinite costs that sample only. The first fault of
each kind is printed once per function, naming it and what was wrong; whether a function that fails on every
sample of a step stops the run is the training loop's decision (``reward_fail_fast``).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from grouprl.errors import RewardError
from grouprl.messages import as_completion, completion_text
from grouprl.registry import Registry
from grouprl.rewards.answers import REWARDS as ANSWER_REWARDS
from grouprl.rewards.arithmetic import correct_answer, integer_format
from grouprl.rewards.code import REWARDS as CODE_REWARDS
from grouprl.rewards.countdown import countdown_reward
from grouprl.rewards.length import REWARDS as LENGTH_REWARDS
from grouprl.rewards.numeric import REWARDS as NUMERIC_REWARDS
from grouprl.rewards.openr1 import FACTORIES as OPEN_R1_FACTORIES
from grouprl.rewards.openr1 import REWARDS as OPEN_R1_REWARDS
from grouprl.rewards.tags import REWARDS as TAG_REWARDS
from grouprl.types import Report


def _builtins() -> Registry[Callable]:
    table: Registry[Callable] = Registry("reward")
    functions = {"correct_answer": correct_answer, "integer_format": integer_format,
                 "countdown": countdown_reward, **ANSWER_REWARDS, **NUMERIC_REWARDS, **CODE_REWARDS,
                 **LENGTH_REWARDS, **TAG_REWARDS, **OPEN_R1_REWARDS}
    for name, fn in functions.items():
        table.register(name)(fn)
    for name, factory in OPEN_R1_FACTORIES.items():
        table.register(name, factory=True)(factory)
    return table


REWARDS = _builtins()
"""The built-in rewards by name. An entry registered with ``factory=True`` is a factory, made into the reward
function at start-up with its defaults or the entry's ``factory_kwargs``."""

BUILTIN_REWARDS: Mapping[str, Callable] = MappingProxyType(
    {name: REWARDS.get(name) for name in REWARDS.names() if not REWARDS.info(name).get("factory")})
"""The built-in reward functions (not factories), as a read-only mapping."""

BUILTIN_FACTORIES: Mapping[str, Callable] = MappingProxyType(
    {name: REWARDS.get(name) for name in REWARDS.names() if REWARDS.info(name).get("factory")})
"""The built-in reward factories, as a read-only mapping."""


TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
"""What TRL passes every reward function besides the dataset columns."""

NOT_COLUMNS = ("prompt", "completion", "completion_ids")
"""Dataset columns TRL does not pass on (the prompt arrives as ``prompts``)."""

_CALL = ("TRL calls a reward function as fn(prompts=..., completions=..., completion_ids=..., "
         "trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)")


@dataclass
class Reward:
    name: str
    fn: Callable
    weight: float = 1.0
    columns: dict[str, str] = field(default_factory=dict)  # dataset column -> the keyword it arrives as

    def arguments(self, columns: dict) -> dict:
        """The dataset columns as this function receives them: each mapped column under its keyword only (over
        a column of that name, if the dataset has one)."""
        out = {name: values for name, values in columns.items() if name not in self.columns}
        out.update({self.columns[name]: values for name, values in columns.items() if name in self.columns})
        return out


@dataclass(frozen=True)
class RewardState:
    """The ``trainer_state`` a reward function gets: the progress fields of transformers' ``TrainerState``
    (what reward schedules read, ``trainer_state.global_step`` first), as plain picklable data."""

    global_step: int = 0  # training steps finished before this call (TRL: optimizer steps so far)
    max_steps: int = 0  # train.steps
    epoch: float = 0.0  # passes over the training prompts so far, fractional
    is_world_process_zero: bool = True  # rank 0 of a torchrun job (or the only process)


def _builtin_names() -> str:
    return ", ".join(REWARDS.names())


def load_reward_fn(spec: str, factory_kwargs: dict | None = None) -> Callable:
    """A built-in short name, ``package.module:function`` or ``path/to/file.py:function``.

    A built-in factory is called with ``factory_kwargs`` (none: its defaults); anything else is called with
    them only when they are given (``{}`` included), and what it returns is the reward function.
    """
    if spec in BUILTIN_FACTORIES:
        return _make(spec, REWARDS.get(spec), factory_kwargs or {})
    if spec in REWARDS:
        if factory_kwargs is not None:
            raise RewardError(f"reward {spec!r} is a function, not a factory: drop factory_kwargs (per-call "
                              "parameters go in kwargs); the built-in factories are "
                              f"{', '.join(BUILTIN_FACTORIES)}")
        return REWARDS.get(spec)
    fn = _import(spec)
    return fn if factory_kwargs is None else _make(spec, fn, factory_kwargs)


def _import(spec: str) -> Callable:
    """``package.module:function`` or ``path/to/file.py:function``, imported."""
    if ":" not in spec:
        raise RewardError(f"unknown reward {spec!r}; built-in: {_builtin_names()}; "
                          "or give module:function or path/to/file.py:function")
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
        raise RewardError(f"reward {spec!r}: importing {target} failed: "
                          f"{type(err).__name__}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {target} has no callable {attr!r}")
    return fn


def _make(spec: str, factory: Callable, factory_kwargs: dict) -> Callable:
    """Call a reward factory once; what it raises or returns that is not callable is one line."""
    try:
        fn = factory(**factory_kwargs)
    except Exception as err:  # noqa: BLE001 - a factory's complaint about its arguments is the user's to fix
        raise RewardError(f"reward {spec!r}: its factory refused factory_kwargs={factory_kwargs!r}: "
                          f"{describe(err)}") from None
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: its factory returned {_show(fn)}, not a reward function")
    return fn


ENTRY_KEYS = ("name", "weight", "kwargs", "factory_kwargs", "columns")


def resolve_rewards(entries: list, default: list[Callable], columns: set[str] | None = None) -> list[Reward]:
    """Config entries (``"name"`` or a mapping of ``ENTRY_KEYS``) → rewards; empty: the task's own.

    ``columns``: the dataset's columns, when known; each function's signature is then checked against what
    TRL passes (``check_signature``), so a function TRL could not call fails here, before any model loads.
    Two entries with the same name get ``_2``, ``_3`` … appended (metrics are kept per name).
    """
    rewards = ([_resolve(entry, i) for i, entry in enumerate(entries)] if entries
               else [Reward(fn.__name__, fn) for fn in default])
    seen: dict[str, int] = {}
    for reward in rewards:
        seen[reward.name] = seen.get(reward.name, 0) + 1
        if seen[reward.name] > 1:
            reward.name = f"{reward.name}_{seen[reward.name]}"
        check_signature(reward, columns)
    return rewards


def _resolve(entry, index: int) -> Reward:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
        raise RewardError(f"rewards: entry {entry!r} must be a name or a mapping with a name: {{name: ..., "
                          "weight: ..., kwargs: ..., factory_kwargs: ..., columns: ...}")
    spec = entry["name"]
    if spec == "reward_model":
        return _reward_model(entry, index)
    unknown = [key for key in entry if key not in ENTRY_KEYS]
    if unknown:
        raise RewardError(f"rewards: entry {entry!r} has unknown key(s) {', '.join(map(str, unknown))}; "
                          f"an entry takes {', '.join(ENTRY_KEYS)}")
    kwargs = _mapping(entry, "kwargs", spec)
    factory_kwargs = _mapping(entry, "factory_kwargs", spec) if "factory_kwargs" in entry else None
    fn = load_reward_fn(spec, factory_kwargs)
    short = spec.rpartition(":")[2] or spec  # a built-in's name, or the function's name in its module
    user_factory = factory_kwargs is not None and spec not in BUILTIN_FACTORIES
    name = (getattr(fn, "__name__", None) or short) if user_factory else short
    return Reward(name, functools.partial(fn, **kwargs) if kwargs else fn, _weight(entry, index),
                  _column_map(entry, spec))


def verifier_name(rewards: list[Reward], name: str | None) -> str:
    """The reward that defines ``accuracy`` (the config's ``verifier``): ``name`` if one of ``rewards`` has
    it, else (``None``) the first reward, which is the task's verifier when the rewards are the task's own."""
    names = [reward.name for reward in rewards]
    if name is None:
        return names[0] if names else ""
    if name not in names:
        raise RewardError(f"verifier: no reward is named {name!r}; the rewards are {', '.join(names)} "
                          "(a repeated name gets _2, _3 ...)")
    return name


def _reward_model(entry: dict, index: int) -> Reward:
    if not set(entry) <= {"name", "weight", "path", "device"}:
        raise RewardError(f"rewards: entry {entry!r}: reward_model takes name, weight, path and device")
    if "path" not in entry:
        raise RewardError("rewards: reward_model needs a path: {name: reward_model, path: DIR_OR_HUB_ID}")
    from grouprl.model.device import resolve_device
    from grouprl.rewards.model import RewardModel

    device = resolve_device(entry.get("device", "cpu"), key=f"rewards[{index}].device")
    return Reward("reward_model", RewardModel(str(entry["path"]), device=device), _weight(entry, index))


def _mapping(entry: dict, key: str, spec: str) -> dict:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise RewardError(f"rewards: {key} of {spec!r} must be a mapping, got {value!r}")
    return value


def _column_map(entry: dict, spec: str) -> dict[str, str]:
    """``columns: {dataset_column: keyword}``, checked to map names to names."""
    mapping = _mapping(entry, "columns", spec)
    for column, keyword in mapping.items():
        if not (isinstance(column, str) and isinstance(keyword, str) and keyword.isidentifier()):
            raise RewardError(f"rewards: columns of {spec!r} must map a dataset column to a keyword name, "
                              f"e.g. {{answer: solution}}; got {column!r}: {keyword!r}")
    return dict(mapping)


def dataset_columns(rows: list[dict]) -> set[str]:
    """The columns every row has that reach the reward functions (all but ``NOT_COLUMNS``)."""
    common = set(rows[0]).intersection(*rows[1:]) if rows else set()
    return common - set(NOT_COLUMNS)


def check_signature(reward: Reward, columns: set[str] | None) -> None:
    """Whether TRL's call can bind to the function's parameters; one line naming it and what TRL passes if
    not.

    Checked: no required positional-only parameter; without ``**kwargs``, a parameter for every keyword the
    call passes; and, when the dataset's ``columns`` are known, that every required parameter is one of those
    keywords, and every column ``reward.columns`` maps exists. Callables without an inspectable signature are
    not checked.
    """
    if columns is not None:
        absent = sorted(set(reward.columns) - columns)
        if absent:
            raise RewardError(f"rewards: {reward.name}'s columns maps {absent[0]!r}, which the dataset "
                              f"does not have (its columns: {', '.join(sorted(columns)) or 'none'})")
    try:
        params = list(inspect.signature(reward.fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or an extension callable: nothing to inspect
        return
    passed = set(TRL_KEYWORDS) | set(reward.arguments(dict.fromkeys(columns or ())))
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional:
        raise RewardError(f"reward {reward.name}: parameter {positional[0]!r} is positional-only, "
                          f"but {_CALL}, all by keyword")
    if columns is not None:
        missing = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and p.default is p.empty and p.name not in passed]
        if missing:
            raise RewardError(f"reward {reward.name} requires {missing[0]!r}, which is neither an argument "
                              "TRL passes nor a dataset column "
                              f"(columns: {', '.join(sorted(columns)) or 'none'}); {_CALL}; "
                              f"give {missing[0]} a default, or map a column to it with "
                              f"columns: {{COLUMN: {missing[0]}}}")
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        refused = [k for k in [*TRL_KEYWORDS, *sorted(passed - set(TRL_KEYWORDS))] if k not in accepted]
        if refused:
            raise RewardError(f"reward {reward.name} does not accept {', '.join(refused)}; {_CALL}: "
                              "add **kwargs to its parameters")


def _weight(entry: dict, index: int) -> float:
    """``rewards[index].weight`` as a float: a number, not a string or a bool."""
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise RewardError(f"rewards[{index}].weight of {entry.get('name')!r} must be a finite number, "
                          f"got {weight!r}; "
                          "e.g. {name: correct_answer, weight: 1.0}")
    return float(weight)


class BadReturn(Exception):
    """A reward function's return is not one value per completion; the message says what it returned."""


@dataclass
class Returned:
    """What one call gave, already as plain data (so a worker sends the trainer nothing else)."""

    values: list[float | None]  # NaN where the function's value was not a finite number
    first_bad: tuple[int, str] | None = None  # (sample, "'x' (str)") of the first such value
    metrics: dict[str, list[float]] = field(default_factory=dict)  # log_metric(name, value) calls
    extra: dict[str, list] = field(default_factory=dict)  # log_extra(column, values) calls


class _Logs:
    """TRL's ``log_metric`` and ``log_extra`` hooks for one call: they record plain data, returned with the
    values (a worker cannot call back into the trainer)."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.extra: dict[str, list] = {}

    def log_metric(self, name: str, value: float) -> None:
        """A scalar for metrics.jsonl (``reward_log/<name>``: the mean of a step's values)."""
        self.metrics.setdefault(str(name), []).append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        """A column for completions.jsonl (``extra/<column>``): one value per completion, as text if it is
        not a JSON scalar."""
        self.extra.setdefault(str(column), []).extend(_plain(v) for v in values)


def _plain(value):
    return value if value is None or isinstance(value, (str, bool, int, float)) else str(value)


def call_reward(fn: Callable, prompts, completions, completion_ids, columns, state: RewardState) -> Returned:
    """One call of a reward function the way TRL calls it; an async function is run to completion.

    Raises ``BadReturn`` when the result is not a sequence of ``len(completions)`` values, and whatever the
    function raises.
    """
    logs = _Logs()
    kwargs = {**columns, "trainer_state": state, "log_extra": logs.log_extra, "log_metric": logs.log_metric}
    out = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    raw = _as_list(out, len(completions))
    values = [_as_float(v) for v in raw]
    bad = next((i for i, v in enumerate(values) if v is not None and not math.isfinite(v)), None)
    return Returned(values, None if bad is None else (bad, _show(raw[bad])), logs.metrics, logs.extra)


def reward_inputs(rows: list[dict], texts: list[str], n: int) -> tuple[list, list, dict]:
    """TRL's ``prompts``, ``completions`` and dataset columns for ``texts``, ``n`` consecutive completions per
    row: each prompt as its row gives it, each completion in its prompt's form, each column repeated."""
    prompts = [row["prompt"] for row in rows for _ in range(n)]
    completions = [as_completion(prompt, text) for prompt, text in zip(prompts, texts, strict=True)]
    columns = {k: [row[k] for row in rows for _ in range(n)] for k in rows[0] if k not in NOT_COLUMNS}
    return prompts, completions, columns


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
    report: Report = field(default_factory=Report)


class RewardRunner:
    """Scores completions with every reward function; never raises because of what a function does.

    With ``isolate=True`` (the trainer's default) the functions run in a forked worker process with a
    wall-clock ``timeout`` per call (see ``runner.py``); otherwise in this process.
    """

    def __init__(self, rewards: list[Reward], *, timeout: float = 60.0, fallback: float = 0.0,
                 isolate: bool = True, memory_mb: int = 8192, verifier: str | None = None) -> None:
        from grouprl.rewards.runner import RewardWorker, fork_available

        self.rewards, self.fallback = rewards, fallback
        self.verifier = verifier_name(rewards, verifier)
        """The name of the reward whose value is ``accuracy`` and decides evaluation (see
        ``verifier_name``)."""
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

    def score(self, prompts: list, completions: list, completion_ids, columns: dict, *,
              state: RewardState | None = None, verifier_only: bool = False) -> Scores:
        """Every function (the verifier only, with ``verifier_only``) on one batch; ``state``: their
        ``trainer_state`` (default: a fresh run's)."""
        N = len(completions)
        state = state or RewardState()
        # the functions' values are host data: they stay on the CPU (the trainer moves what it needs)
        out = Scores(torch.zeros(N, dtype=torch.float64, device="cpu"), {}, {}, {}, Report(N, N))
        for index, reward in enumerate(self.rewards):
            if verifier_only and reward.name != self.verifier:
                continue
            status, payload = self._run(index, (prompts, completions, completion_ids,
                                                reward.arguments(columns), state))
            what = None
            if status == "ok":
                failed = torch.tensor([v is not None and not math.isfinite(v) for v in payload.values],
                                      dtype=torch.bool, device="cpu")
                if payload.first_bad is not None:
                    sample, shown = payload.first_bad
                    what = f"returned {shown} for sample {sample}"
                    _warn_once(reward.name, "value", what, completions[sample])
                values = [self.fallback if bad else v for v, bad in zip(payload.values, failed.tolist())]
                out.report.add_logs(payload.metrics, payload.extra)
            else:
                what = {"timeout": "timed out (reward_timeout)", "bad": payload}.get(status,
                                                                                     f"failed ({payload})")
                _warn_once(reward.name, status, what, completions[0] if completions else "")
                failed, values = torch.ones(N, dtype=torch.bool, device="cpu"), [self.fallback] * N
            out.parts[reward.name] = torch.tensor([math.nan if v is None else v for v in values],
                                                  dtype=torch.float64, device="cpu")
            out.total += reward.weight * torch.nan_to_num(out.parts[reward.name], nan=0.0)
            out.errors[reward.name] = 0 if status == "timeout" else int(failed.sum())
            out.timeouts[reward.name] = N if status == "timeout" else 0
            out.report.failed[reward.name] = failed
            if what is not None:
                out.report.first_error.setdefault(reward.name, what)
        return out


_WARNED: set[tuple[str, str]] = set()
_SAMPLE = reprlib.Repr()
_SAMPLE.maxstring = 200


def _warn_once(name: str, kind: str, what: str, sample) -> None:
    """Print the first fault of each kind (``value``, ``bad``, ``error``, ``timeout``) of a function."""
    if (name, kind) not in _WARNED:
        _WARNED.add((name, kind))
        text = completion_text(sample)
        print(f"warning: reward {name} {what} "
              f"(sample completion: {_SAMPLE.repr(sample if text is None else text)}); "
              "using the fallback value", file=sys.stderr)
