"""Build a ``Config`` from YAML and ``a.b=c`` overrides, checking every key and type on the way in."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from grouprl.algo import AlgoSpec, preset
from grouprl.config.schema import ROLLOUT_BACKENDS, Config
from grouprl.errors import ConfigError, read_utf8


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
            raise ConfigError(f"unknown config key '{where}'; known keys here: {', '.join(sorted(fields))}")
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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Schema defaults → YAML file → overrides; then the algorithm spec is resolved and validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; check the path passed to --config")
        try:
            data = yaml.safe_load(read_utf8(path, ConfigError)) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        _merge(cfg, data)
    for text in overrides:
        _merge(cfg, parse_override(text))
    algo_spec(cfg)  # resolve now so a bad algorithm setting fails before anything loads
    _check_values(cfg)
    return cfg


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
        (cfg.rollout.temperature > 0, "rollout.temperature", "must be > 0 for sampling (greedy gives equal groups)"),
        (0 < cfg.rollout.top_p <= 1, "rollout.top_p", "must be in (0, 1]"),
        (cfg.rollout.top_k >= 0, "rollout.top_k", "must be >= 0 (0 turns it off)"),
        (cfg.rollout.backend in ROLLOUT_BACKENDS, "rollout.backend", f"must be one of {', '.join(ROLLOUT_BACKENDS)}"),
        (cfg.train.steps >= 0, "train.steps", "must be >= 0"),
        (cfg.train.prompts_per_step >= 1, "train.prompts_per_step", "must be >= 1"),
        (cfg.train.num_iterations >= 1, "train.num_iterations", "must be >= 1"),
        (1 <= cfg.train.mini_batches <= cfg.train.prompts_per_step, "train.mini_batches",
         f"must be between 1 and train.prompts_per_step ({cfg.train.prompts_per_step}): mini-batches hold whole groups"),
        (cfg.train.micro_batch_size >= 0, "train.micro_batch_size", "must be >= 0 (0: sized by train.activation_budget_mib)"),
        (cfg.train.activation_budget_mib >= 1, "train.activation_budget_mib", "must be >= 1 (MiB)"),
        (cfg.train.lr > 0, "train.lr", "must be > 0"),
        (cfg.train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (cfg.train.lr_scheduler in ("constant", "linear", "cosine"), "train.lr_scheduler",
         "must be constant, linear or cosine"),
        (cfg.train.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0 turns clipping off)"),
        (cfg.model.dtype in ("float32", "bfloat16", "float16", "auto"), "model.dtype",
         "must be float32, bfloat16, float16 or auto"),
        (cfg.data.num_eval >= 0, "data.num_eval", "must be >= 0"),
        (cfg.eval.num_samples >= 0, "eval.num_samples", "must be >= 0"),
        (cfg.output.keep_last >= 1, "output.keep_last", "must be >= 1"),
        (cfg.reward_timeout > 0, "reward_timeout", "must be > 0 seconds"),
        (cfg.reward_memory_mb >= 0, "reward_memory_mb", "must be >= 0 MiB (0: no limit)"),
        (cfg.output.wandb_mode in (None, "online", "offline"), "output.wandb_mode", "must be online, offline or null"),
        (cfg.data.path is not None or cfg.data.task is not None, "data", "set data.task or data.path"),
        (cfg.train.collective_timeout > 0, "train.collective_timeout", "must be > 0 seconds"),
        (cfg.model.lora.r >= 0, "model.lora.r", "must be >= 0 (0 turns LoRA off)"),
        (0 <= cfg.model.lora.dropout < 1, "model.lora.dropout", "must be in [0, 1)"),
        (bool(cfg.model.lora.target_modules) and all(isinstance(m, str) for m in cfg.model.lora.target_modules),
         "model.lora.target_modules", "must be a non-empty list of module names, e.g. [q_proj, v_proj]"),
        (not cfg.output.save_merged or cfg.model.lora.r > 0, "output.save_merged",
         "only applies with LoRA (model.lora.r > 0): a full fine-tune's checkpoint already is the whole model"),
    ]
    for ok, key, message in rules:
        if not ok:
            raise ConfigError(f"{key} {message}")


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    data = config_to_dict(cfg)
    data["train"]["adam_betas"] = list(data["train"]["adam_betas"])
    data["resolved_algorithm"] = dataclasses.asdict(algo_spec(cfg))
    return yaml.safe_dump(data, sort_keys=False)
