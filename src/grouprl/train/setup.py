"""Everything a run needs, built once before the first step: models, data, rewards, optimizer.

``build`` checks data and rewards before it loads any model, so a bad input fails fast and before anything
is written.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grouprl.config import Config, algo_spec
from grouprl.data.prompts import PromptSource, load_rows, task_rows
from grouprl.data.tasks import get_task
from grouprl.logging.sinks import say
from grouprl.model.assets import resolve_model_path
from grouprl.model.load import format_prompt, load_model, load_tokenizer
from grouprl.rewards import RewardRunner, resolve_rewards
from grouprl.rollout import RolloutBackend, build_backend
from grouprl.train.optim import build_optimizer, build_scheduler


@dataclass
class Setup:
    """Everything a run needs, built once before the first step."""

    cfg: Config
    run_dir: Path
    tokenizer: object
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    backend: RolloutBackend
    rewards: RewardRunner
    source: PromptSource
    eval_rows: list[dict]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rows(cfg: Config) -> tuple[list[dict], list[dict], list]:
    """Training rows, evaluation rows, and the default reward functions."""
    d = cfg.data
    if d.path is not None:
        train = load_rows(d.path, d.prompt_column)
        evals = load_rows(d.eval_path, d.prompt_column)[: d.num_eval] if d.eval_path else []
        default = get_task(d.task, **d.task_kwargs).reward_fns if d.task else []
        return train, evals, default
    task = get_task(d.task, **d.task_kwargs)
    return (task_rows(d.task, d.task_kwargs, "train", d.num_train, d.seed),
            task_rows(d.task, d.task_kwargs, "eval", d.num_eval, d.seed) if d.num_eval else [],
            task.reward_fns)


def _check_context(tokenizer, model, rows: list[dict], cfg: Config) -> None:
    """A prompt plus the generation budget must fit the model's context window."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return
    for i, row in enumerate(rows):
        text = format_prompt(tokenizer, row["prompt"], cfg.data.system_prompt)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n + cfg.rollout.max_new_tokens > limit:
            raise ValueError(f"prompt {i} ({text[:40]!r}...) has {n} tokens; with rollout.max_new_tokens="
                             f"{cfg.rollout.max_new_tokens} it exceeds the model's context of {limit} tokens; "
                             "shorten or drop long prompts, or lower rollout.max_new_tokens")


def build(cfg: Config, run_dir: Path) -> Setup:
    """Load models, data, rewards and the optimizer. Raises before anything is written on bad input."""
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = algo_spec(cfg)
    train_rows, eval_rows, default_rewards = _rows(cfg)  # data and rewards first: cheap to check, fail fast
    rewards = resolve_rewards(cfg.rewards, default_rewards)
    if not rewards:
        raise ValueError("no reward function: set rewards: [...] or use a built-in data.task")
    path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.model.trust_remote_code)
    policy = load_model(path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    reference = None
    if spec.needs_reference:
        if cfg.model.ref_name_or_path:
            reference = load_model(resolve_model_path(cfg.model.ref_name_or_path), dtype=cfg.model.dtype,
                                   trust_remote_code=cfg.model.trust_remote_code)
        else:
            reference = copy.deepcopy(policy)
        reference.requires_grad_(False).eval()
    _check_context(tokenizer, policy, train_rows + eval_rows, cfg)
    optimizer = build_optimizer(policy.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                betas=cfg.train.adam_betas)
    total_updates = cfg.train.steps * cfg.train.num_iterations * cfg.train.mini_batches
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.train.warmup_steps, total_steps=total_updates,
                                kind=cfg.train.lr_scheduler)
    if spec.soft_overlong and spec.overlong_max_len > cfg.rollout.max_new_tokens:
        say(f"warning: algo.overlong_max_len={spec.overlong_max_len} exceeds rollout.max_new_tokens="
            f"{cfg.rollout.max_new_tokens}, so the soft overlong penalty never applies; set "
            f"algo.overlong_max_len={cfg.rollout.max_new_tokens} (and algo.overlong_buffer_len) to use it")
    runner = RewardRunner(rewards, timeout=cfg.reward_timeout, fallback=cfg.reward_fallback,
                          isolate=cfg.reward_isolation)
    backend = build_backend(cfg.rollout.backend, policy, tokenizer)
    return Setup(cfg, run_dir, tokenizer, policy, reference, backend, runner,
                 PromptSource(train_rows, cfg.data.seed), eval_rows, optimizer, scheduler)


def prompt_texts(s: Setup, rows: list[dict]) -> list[str]:
    return [format_prompt(s.tokenizer, row["prompt"], s.cfg.data.system_prompt) for row in rows]
