"""Everything a run needs, built once before the first step: models, data, rewards, optimizer.

``build`` checks data and rewards before it loads any model, so a bad input fails fast and before anything
is written. Under ``torchrun`` it also joins the process group and wraps the training pass in DDP; every rank
builds the same objects from the same seed (so the prompt cursor advances identically everywhere).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from grouprl import distributed
from grouprl.algo import AlgoSpec
from grouprl.config import Config, algo_spec
from grouprl.config.load import total_updates
from grouprl.data.prompts import PromptSource, load_rows, task_rows
from grouprl.data.tasks import get_task
from grouprl.distributed import sharding
from grouprl.env import builtin_info, check_environment, load_environment
from grouprl.errors import ConfigError, DataError
from grouprl.logging.sinks import say
from grouprl.model.assets import resolve_model_path
from grouprl.model.device import Precision, check_attn_implementation, resolve_device, resolve_precision
from grouprl.model.load import check_model_dir, format_prompt, load_model, load_tokenizer
from grouprl.model.lora import apply_lora
from grouprl.model.memory import (
    activation_bytes_per_token,
    auto_activation_budget_mib,
    describe,
    enable_gradient_checkpointing,
    estimate,
    free_memory_mib,
    micro_batch_rows,
)
from grouprl.model.passes import TrainingPass
from grouprl.optim import build_optimizer, build_scheduler
from grouprl.rewards import (
    REWARDS,
    Reward,
    RewardRunner,
    RewardState,
    dataset_columns,
    resolve_rewards,
    verifier_name,
)
from grouprl.rollout import RolloutBackend, build_backend, unsupported_reason
from grouprl.train.policy import (
    AdapterOffReference,
    AdapterWeights,
    FrozenReference,
    FullWeights,
    ShardedWeights,
)


@dataclass
class Setup:
    """Everything a run needs, built once before the first step."""

    cfg: Config
    spec: AlgoSpec  # the resolved algorithm: algo_spec(cfg)
    run_dir: Path
    tokenizer: object
    policy: torch.nn.Module  # the HF model that computes (LoRA layers injected in place, if any)
    reference: FrozenReference | AdapterOffReference | None
    backend: RolloutBackend
    rewards: RewardRunner
    source: PromptSource
    eval_rows: list[dict]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    dist: distributed.Dist = distributed.SINGLE
    scorer: torch.nn.Module | None = None  # the training pass, TrainingPass(policy), wrapped when world > 1
    weights: FullWeights | AdapterWeights | ShardedWeights | None = None  # what checkpoints hold
    full_weights: Callable[[], AbstractContextManager] = nullcontext  # collective: full weights for sampling
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # model.device, resolved
    precision: Precision = field(default_factory=lambda: Precision("fp32", "float32"))  # train.precision
    autocast: Callable[[], AbstractContextManager] = nullcontext  # every forward pass runs in it
    memory_note: str = ""  # the start-up estimate of peak memory by phase, printed by rank 0
    activation_budget_mib: float = 320.0  # train.activation_budget_mib, or what 0 (auto) chose at start-up
    last_eval: dict = field(default_factory=dict)  # the newest held-out metrics, for checkpoints' model cards
    entropy_alpha: float | None = None  # (i) the adapted entropy coefficient, with an entropy target

    def close(self) -> None:
        """Stop the workers: the reward functions', and the environments' when there are any."""
        self.rewards.close()
        getattr(self.backend, "close", lambda: None)()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rows(cfg: Config) -> tuple[list[dict], list[dict], list]:
    """Training rows, evaluation rows, and the default reward functions (a built-in environment's own
    prompts and rewards when no ``data.path`` is given)."""
    d = cfg.data
    env = builtin_info(cfg.environment) if cfg.environment else {}
    if env.get("rows") and d.path is None:
        rewards = [REWARDS.get(name) for name in env["rewards"]]
        return env["rows"]("train", d.num_train, d.seed), env["rows"]("eval", d.num_eval, d.seed), rewards
    if d.path is not None:
        train = load_rows(d.path, d.prompt_column, config=d.dataset_config, split=d.split,
                          data_files=d.data_files)
        evals = load_rows(d.eval_path, d.prompt_column)[: d.num_eval] if d.eval_path else []
        default = get_task(d.task, **d.task_kwargs).reward_fns if d.task else []
        return train, evals, default
    task = get_task(d.task, **d.task_kwargs)
    return (task_rows(d.task, d.task_kwargs, "train", d.num_train, d.seed),
            task_rows(d.task, d.task_kwargs, "eval", d.num_eval, d.seed) if d.num_eval else [],
            task.reward_fns)


def _check_context(tokenizer, model, rows: list[dict], cfg: Config, tools: list[dict] | None = None) -> int:
    """A prompt plus the generation budget must fit the model's context window; returns the longest prompt.
    With an environment's ``tools``, the prompt is counted as the episode renders it: with their schemas (in
    the chat template's ``tools=``)."""
    limit = getattr(model.config, "max_position_embeddings", None) or float("inf")
    kwargs = dict(cfg.data.chat_template_kwargs or {})
    if tools and tokenizer.chat_template:
        kwargs["tools"] = tools
    longest = 0
    for i, row in enumerate(rows):
        try:
            text = format_prompt(tokenizer, row["prompt"], cfg.data.system_prompt, kwargs)
        except DataError as err:
            raise DataError(f"prompt {i}: {err}") from None
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        longest = max(longest, n)
        if n + cfg.rollout.max_new_tokens > limit:
            schemas = " (the tools' schemas included)" if "tools" in kwargs else ""
            raise DataError(f"prompt {i} ({text[:40]!r}...) has {n} tokens{schemas}; with "
                            f"rollout.max_new_tokens={cfg.rollout.max_new_tokens} it exceeds the model's "
                            f"context of {limit} tokens; "
                            "shorten or drop long prompts, or lower rollout.max_new_tokens")
    return longest


def check_world(cfg: Config, world: int) -> None:
    """Whole groups per rank: the global batch of B prompts must split evenly over the processes."""
    B = cfg.train.prompts_per_step
    if B % world:
        fits = [w for w in range(1, B + 1) if B % w == 0]
        raise ConfigError(f"train.prompts_per_step={B} cannot be split into whole groups over {world} "
                          f"processes (WORLD_SIZE={world}); set train.prompts_per_step to a multiple of "
                          f"{world} (e.g. {B + world - B % world}), or run {', '.join(map(str, fits))} "
                          "processes")


def _policy(cfg: Config, path: str, spec, device: torch.device, precision: Precision):
    """The policy, its reference and its weights-on-disk object (LoRA or full), on ``device`` with weights
    in ``precision.weights``."""
    where = {"device": device, "dtype": precision.weights, "trust_remote_code": cfg.model.trust_remote_code,
             "attn_implementation": cfg.model.attn_implementation}
    policy = load_model(path, gguf_file=cfg.model.gguf_file, **where)
    lora = cfg.model.lora
    if cfg.model.ref_name_or_path and spec.needs_reference:
        reference = FrozenReference(load_model(resolve_model_path(cfg.model.ref_name_or_path), **where))
    elif spec.needs_reference and not lora.r:
        reference = FrozenReference(copy.deepcopy(policy))
    else:
        reference = None
    if lora.r:
        peft_model = apply_lora(policy, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                                target_modules=lora.target_modules)
        # the same modules, adapters injected; computes like any HF model
        policy = peft_model.get_base_model()
        if spec.needs_reference and reference is None:
            reference = AdapterOffReference(peft_model)
        return policy, reference, peft_model
    return policy, reference, None


def build(cfg: Config, run_dir: Path) -> Setup:
    """Load models, data, rewards and the optimizer. Raises before anything is written on bad input."""
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = algo_spec(cfg)
    # where and how the run computes: a device or precision this machine lacks fails before anything loads
    device = resolve_device(cfg.model.device)
    precision = resolve_precision(cfg.train.precision, device, cfg.model.dtype)
    check_attn_implementation(cfg.model.attn_implementation)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    autocast = precision.autocast(device)
    check_world(cfg, distributed.env_world()[1])
    sharding.check(cfg.train.fsdp, distributed.env_world()[1], cfg.model.lora.r > 0)
    env = load_environment(cfg.environment) if cfg.environment else None  # a bad class fails here
    train_rows, eval_rows, default_rewards = _rows(cfg)  # data and rewards first: cheap to check, fail fast
    columns = dataset_columns(train_rows) | ({"environment_reward", "environments"} if env else set())
    rewards = resolve_rewards(cfg.rewards, default_rewards, columns)  # TRL-callable?
    if env is not None:
        rewards += environment_rewards(env)
    if not rewards:
        raise ConfigError("rewards: no reward function; set rewards: [...] or use a built-in data.task")
    verifier_name(rewards, cfg.verifier)  # a verifier that names no reward fails before any model loads
    on_gpu = [r.name for r in rewards if getattr(getattr(r.fn, "device", None), "type", "cpu") != "cpu"]
    if on_gpu and cfg.reward_isolation:
        raise ConfigError(f"rewards: {on_gpu[0]} runs on a GPU, but reward_isolation=true runs reward "
                          "functions in a forked worker, which cannot use CUDA; set reward_isolation=false, "
                          "or give it device: cpu")
    path = resolve_model_path(cfg.model.name_or_path)
    # everything that is missing, in one line, before any loader reports only its part
    if Path(path).is_dir() and not cfg.model.gguf_file:
        check_model_dir(Path(path))
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.model.trust_remote_code,
                               gguf_file=cfg.model.gguf_file)
    if cfg.data.chat_template is not None:
        tokenizer.chat_template = cfg.data.chat_template
    check_entropy_target(spec, len(tokenizer))
    policy, reference, peft_model = _policy(cfg, path, spec, device, precision)
    tools = check_environment(env, cfg.environment) if env is not None else None
    longest_prompt = _check_context(tokenizer, policy, train_rows + eval_rows, cfg, tools)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    dist = distributed.init(cfg.train.collective_timeout, device)
    dist.barrier()  # every rank has passed its checks before rank 0 writes anything
    scorer, full_weights = TrainingPass(policy, autocast), nullcontext
    if cfg.train.fsdp:
        full_weights = partial(sharding.full_weights, sharding.shard(scorer, policy, precision.compute))
    elif dist.active:
        # DDP broadcasts rank 0's weights at construction (all ranks loaded the same ones anyway). Buffers
        # (rotary tables) are deterministic, so they are not re-broadcast before every forward.
        on_gpu = {"device_ids": [device.index]} if device.type == "cuda" else {}
        scorer = torch.nn.parallel.DistributedDataParallel(scorer, forward_sync_buffers=False, **on_gpu)
    seq_len = longest_prompt + cfg.rollout.max_new_tokens
    budget, budget_note = _activation_budget(cfg, policy, dist)
    micro = cfg.train.micro_batch_size or micro_batch_rows(
        cfg.train.prompts_per_step * cfg.rollout.num_generations // dist.world, seq_len,
        activation_bytes_per_token(policy, cfg.model.gradient_checkpointing), budget)
    memory_note = describe(estimate(policy, separate_reference=isinstance(reference, FrozenReference),
                                    micro_batch_size=micro, seq_len=seq_len,
                                    chunk_size=cfg.model.logprob_chunk_size,
                                    gradient_checkpointing=cfg.model.gradient_checkpointing,
                                    shards=dist.world if cfg.train.fsdp else 1)) + budget_note \
        + f"; on {device} in {precision.name}"
    optimizer = build_optimizer(policy.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                betas=cfg.train.adam_betas)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.train.warmup_steps,
                                total_steps=total_updates(cfg), kind=cfg.train.lr_scheduler,
                                kwargs=cfg.train.lr_scheduler_kwargs)
    if dist.is_main and spec.reads("overlong_max_len") and spec.overlong_max_len > cfg.rollout.max_new_tokens:
        say(f"warning: algo.overlong_max_len={spec.overlong_max_len} exceeds rollout.max_new_tokens="
            f"{cfg.rollout.max_new_tokens}, so the soft overlong penalty never applies; set "
            f"algo.overlong_max_len={cfg.rollout.max_new_tokens} (and algo.overlong_buffer_len) to use it")
    runner = RewardRunner(rewards, timeout=cfg.reward_timeout, fallback=cfg.reward_fallback,
                          isolate=cfg.reward_isolation, memory_mb=cfg.reward_memory_mb, verifier=cfg.verifier)
    if env is not None:
        backend = environment_rollout(cfg, env, policy, tokenizer, dist.is_main, autocast)
    else:
        backend = build_backend(cfg.rollout.backend, policy, tokenizer, autocast=autocast)
        if cfg.rollout.backend == "auto" and dist.is_main and (reason := unsupported_reason(policy)):
            say(f"rollout: the fast backend cannot run this model ({reason}); using the hf backend")
    weights = FullWeights(policy) if peft_model is None else AdapterWeights(peft_model, tokenizer,
                                                                          cfg.output.save_merged)
    if cfg.train.fsdp:
        weights = ShardedWeights(scorer, policy)
    return Setup(cfg, spec, run_dir, tokenizer, policy, reference, backend, runner,
                 PromptSource(train_rows, cfg.data.seed), eval_rows, optimizer, scheduler, dist, scorer,
                 weights, full_weights, device, precision, autocast, memory_note, budget,
                 entropy_alpha=None if spec.entropy_target is None else spec.entropy_coef)


def check_entropy_target(spec: AlgoSpec, vocab_size: int) -> None:
    """(i) An entropy target must be below ``log(V)``, the entropy of the uniform next-token distribution:
    no policy can reach a larger one, so the coefficient would grow without end."""
    target = spec.entropy_target
    if target is not None and target >= math.log(vocab_size):
        raise ConfigError(f"algo.entropy_target={target} is above log(vocabulary size) = log({vocab_size}) "
                          f"= {math.log(vocab_size):.4f}, the largest entropy a next-token distribution can "
                          "have; give a smaller target")


def _activation_budget(cfg: Config, policy: torch.nn.Module, dist: distributed.Dist) -> tuple[float, str]:
    """``train.activation_budget_mib``, or (0) the one chosen from the memory free now, the smallest over
    ranks so that every rank sizes its micro-batches alike; and a note for the start-up line."""
    if cfg.train.activation_budget_mib or cfg.train.micro_batch_size:
        return float(cfg.train.activation_budget_mib or 320), ""
    trainable = sum(p.numel() * p.element_size() for p in policy.parameters() if p.requires_grad) / 2**20
    shards = dist.world if cfg.train.fsdp else 1
    free = free_memory_mib(next(policy.parameters()).device)
    budget = auto_activation_budget_mib(free, 3 * trainable / shards)  # gradients + two AdamW moments
    if dist.active:
        mine = torch.tensor([-budget], dtype=torch.float64, device="cpu")
        budget = -float(dist.all_reduce(mine, "max").item())
    found = "free memory unknown" if free is None else f"{free:,.0f} MiB free"
    return budget, f"; activation budget {budget:,.0f} MiB (auto, {found})"


def environment_rewards(env: type) -> list[Reward]:
    """An environment with ``get_reward`` is also scored by it, as the reward named ``environment`` (TRL: an
    extra reward source of weight 1)."""
    from grouprl.env import environment_reward

    return [Reward("environment", environment_reward)] if callable(getattr(env, "get_reward", None)) else []


def environment_rollout(cfg: Config, env: type, policy, tokenizer, main: bool, autocast=nullcontext):
    """Episodes of ``env`` on ``rollout.backend``: ``fast`` continues each episode in place on its KV cache,
    ``hf`` re-runs the conversation every turn (the reference); ``auto`` is fast where the model allows."""
    from grouprl.env import TOOL_PARSERS, check_environment, tool_names
    from grouprl.env.episode import EnvironmentRollout, Renderer
    from grouprl.env.host import EnvHost

    kind = cfg.rollout.backend
    if kind == "auto":
        reason = unsupported_reason(policy)
        kind = "hf" if reason else "fast"
        if reason and main:
            say(f"rollout: the fast backend cannot run this model ({reason}); episodes use the hf backend")
    backend = build_backend(kind, policy, tokenizer, autocast=autocast)
    tools = check_environment(env, cfg.environment)
    renderer = Renderer(tokenizer, tools, [int(i) for i in backend.eos_ids], cfg.data.system_prompt,
                        cfg.data.chat_template_kwargs)
    renderer.check()  # a template that cannot render tool replies fails now, before any step
    host = EnvHost(env, tool_names(env), timeout=cfg.rollout.tool_timeout,
                   max_chars=cfg.rollout.tool_result_max_chars, isolate=cfg.reward_isolation,
                   memory_mb=cfg.reward_memory_mb)
    return EnvironmentRollout(backend, tokenizer, host, renderer, TOOL_PARSERS.get(cfg.rollout.tool_parser),
                              max_turns=cfg.rollout.max_turns)


def prompt_texts(s: Setup, rows: list[dict]) -> list[str]:
    data = s.cfg.data
    return [format_prompt(s.tokenizer, row["prompt"], data.system_prompt, data.chat_template_kwargs)
            for row in rows]


def reward_state(s: Setup, finished: int) -> RewardState:
    """The ``trainer_state`` reward functions get after ``finished`` training steps."""
    source = s.source
    return RewardState(global_step=finished, max_steps=s.cfg.train.steps,
                       epoch=source.epoch + source.pos / len(source.rows),
                       is_world_process_zero=s.dist.is_main)
