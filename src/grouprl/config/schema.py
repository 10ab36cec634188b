"""The one typed configuration schema. Every field is documented where it is declared.

Resolution order: schema defaults → the algorithm preset (``algorithm``; its fields can be overridden in
``algo:``) → a YAML file → ``a.b=c`` command-line overrides. Unknown keys, wrong types and incoherent
values fail here, before any model loads, naming the key and the fix. Field names follow TRL where TRL has
the concept (``num_generations``, ``max_completion_length`` is ``max_new_tokens`` here, ``num_iterations``,
``beta``, ``epsilon_low`` …), and TRL's GRPOConfig names are accepted as aliases at the top level
(``learning_rate: 1e-5``; ``grouprl.config.trl``, docs/trl.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grouprl.env.parse import TOOL_PARSERS
from grouprl.rollout import BACKENDS

ROLLOUT_BACKENDS = tuple(BACKENDS.names())
"""``rollout.backend``'s choices: the names ``grouprl.rollout`` registers."""

TOOL_PARSER_NAMES = tuple(TOOL_PARSERS.names())
"""``rollout.tool_parser``'s choices: the names ``grouprl.env.parse`` registers."""


@dataclass
class LoraConfig:
    """Low-rank adapters (PEFT)."""

    r: int = 0
    """LoRA rank (0: off, full fine-tuning). With r > 0 only the adapters train (the ``peft`` extra); the
    reference policy is the base model with the adapters switched off, so no second copy of the weights."""
    alpha: float = 16.0
    """LoRA scaling numerator: the update is ``(alpha / r) * B A``."""
    dropout: float = 0.0
    """Dropout on the adapter input. The policy runs in eval mode (the on-policy ratio must start at 1), so
    this only matters to code that switches the model to training mode."""
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names of the linear layers that get adapters (the last part of the module name, as PEFT matches
    them)."""


@dataclass
class ModelConfig:
    """The policy and its reference."""

    name_or_path: str = "default"
    """The policy: a local ``save_pretrained`` directory, a hub id, a ``.gguf`` file (model, tokenizer and
    chat template from it, dequantised to float; ``grouprl convert`` makes it a directory that loads faster),
    or ``default`` (the embedded tiny model)."""
    gguf_file: str | None = None
    """A GGUF file name inside the directory ``name_or_path``: the model, tokenizer and chat template are read
    from it (the same as passing the file's path as ``name_or_path``). None: no GGUF."""
    dtype: str = "float32"
    """Weights dtype as loaded: float32 | bfloat16 | float16 | auto. Leave it float32 and choose the
    arithmetic with ``train.precision`` (bf16 loads bfloat16 weights itself); another value with
    ``train.precision=auto`` trains in that dtype without autocast."""
    device: str = "auto"
    """Where the policy, the reference, the rollout engine's buffers, the log-prob passes, the loss and the
    metrics live: auto | cpu | cuda | cuda:N. auto: the local rank's GPU under torchrun (LOCAL_RANK), else
    cuda when CUDA is available, else cpu. Reward functions run in their CPU worker whatever it is. A device
    this machine lacks (cuda without CUDA, cuda:3 on one GPU) stops the run before any model loads."""
    attn_implementation: str = "sdpa"
    """The attention kernel of the policy and the reference, in the rollout and every log-prob pass (left
    padding is masked in all three): sdpa (torch's scaled_dot_product_attention), eager (the reference
    implementation), or flash_attention_2 (CUDA, needs the flash-attn package; refused when it is not
    installed)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code. Off unless you trust the repository."""
    ref_name_or_path: str | None = None
    """The frozen reference policy for the KL term; None: a frozen copy of the initial policy."""
    logprob_chunk_size: int = 1024
    """Positions per chunk when turning hidden states into log-probs: bounds the [chunk, vocab] buffer."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass instead of storing its activations: less memory
    (about one layer's activations instead of all of them) for roughly one extra forward of compute."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Low-rank adapters through PEFT (``model.lora.r=8``)."""


@dataclass
class DataConfig:
    """Where the prompts come from and how they become model input."""

    task: str | None = "arithmetic"
    """A built-in procedural task (``grouprl list tasks``); ignored when ``path`` is set."""
    task_kwargs: dict = field(default_factory=dict)
    """Difficulty knobs of the built-in task, e.g. ``{digits: 2}``."""
    path: str | None = None
    """A prompt dataset: .jsonl, .json, .csv, .parquet, a ``datasets.save_to_disk`` directory, a hub id, or
    (with ``data_files``) a ``datasets`` builder name such as ``json``, ``csv`` or ``parquet``."""
    data_files: str | list | dict | None = None
    """Passed to ``datasets.load_dataset(path, data_files=...)``: one file, a list, or ``{split: files}``.
    With it, every file is read by ``datasets`` (its type inference included) instead of grouprl's own
    readers."""
    dataset_config: str | None = None
    """With a hub dataset: its configuration (``name`` of ``datasets.load_dataset``); None: the default one.
    Ignored for a local file."""
    split: str = "train"
    """With a hub dataset or a saved ``DatasetDict``: the split to train on. Ignored for a local file."""
    prompt_column: str = "prompt"
    """Column holding the prompt text (or a chat ``messages`` list)."""
    chat_template: str | None = None
    """A Jinja chat template that replaces the tokenizer's own (it is saved with the checkpoints); None: keep
    the tokenizer's. Without any template, text prompts are used as they are."""
    chat_template_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for ``tokenizer.apply_chat_template``, e.g. ``{enable_thinking: false}``."""
    eval_path: str | None = None
    """Held-out prompts for evaluation; None with a built-in task: its eval split."""
    system_prompt: str | None = None
    """Prepended as a system message when the tokenizer has a chat template, else as a line of text."""
    num_train: int = 4000
    """Built-in task: training prompts generated (the data is cycled, reshuffled each epoch)."""
    num_eval: int = 256
    """Held-out prompts used for evaluation."""
    seed: int = 0
    """Seed of the task generator and of the shuffling."""


@dataclass
class RolloutConfig:
    """Sampling the group of completions."""

    num_generations: int = 8
    """G, completions sampled per prompt (the group). At least 2: a group of one has no baseline."""
    max_new_tokens: int = 8
    """Generation budget per completion (TRL: max_completion_length); a longer answer is truncated. With an
    environment it is the budget of the whole episode after the prompt, the model's and the environment's
    tokens together (as TRL counts it); the loss and ``completion/len_mean`` count the model's alone."""
    temperature: float = 1.0
    """Sampling temperature; log-probs for the loss use the same temperature, so the ratio starts at 1."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1.0: off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0: off)."""
    backend: str = "auto"
    """Rollout engine: fast (preallocated KV cache, shared prompt prefill, per-group random streams), hf
    (transformers.generate, the reference), or auto (fast where the model supports it, else hf). Episodes
    with an ``environment`` always run on hf."""
    max_turns: int = 4
    """With an environment: model turns per episode at most (each turn ends at EOS; a turn with tool calls is
    followed by their results, one without by the environment's ``respond``)."""
    tool_parser: str = "hermes"
    """With an environment: how a turn's tool calls are read. hermes: ``<tool_call>{"name": ...,
    "arguments": {...}}</tool_call>`` blocks, the format of Hermes and Qwen chat templates."""
    tool_timeout: float = 10.0
    """With an environment: seconds one tool call (or reset, respond, get_reward) may take; past it the
    model is told the call timed out (counted in ``env/tool_errors``)."""
    tool_result_max_chars: int = 2000
    """With an environment: a tool result longer than this many characters is not shown; the model gets an
    error saying so instead (counted in ``env/tool_errors``)."""


@dataclass
class TrainConfig:
    """Steps, batch shape and the optimizer."""

    steps: int = 200
    """Optimizer-visible training steps; one step = one rollout of prompts_per_step × num_generations."""
    prompts_per_step: int = 32
    """B, prompts per rollout. The batch is B × G sequences, whole groups always."""
    num_iterations: int = 1
    """μ, passes over each rollout. μ > 1 makes the update off-policy (π_old log-probs are computed)."""
    mini_batches: int = 1
    """Optimizer steps per pass: the rollout's groups are split into this many mini-batches."""
    micro_batch_size: int = 0
    """Sequences per forward/backward (gradient accumulation); does not change the gradient. 0: sized from
    ``activation_budget_mib`` each step (balanced micro-batches)."""
    micro_batch_order: str = "rows"
    """With micro_batch_size=0, how rows are put into the update's micro-batches: ``rows`` (consecutive
    runs of whole groups, balanced) or ``length`` (groups of like completion length together, each
    micro-batch filled up to the budget at its own width: less padding; the same gradient up to float
    rounding; ``model/memory.py`` ``plan_micro_batches``)."""
    activation_budget_mib: int = 0
    """With micro_batch_size=0: the estimated activations one micro-batch keeps for backward stay under
    this many MiB. 0: chosen at start-up from the memory free then (a quarter of it once gradients and
    optimizer moments are counted, 320 MiB to 8 GiB; the same on every rank); the choice is printed."""
    lr: float = 2e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    warmup_steps: int = 5
    """Linear warm-up of the learning rate, in optimizer steps: update s (from 0) uses
    lr x (s + 1) / (warmup + 1)."""
    warmup_ratio: float | None = None
    """Warm-up as a fraction of all optimizer steps (steps x num_iterations x mini_batches), rounded up; when
    set, it decides ``warmup_steps``."""
    lr_scheduler: str = "constant"
    """The learning-rate curve after warm-up: any ``transformers.get_scheduler`` name (constant, linear,
    cosine, cosine_with_restarts, polynomial, constant_with_warmup, inverse_sqrt, cosine_with_min_lr,
    cosine_warmup_with_min_lr, warmup_stable_decay) except the metric-driven ones (reduce_lr_on_plateau,
    greedy). The warm-up is always grouprl's."""
    lr_scheduler_kwargs: dict = field(default_factory=dict)
    """The scheduler's own arguments, e.g. ``{min_lr_rate: 0.1}`` for cosine_with_min_lr,
    ``{num_cycles: 2}``."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    max_refill_rounds: int = 4
    """Dynamic sampling: extra rollouts allowed per step to refill dropped groups."""
    max_nonfinite_steps: int = 5
    """Stop (with a checkpoint) after this many steps in a row whose update was skipped for NaN/inf."""
    seed: int = 0
    """Seeds python, numpy and torch, and the sampler."""
    precision: str = "auto"
    """The arithmetic of the forward and backward passes (docs/gpu.md). fp32: float32 throughout.
    bf16-mixed: float32 master weights and AdamW moments, every forward (rollout, log-prob passes, update)
    under torch.autocast(bfloat16); the backward follows the forward's dtypes. bf16: bfloat16 weights (half
    the memory), float32 AdamW moments, the update applied in float32 and rounded to bfloat16. In every mode
    the log-softmax, the log-probs, advantages, the KL and the loss are float32. auto: bf16-mixed on CUDA,
    fp32 on the CPU. bf16 modes on a CPU without bfloat16 kernels are refused."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default). Under torchrun set it to cores / processes."""
    fsdp: bool = False
    """Under torchrun: shard parameters, gradients and AdamW's moments over the ranks with FSDP2
    (``fully_shard``, one unit per decoder layer) instead of keeping a full replica per rank (DDP). The
    rollout and evaluation gather the full weights for their duration. Needs WORLD_SIZE >= 2; not with
    LoRA."""
    collective_timeout: float = 1800.0
    """Seconds a multi-process collective may wait for its peers before the run ends with an error naming
    this rank. It must exceed the longest stretch one rank works alone: rank 0's evaluation and checkpoint
    writes."""


@dataclass
class EvalConfig:
    """Held-out evaluation."""

    every: int = 25
    """Evaluate on held-out prompts every this many steps (0: only before and after training)."""
    num_samples: int = 8
    """k for sampled pass@k and mean@k (0: greedy pass@1 only)."""
    temperature: float = 1.0
    """Temperature for the sampled metrics."""
    batch_size: int = 256
    """Prompts per generation call during evaluation."""


@dataclass
class OutputConfig:
    """What the run writes, and where."""

    run_dir: str | None = None
    """Where the run writes everything; None: runs/<algorithm>-<timestamp>."""
    save_every: int = 0
    """Write a checkpoint every this many steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept (older ones are deleted)."""
    log_completions: int = 16
    """Completions per step written to completions.jsonl (0: none)."""
    plots: bool = True
    """Write plots/*.png and report.md at the end."""
    progress: bool = True
    """Show a live progress bar."""
    report_to: list = field(default_factory=list)
    """Trackers that also get every step's metrics, besides metrics.jsonl (always written): tensorboard,
    wandb, trackio. ``tensorboard: true`` and ``wandb_mode`` add to this list."""
    tensorboard: bool = False
    """Also write TensorBoard event files to <run>/tensorboard (the ``tensorboard`` extra)."""
    save_merged: bool = False
    """With LoRA: also write the base model with the adapters merged in, ``checkpoints/step-N/merged/`` (a
    plain HF model directory), beside the adapter itself."""
    wandb_mode: str | None = None
    """Also log to Weights & Biases: online | offline (no network; files under <run>/wandb) | None (off,
    unless report_to names wandb: then online)."""


@dataclass
class Config:
    """A whole run."""

    algorithm: str = "grpo"
    """The algorithm preset (``grouprl list algorithms``)."""
    algo: dict = field(default_factory=dict)
    """Overrides of the preset's fields, e.g. ``{beta: 0.0, epsilon_high: 0.28}`` (see docs/algorithms).
    Filters and reward shaping are lists of named pieces: ``filters: [nonzero_variance, drop_truncated]``
    (DAPO's dynamic sampling and overlong filter), ``shaping: [soft_overlong]`` or ``[kl_in_reward]`` (the KL
    penalty in the reward instead of the loss). The switches ``dynamic_sampling``, ``overlong_filter``,
    ``soft_overlong`` (true/false) and ``kl_placement`` (loss/reward) still add or remove their piece.
    ``rollout_correction`` (none, token_truncate, sequence_truncate, token_mask, sequence_mask) corrects for
    the sampler's log-probs differing from the trainer's: the policy term times min(w, max), or the units with
    w outside [min, max] out of the loss, w = pi_old / mu per token or its geometric mean per sequence;
    ``rollout_correction_max`` (2.0) and ``rollout_correction_min`` (0.0, masks only) are the bounds
    (docs/algorithms/rollout_correction.md). It costs a pi_old pass per step."""
    rewards: list = field(default_factory=list)
    """Reward functions: names (``grouprl list rewards``), ``module:function`` or ``file.py:function``; or
    ``{name: ..., weight: ..., kwargs: ..., factory_kwargs: ..., columns: ...}`` (docs/rewards.md). Empty: the
    task's own verifier."""
    environment: str | None = None
    """Multi-turn, tool-using episodes (docs/environments.md): a built-in environment (``calculator``,
    ``guess_number``, ``python``), ``package.module:Class`` or ``path/to/file.py:Class``, written as for TRL's
    ``environment_factory`` (``reset(**row)``, typed public methods as tools, optional ``get_reward``). A
    built-in brings its prompts and rewards unless ``data.path`` and ``rewards`` are set. None: single-turn
    completions."""
    verifier: str | None = None
    """The reward that defines ``accuracy`` (the training metric, dynamic sampling's test) and what evaluation
    accepts (a value >= 1.0): a name as the metrics show it (``reward/<name>/mean``). Unset: the first reward
    function, which is the task's verifier when ``rewards`` is empty (docs/metrics.md)."""
    reward_timeout: float = 60.0
    """Seconds one reward-function call may take; past it the samples get reward_fallback (counted)."""
    reward_fallback: float = 0.0
    """Reward given to a sample whose function raised, timed out, or returned NaN or a non-number."""
    reward_fail_fast: bool = True
    """Stop the run (exit status 2, one line naming the function and its first fault) when a reward function
    gets the fallback on every sample of a step: raising, timing out or returning nothing usable every time
    leaves no signal. false: train on with the fallback (the faults are still counted)."""
    reward_isolation: bool = True
    """Run reward functions in a separate worker process (with the timeout), never in the trainer's."""
    reward_memory_mb: int = 8192
    """Memory (MiB of address space) the reward worker may allocate on top of what it inherits from the
    trainer when forked; past it, the allocation fails with MemoryError and that call's samples get
    reward_fallback (counted in errors). Thread stacks count too (8 MiB each). 0: no limit. Needs
    reward_isolation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
