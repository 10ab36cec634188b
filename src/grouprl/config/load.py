"""Build a ``Config`` from YAML and ``a.b=c`` overrides, checking every key and type on the way in.

The file and the command line are two layers; in each a setting may be spelled with its grouprl key or its
TRL name (``grouprl.config.trl``). The command line wins over the file; one layer giving both spellings of a
setting different values is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from grouprl.algo import AlgoSpec, preset
from grouprl.config import trl
from grouprl.config.schema import ROLLOUT_BACKENDS, TOOL_PARSER_NAMES, Config
from grouprl.errors import ConfigError, read_utf8
from grouprl.model.device import ATTN_IMPLEMENTATIONS, PRECISIONS

REPORT_TO = ("tensorboard", "wandb", "trackio")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (dict, list) or origin in (dict, list):
        base = origin or tp
        if not isinstance(value, base):
            raise ConfigError(f"{key}: expected a {base.__name__}, got {value!r}")
        return value
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _merge(obj, data: dict, prefix: str = "") -> None:
    """Write ``data`` into the dataclass ``obj`` in place, recursing into nested sections."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            close = trl.suggest(where, list(all_keys()))
            hint = f"did you mean {close}?" if close else f"known keys here: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown config key '{where}'; {hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, where + ".")
        elif key == "algo" and prefix == "":
            current.update(value if isinstance(value, dict) else _coerce(value, dict, where))
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def parse_override(text: str) -> dict:
    """``"train.lr=1e-5"`` → ``{"train": {"lr": 1e-5}}``; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.lr=1e-5)")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key; write it as section.key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string; a number should be a number
        with contextlib.suppress(ValueError):
            value = float(raw)
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def all_keys(obj=None, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the schema: ``train.lr``, ``model.lora.r``, ``algorithm`` …"""
    obj = Config() if obj is None else obj
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from all_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _given(obj, data: dict, prefix: str = "") -> Iterator[str]:
    """The dotted keys a merged layer set (``algo``'s entries each count as one: ``algo.beta``)."""
    for key, value in data.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            yield from _given(current, value, f"{prefix}{key}.")
        elif key == "algo" and not prefix and isinstance(value, dict):
            yield from (f"algo.{name}" for name in value)
        else:
            yield f"{prefix}{key}"


def _get(cfg: Config, key: str):
    *sections, last = key.split(".")
    node = cfg
    for part in sections:
        node = getattr(node, part)
    return node.get(last) if isinstance(node, dict) else getattr(node, last)


def _nest(key: str, value) -> dict:
    out: dict = {}
    node = out
    *sections, last = key.split(".")
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path passed to --config")
    try:
        return yaml.safe_load(read_utf8(path, ConfigError)) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Schema defaults → YAML file → overrides, each in grouprl's or TRL's names; then TRL's combined names,
    the warm-up ratio and the algorithm spec are resolved and validated. TRL names that mean nothing here are
    listed in one warning line on stderr."""
    layers = [(0, _read_yaml(Path(path)))] if path is not None else []
    # the command line: one layer, merged in order
    layers += [(1, parse_override(text)) for text in overrides]
    cfg = Config()
    given: dict[str, tuple[int, str]] = {}  # key -> (layer, the spelling that set it)
    values, layer_of, ignored = {}, {}, []
    for layer, data in layers:
        rest, trl_values, skipped = trl.split_layer(data)
        _merge(cfg, rest)
        given.update({key: (layer, key) for key in _given(cfg, rest)})
        values.update(trl_values)
        layer_of.update(dict.fromkeys(trl_values, layer))
        ignored += [name for name in skipped if name not in ignored]
    trl.resolve(cfg, values, _assigner(cfg, given, values, layer_of), _dataset_size, _clip)
    _environment_settings(cfg, given)
    _resolve_warmup(cfg, given)
    if ignored and int(os.environ.get("RANK", 0)) == 0:
        print(f"grouprl: ignoring {', '.join(ignored)}: TRL/open-r1 settings with no meaning in grouprl "
              "(docs/trl.md)", file=sys.stderr, flush=True)
    algo_spec(cfg)  # resolve now so a bad algorithm setting fails before anything loads
    _check_values(cfg)
    return cfg


def _assigner(cfg: Config, given: dict, values: dict, layer_of: dict) -> Callable:
    """``assign(names, key, value, mode)`` for ``trl.resolve``: a key given in a later layer wins; the same
    layer giving it a different value under another spelling is a ConfigError naming both."""

    def assign(names: tuple[str, ...], key: str, value, mode: str = "set") -> None:
        layer = max(layer_of[name] for name in names)
        before = given.get(key)
        if before and (mode == "default" or (mode == "set" and before[0] > layer)):
            return
        old = _get(cfg, key)
        try:
            _merge(cfg, _nest(key, value))
        except ConfigError as err:
            raise ConfigError(f"{', '.join(names)} (TRL name for {key}): {err}") from None
        new = _get(cfg, key)
        if mode == "set" and before and before[0] == layer and new != old:
            said = (f"{names[0]}={value!r}" if len(names) == 1 and values.get(names[0]) == value
                    else f"{' and '.join(names)} (giving {key}={new!r})")
            raise ConfigError(f"{said} and {before[1]}={old!r} are both given, with different values; "
                              "keep one")
        given[key] = (layer, names[0])

    return assign


def _environment_settings(cfg: Config, given: dict) -> None:
    """A built-in environment with an embedded player (``calculator``: ``default-calculator``) brings the
    settings that model trains with, for each key not given; only while the policy is that model (the
    schema's default ``default`` or the player's name)."""
    from grouprl.env import builtin_info

    if cfg.environment is None:
        return
    settings = builtin_info(cfg.environment).get("settings") or {}
    player = settings.get("model.name_or_path")
    if not settings or ("model.name_or_path" in given and cfg.model.name_or_path != player):
        return
    for key, value in settings.items():
        if key not in given:
            _merge(cfg, _nest(key, value))


def _dataset_size(cfg: Config) -> int:
    """Training prompts, for TRL's num_train_epochs: the built-in task's count, or the dataset's rows."""
    if cfg.data.path is None:
        return cfg.data.num_train
    from grouprl.data.prompts import load_rows

    d = cfg.data
    return len(load_rows(d.path, d.prompt_column, config=d.dataset_config, split=d.split,
                         data_files=d.data_files))


def _clip(cfg: Config) -> str | None:
    try:
        return preset(cfg.algorithm, **cfg.algo).clip
    except (KeyError, ValueError):  # reported by algo_spec, with the config's key
        return None


def total_updates(cfg: Config) -> int:
    """Optimizer steps of the whole run: steps × num_iterations × mini_batches."""
    return cfg.train.steps * cfg.train.num_iterations * cfg.train.mini_batches


def _resolve_warmup(cfg: Config, given: dict) -> None:
    """A warm-up ratio becomes warm-up steps; warmup_steps given in a later layer replaces the ratio."""
    ratio = cfg.train.warmup_ratio
    if ratio is None:
        return
    ratio_layer, ratio_name = given.get("train.warmup_ratio", (0, "train.warmup_ratio"))
    steps_layer, steps_name = given.get("train.warmup_steps", (-1, "train.warmup_steps"))
    if steps_layer > ratio_layer:
        cfg.train.warmup_ratio = None
        return
    if not 0 <= ratio < 1:
        raise ConfigError(f"{ratio_name} must be in [0, 1) (a fraction of the optimizer steps), got {ratio}")
    steps = math.ceil(ratio * total_updates(cfg))
    if steps_layer == ratio_layer and cfg.train.warmup_steps != steps:
        raise ConfigError(f"{ratio_name}={ratio} gives {steps} warm-up steps of {total_updates(cfg)}, but "
                          f"{steps_name}={cfg.train.warmup_steps} is given too; keep one")
    cfg.train.warmup_steps = steps


def algo_spec(cfg: Config) -> AlgoSpec:
    """The validated algorithm spec of a config; errors are reported against the config's keys."""
    try:
        return preset(cfg.algorithm, **cfg.algo)
    except (KeyError, ValueError) as err:
        where = "algorithm" if cfg.algorithm not in _preset_names() else "algo"
        raise ConfigError(f"{where}: {err}") from None


def _preset_names() -> list[str]:
    from grouprl.algo import PRESETS

    return list(PRESETS)


def _check_values(cfg: Config) -> None:
    rules = [
        (cfg.rollout.num_generations >= 2, "rollout.num_generations",
         f"must be >= 2 (got {cfg.rollout.num_generations}): a group of one has no baseline; use 4, 8 or 16"),
        (cfg.rollout.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1"),
        (cfg.rollout.temperature > 0, "rollout.temperature",
         "must be > 0 for sampling (greedy gives equal groups)"),
        (0 < cfg.rollout.top_p <= 1, "rollout.top_p", "must be in (0, 1]"),
        (cfg.rollout.top_k >= 0, "rollout.top_k", "must be >= 0 (0 turns it off)"),
        (cfg.rollout.backend in ROLLOUT_BACKENDS, "rollout.backend",
         f"must be one of {', '.join(ROLLOUT_BACKENDS)}"),
        (cfg.rollout.max_turns >= 1, "rollout.max_turns",
         f"must be >= 1 (got {cfg.rollout.max_turns}): an episode needs a model turn; 1 is single-turn"),
        (cfg.rollout.tool_parser in TOOL_PARSER_NAMES, "rollout.tool_parser",
         f"must be one of {', '.join(TOOL_PARSER_NAMES)}"),
        (cfg.rollout.tool_timeout > 0, "rollout.tool_timeout", "must be > 0 seconds"),
        (cfg.rollout.tool_result_max_chars >= 1, "rollout.tool_result_max_chars", "must be >= 1"),
        (cfg.train.steps >= 0, "train.steps", "must be >= 0"),
        (cfg.train.prompts_per_step >= 1, "train.prompts_per_step", "must be >= 1"),
        (cfg.train.num_iterations >= 1, "train.num_iterations", "must be >= 1"),
        (1 <= cfg.train.mini_batches <= cfg.train.prompts_per_step, "train.mini_batches",
         f"must be between 1 and train.prompts_per_step ({cfg.train.prompts_per_step}): mini-batches hold "
         "whole groups"),
        (cfg.train.micro_batch_size >= 0, "train.micro_batch_size",
         "must be >= 0 (0: sized by train.activation_budget_mib)"),
        (cfg.train.micro_batch_order in ("rows", "length"), "train.micro_batch_order",
         "must be rows or length"),
        (cfg.train.activation_budget_mib >= 0, "train.activation_budget_mib",
         "must be >= 0 (MiB; 0: chosen from the free memory)"),
        (cfg.train.lr > 0, "train.lr", "must be > 0"),
        (cfg.train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (cfg.train.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0 turns clipping off)"),
        (cfg.model.dtype in ("float32", "bfloat16", "float16", "auto"), "model.dtype",
         "must be float32, bfloat16, float16 or auto"),
        (cfg.train.precision in PRECISIONS, "train.precision", f"must be one of {', '.join(PRECISIONS)}"),
        (cfg.model.attn_implementation in ATTN_IMPLEMENTATIONS, "model.attn_implementation",
         f"must be one of {', '.join(ATTN_IMPLEMENTATIONS)}"),
        (cfg.data.num_eval >= 0, "data.num_eval", "must be >= 0"),
        (cfg.eval.num_samples >= 0, "eval.num_samples", "must be >= 0"),
        (cfg.output.keep_last >= 1, "output.keep_last", "must be >= 1"),
        (cfg.reward_timeout > 0, "reward_timeout", "must be > 0 seconds"),
        (cfg.reward_memory_mb >= 0, "reward_memory_mb", "must be >= 0 MiB (0: no limit)"),
        (cfg.output.wandb_mode in (None, "online", "offline"), "output.wandb_mode",
         "must be online, offline or null"),
        (cfg.data.path is not None or cfg.data.task is not None, "data", "set data.task or data.path"),
        (cfg.train.collective_timeout > 0, "train.collective_timeout", "must be > 0 seconds"),
        (cfg.model.lora.r >= 0, "model.lora.r", "must be >= 0 (0 turns LoRA off)"),
        (0 <= cfg.model.lora.dropout < 1, "model.lora.dropout", "must be in [0, 1)"),
        (bool(cfg.model.lora.target_modules)
         and all(isinstance(m, str) for m in cfg.model.lora.target_modules),
         "model.lora.target_modules", "must be a non-empty list of module names, e.g. [q_proj, v_proj]"),
        (not cfg.output.save_merged or cfg.model.lora.r > 0, "output.save_merged",
         "only applies with LoRA (model.lora.r > 0): a full fine-tune's checkpoint already is the whole "
         "model"),
    ]
    for ok, key, message in rules:
        if not ok:
            raise ConfigError(f"{key} {message}")
    unknown = [name for name in cfg.output.report_to if name not in REPORT_TO]
    if unknown:
        raise ConfigError(f"output.report_to: unknown {', '.join(map(str, unknown))}; use some of "
                          f"{', '.join(REPORT_TO)} (metrics.jsonl is always written)")
    from grouprl.optim import lr_factor

    lr_factor(cfg.train.lr_scheduler, warmup_steps=cfg.train.warmup_steps, total_steps=total_updates(cfg),
              kwargs=cfg.train.lr_scheduler_kwargs)


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    data = config_to_dict(cfg)
    data["train"]["adam_betas"] = list(data["train"]["adam_betas"])
    data["resolved_algorithm"] = dataclasses.asdict(algo_spec(cfg))
    return yaml.safe_dump(data, sort_keys=False)
