"""TRL's and open-r1's names for grouprl's settings; docs/trl.md is the table with both sides' defaults.

A TRL name is accepted wherever a user writes a setting: at the top level of a YAML file and as a
``name=value`` override. There are three kinds:

- ``DIRECT``: the same setting under another name (``learning_rate`` is ``train.lr``), maybe with a
  conversion;
- ``COMBINED``: names whose grouprl value depends on other settings (TRL counts completions per device and
  optimizer steps, grouprl prompts per step and rollouts); :func:`resolve` sets them once every layer of the
  config is merged, through the ``assign`` callback of the loader (which refuses a TRL name and its grouprl
  key given together with different values);
- ``IGNORED``: what TRL or open-r1 recipes carry that means nothing here (the Hub, vLLM, mixed precision, the
  logging cadence): accepted, and listed in one warning;
- ``FIXED``: TRL knobs of the algorithm or the optimizer that grouprl has no setting for: accepted at the
  value grouprl's behaviour equals, refused at any other (the run would silently differ from TRL's).

Settings that are not written keep grouprl's defaults, never TRL's (``algorithm=trl_defaults`` is the preset
with GRPOConfig()'s algorithm fields).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable

from grouprl.errors import ConfigError


def _report_to(value) -> list:
    """TRL's report_to: a name or a list; "none" is none. "all" (whatever is installed) is refused: be
    explicit."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        raise ConfigError(f"report_to: expected a name or a list of names, got {value!r}")
    if "all" in names:
        raise ConfigError("report_to: 'all' is not supported; list the trackers, e.g. [tensorboard, wandb]")
    return [name for name in names if name != "none"]


def _bound(value, unbounded: float):
    """TRL's None (no bound on that side) as grouprl's value that bounds nothing."""
    return unbounded if value is None else value


# TRL name -> grouprl key, or (grouprl key, value conversion).
DIRECT: dict[str, str | tuple[str, Callable]] = {
    "model_name_or_path": "model.name_or_path",
    "torch_dtype": "model.dtype",
    "dtype": "model.dtype",
    "trust_remote_code": "model.trust_remote_code",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "lora_alpha": "model.lora.alpha",
    "lora_dropout": "model.lora.dropout",
    "lora_target_modules": "model.lora.target_modules",
    "dataset_name": "data.path",
    "dataset_config": "data.dataset_config",
    "dataset_train_split": "data.split",
    "dataset_prompt_column": "data.prompt_column",
    "chat_template": "data.chat_template",
    "chat_template_kwargs": "data.chat_template_kwargs",
    "system_prompt": "data.system_prompt",
    "data_seed": "data.seed",
    "num_generations": "rollout.num_generations",
    "max_completion_length": "rollout.max_new_tokens",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "top_k": "rollout.top_k",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "num_iterations": "train.num_iterations",
    "seed": "train.seed",
    "lr_scheduler_type": "train.lr_scheduler",
    "lr_scheduler_kwargs": "train.lr_scheduler_kwargs",
    "warmup_ratio": "train.warmup_ratio",
    "ddp_timeout": "train.collective_timeout",
    "beta": "algo.beta",
    "loss_type": "algo.loss_type",
    "scale_rewards": "algo.scale_rewards",
    "importance_sampling_level": "algo.importance_sampling_level",
    "delta": "algo.clip_ratio_c",
    "mask_truncated_completions": "algo.overlong_filter",  # adds / removes drop_truncated in algo.filters
    "sapo_temperature_pos": "algo.tau_pos",
    "sapo_temperature_neg": "algo.tau_neg",
    "output_dir": "output.run_dir",
    "save_total_limit": "output.keep_last",
    "num_generations_eval": "eval.num_samples",
    "report_to": ("output.report_to", _report_to),
    # TRL's vLLM-to-trainer importance sampling (TRL >= 1.6; ``_cap`` is its deprecated spelling of
    # ``_clip_max``): grouprl's rollout correction, whatever the backend; None is "no bound"
    "vllm_importance_sampling_clip_max": ("algo.rollout_correction_max", lambda v: _bound(v, math.inf)),
    "vllm_importance_sampling_cap": ("algo.rollout_correction_max", lambda v: _bound(v, math.inf)),
    "vllm_importance_sampling_clip_min": ("algo.rollout_correction_min", lambda v: _bound(v, 0.0)),
}

# TRL name -> the grouprl key it decides (with other settings); see resolve().
COMBINED: dict[str, str] = {
    "per_device_train_batch_size": "train.prompts_per_step",
    "gradient_accumulation_steps": "train.prompts_per_step",
    "generation_batch_size": "train.prompts_per_step",
    "steps_per_generation": "train.mini_batches",
    "max_steps": "train.steps",
    "num_train_epochs": "train.steps",
    "save_steps": "output.save_every",
    "eval_steps": "eval.every",
    "warmup_steps": "train.warmup_steps",
    "epsilon": "algo.epsilon_low",
    "epsilon_high": "algo.epsilon_high",
    "adam_beta1": "train.adam_betas",
    "adam_beta2": "train.adam_betas",
    "reward_funcs": "rewards",
    "reward_weights": "rewards",
    "use_peft": "model.lora.r",
    "lora_r": "model.lora.r",
    "vllm_importance_sampling_correction": "algo.rollout_correction",
    "vllm_importance_sampling_mode": "algo.rollout_correction",
}

IGNORED = frozenset({
    "hub_model_id", "hub_strategy", "hub_private_repo", "hub_model_revision", "push_to_hub",
    "push_to_hub_revision", "overwrite_hub_revision", "model_revision", "attn_implementation",
    "model_init_kwargs", "log_level", "logging_strategy", "logging_first_step", "logging_steps",
    "logging_dir", "overwrite_output_dir", "do_train", "do_eval", "eval_strategy",
    "per_device_eval_batch_size", "use_vllm", "save_strategy", "save_only_model", "bf16", "fp16", "tf32",
    "gradient_checkpointing_kwargs", "log_completions", "num_completions_to_print", "log_unique_prompts",
    "wandb_entity", "wandb_project", "wandb_run_group", "wandb_log_unique_prompts", "benchmarks", "callbacks",
    "max_prompt_length", "dataset_configs", "dataset_test_split", "num_processes", "remove_unused_columns",
    "shuffle_dataset", "ds3_gather_for_generation", "dataloader_num_workers", "deepspeed", "run_name",
    "torch_compile", "use_liger_kernel", "disable_dropout", "resume_from_checkpoint", "pad_to_multiple_of",
    "use_transformers_continuous_batching",
})
IGNORED_PREFIXES = ("vllm_",)

# TRL name -> the values grouprl's fixed behaviour equals (the first is the one to write).
FIXED: dict[str, tuple] = {
    "repetition_penalty": (1.0,),
    "min_p": (None, 0.0),
    "generation_kwargs": (None, {}),
    "top_entropy_quantile": (1.0,),
    "entropy_coef": (0.0,),
    "use_adaptive_entropy": (False,),
    "multi_objective_aggregation": ("sum_then_normalize",),
    "off_policy_mask_threshold": (None,),
    "use_bias_correction_kl": (False,),
    "sync_ref_model": (False,),
    "cast_lm_head_to_fp32": (False,),
    "optim": ("adamw_torch_fused", "adamw_torch"),
    "adam_epsilon": (1e-8,),
}

# TRL's defaults that the combined names fall back on (TRL 1.16 GRPOConfig / TrainingArguments).
TRL_PER_DEVICE_BATCH = 8
TRL_EPOCHS = 3.0
TRL_CISPO_CAP = 5.0  # TRL's recommended epsilon_high with loss_type="cispo" (an absolute cap on the weight)
TRL_LORA_R = 16
TRL_IS_MODE = "sequence_mask"  # vllm_importance_sampling_mode's default (TRL >= 0.26)


def is_ignored(name: str) -> bool:
    mapped = name in DIRECT or name in COMBINED
    return name in IGNORED or (name.startswith(IGNORED_PREFIXES) and not mapped)


def is_trl_name(name: str) -> bool:
    return name in DIRECT or name in COMBINED or name in FIXED or is_ignored(name)


def split_layer(data) -> tuple[object, dict, list[str]]:
    """One layer (a YAML file's mapping, or one override) → (its grouprl part, its TRL values, ignored
    names)."""
    if not isinstance(data, dict):
        return data, {}, []
    for name, accepted in FIXED.items():
        if name in data and data[name] not in accepted:
            raise ConfigError(f"{name}={data[name]!r} (TRL) has no counterpart in grouprl, which always runs "
                              f"as {name}={accepted[0]!r}; remove it, or the run would differ from TRL's "
                              "(docs/trl.md)")
    rest = {k: v for k, v in data.items() if not is_trl_name(k)}
    trl = {k: v for k, v in data.items() if k in DIRECT or k in COMBINED}
    return rest, trl, [k for k in data if is_ignored(k)]


def key_of(name: str) -> str:
    target = DIRECT.get(name) or COMBINED[name]
    return target[0] if isinstance(target, tuple) else target


def suggest(unknown: str, keys: list[str]) -> str | None:
    """The closest grouprl key to ``unknown`` (matched on the dotted key, its last part or a TRL name), with
    the TRL name of that key when there is one: ``"rollout.max_new_tokens (TRL: max_completion_length)"``."""
    last = unknown.rsplit(".", 1)[-1]
    trl_names = {name: key_of(name) for name in (*DIRECT, *COMBINED)}
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    scored = [(ratio(unknown, key), key, None) for key in keys]
    scored += [(ratio(last, key.rsplit(".", 1)[-1]), key, None) for key in keys]
    scored += [(ratio(last, name), key, name) for name, key in trl_names.items()]
    score, key, name = max(scored, key=lambda t: t[0])
    if score < 0.75:
        return None
    spellings = [n for n, k in trl_names.items() if k == key]
    name = name or max(spellings, key=lambda n: difflib.SequenceMatcher(None, last, n).ratio(), default=None)
    return f"{key} (TRL: {name})" if name else key


def _rollouts(value, cfg, name: str) -> int:
    """A TRL count of optimizer steps as grouprl rollouts (each does num_iterations × mini_batches updates);
    below 1: a fraction of the run, as in TRL."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of steps, got {value!r}")
    if value < 1:
        return max(1, math.ceil(value * cfg.train.steps))
    return math.ceil(value / (cfg.train.num_iterations * cfg.train.mini_batches))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return value


def resolve(cfg, trl: dict, assign: Callable, dataset_size: Callable, clip: Callable) -> None:
    """Write the TRL values into ``cfg`` through ``assign(names, key, value, mode="set")``: mode "default"
    leaves a key the user gave alone, "force" sets it whatever was given (reward_weights weighs the list).

    ``dataset_size(cfg)`` is the number of training prompts (for ``num_train_epochs``); ``clip(cfg)`` the
    resolved algorithm's objective (TRL's ``epsilon_high`` is an absolute cap for CISPO).
    """
    for name, target in DIRECT.items():
        if name in trl:
            key, convert = target if isinstance(target, tuple) else (target, None)
            assign((name,), key, convert(trl[name]) if convert else trl[name])
    _batch(cfg, trl, assign)
    _steps(cfg, trl, assign, dataset_size)
    for name, key in (("save_steps", "output.save_every"), ("eval_steps", "eval.every")):
        if name in trl:
            assign((name,), key, _rollouts(trl[name], cfg, name))
    if "warmup_steps" in trl:
        value = trl["warmup_steps"]
        if isinstance(value, float) and 0 < value < 1:  # transformers 5: a warm-up below 1 is a ratio
            assign(("warmup_steps",), "train.warmup_ratio", value)
        else:
            assign(("warmup_steps",), "train.warmup_steps",
                   int(value) if isinstance(value, float) and value.is_integer() else value)
    if "adam_beta1" in trl or "adam_beta2" in trl:
        betas = (trl.get("adam_beta1", cfg.train.adam_betas[0]),
                 trl.get("adam_beta2", cfg.train.adam_betas[1]))
        assign(tuple(n for n in ("adam_beta1", "adam_beta2") if n in trl), "train.adam_betas", list(betas))
    _clip(cfg, trl, assign, clip)
    _correction(trl, assign)
    _rewards(cfg, trl, assign)
    if trl.get("use_peft"):
        assign(("use_peft", *(("lora_r",) if "lora_r" in trl else ())), "model.lora.r",
               trl.get("lora_r", TRL_LORA_R))


def _batch(cfg, trl: dict, assign: Callable) -> None:
    """TRL generates per_device_train_batch_size × world size × steps_per_generation completions at a time
    (steps_per_generation: gradient_accumulation_steps unless it or generation_batch_size is given) and takes
    an optimizer step every gradient_accumulation_steps micro-steps: that / num_generations prompts per
    rollout, and steps_per_generation / gradient_accumulation_steps mini-batches."""
    names = tuple(n for n in ("per_device_train_batch_size", "gradient_accumulation_steps",
                              "generation_batch_size", "steps_per_generation") if n in trl)
    if not names:
        return
    per_device = _positive_int(trl.get("per_device_train_batch_size", TRL_PER_DEVICE_BATCH),
                               "per_device_train_batch_size")
    accumulation = _positive_int(trl.get("gradient_accumulation_steps", 1), "gradient_accumulation_steps")
    world = int(os.environ.get("WORLD_SIZE", 1))
    if "generation_batch_size" in trl and "steps_per_generation" in trl:
        raise ConfigError("generation_batch_size and steps_per_generation cannot both be given (TRL refuses "
                          "it too); keep one")
    if "generation_batch_size" in trl:
        size = _positive_int(trl["generation_batch_size"], "generation_batch_size")
        if size % (per_device * world):
            raise ConfigError(f"generation_batch_size={size} must be a multiple of "
                              f"per_device_train_batch_size={per_device} x {world} processes")
        per_generation = size // (per_device * world)
    else:
        per_generation = _positive_int(trl.get("steps_per_generation", accumulation), "steps_per_generation")
    completions, G = per_device * world * per_generation, cfg.rollout.num_generations
    if completions % G:
        raise ConfigError(f"per_device_train_batch_size={per_device} x {world} processes x {per_generation} "
                          f"micro-steps per generation = {completions} completions per step, not a multiple "
                          f"of num_generations={G}: TRL needs whole groups too; make the product a multiple "
                          f"of {G}")
    if per_generation % accumulation:
        raise ConfigError(f"{per_generation} micro-steps per generation is not a multiple of "
                          f"gradient_accumulation_steps={accumulation}: grouprl's mini-batches are whole "
                          "optimizer steps of one rollout")
    assign(names, "train.prompts_per_step", completions // G)
    if per_generation != accumulation:
        assign(names, "train.mini_batches", per_generation // accumulation)
    # TRL's micro-batch: completions per forward/backward per process
    if "per_device_train_batch_size" in trl:
        assign(("per_device_train_batch_size",), "train.micro_batch_size", per_device)


def _steps(cfg, trl: dict, assign: Callable, dataset_size: Callable) -> None:
    """max_steps > 0 counts optimizer steps; otherwise (TRL's -1) num_train_epochs passes over the prompts."""
    max_steps = trl.get("max_steps")
    if isinstance(max_steps, (int, float)) and not isinstance(max_steps, bool) and max_steps > 0:
        assign(("max_steps",), "train.steps", _rollouts(max_steps, cfg, "max_steps"))
    elif max_steps is not None or "num_train_epochs" in trl:
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, float))):
            raise ConfigError(f"max_steps: expected a number of steps (-1: use num_train_epochs), "
                              f"got {max_steps!r}")
        epochs = trl.get("num_train_epochs", TRL_EPOCHS)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
            raise ConfigError(f"num_train_epochs: expected a positive number, got {epochs!r}")
        names = tuple(n for n in ("max_steps", "num_train_epochs") if n in trl)
        assign(names, "train.steps", math.ceil(epochs * dataset_size(cfg) / cfg.train.prompts_per_step))


def _clip(cfg, trl: dict, assign: Callable, clip: Callable) -> None:
    """TRL's epsilon / epsilon_high; with CISPO's objective epsilon_high is TRL's absolute cap on the weight
    (grouprl's bound is 1 + epsilon_high) and epsilon is not used (no lower bound)."""
    if "epsilon" not in trl and "epsilon_high" not in trl and trl.get("loss_type") != "cispo":
        return
    if clip(cfg) == "is_weight_clip":
        if "epsilon_high" in trl:
            cap = trl["epsilon_high"]
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap < 1:
                raise ConfigError(f"epsilon_high={cap!r} with loss_type=cispo is TRL's cap on the importance "
                                  f"weight and must be >= 1 (TRL recommends {TRL_CISPO_CAP})")
            assign(("epsilon_high",), "algo.epsilon_high", float(cap) - 1)
        elif trl.get("loss_type") == "cispo":
            assign(("loss_type",), "algo.epsilon_high", TRL_CISPO_CAP - 1, mode="default")
        return
    for name in ("epsilon", "epsilon_high"):
        if name in trl:
            assign((name,), f"algo.{name}", trl[name])


def _correction(trl: dict, assign: Callable) -> None:
    """vllm_importance_sampling_correction (TRL's default true) and _mode (default sequence_mask) are one
    grouprl field, algo.rollout_correction: the mode, or none when the correction is off."""
    names = tuple(n for n in ("vllm_importance_sampling_correction", "vllm_importance_sampling_mode")
                  if n in trl)
    if not names:
        return
    on = trl.get("vllm_importance_sampling_correction", True)
    if not isinstance(on, bool):
        raise ConfigError(f"vllm_importance_sampling_correction: expected true or false, got {on!r}")
    assign(names, "algo.rollout_correction", trl.get("vllm_importance_sampling_mode", TRL_IS_MODE) if on
           else "none")


def _rewards(cfg, trl: dict, assign: Callable) -> None:
    """reward_funcs is the list of reward names; reward_weights their weights, in order."""
    if "reward_funcs" in trl:
        funcs = trl["reward_funcs"]
        assign(("reward_funcs",), "rewards", [funcs] if isinstance(funcs, str) else funcs)
    if "reward_weights" not in trl:
        return
    weights, entries = trl["reward_weights"], cfg.rewards
    if not isinstance(weights, list):
        raise ConfigError(f"reward_weights: expected a list of numbers, got {weights!r}")
    if not entries:
        raise ConfigError("reward_weights needs the list of rewards it weighs: set reward_funcs (TRL) or "
                          "rewards")
    if len(weights) != len(entries):
        names = ", ".join(str(e.get("name") if isinstance(e, dict) else e) for e in entries)
        raise ConfigError(f"reward_weights has {len(weights)} weights for {len(entries)} rewards ({names}); "
                          "give one weight per reward, in order")
    weighted = []
    for entry, weight in zip(entries, weights):
        entry = dict(entry) if isinstance(entry, dict) else {"name": entry}
        if "weight" in entry and entry["weight"] != weight:
            raise ConfigError(f"reward_weights gives {entry.get('name')!r} weight {weight!r} but rewards "
                              f"gives it {entry['weight']!r}; keep one")
        weighted.append({**entry, "weight": weight})
    assign(("reward_weights",), "rewards", weighted, mode="force")
