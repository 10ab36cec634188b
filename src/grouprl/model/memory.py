"""Memory levers and a start-up estimate of where the memory goes.

``enable_gradient_checkpointing`` recomputes every decoder layer in the backward pass. transformers' own
switch only acts in training mode, and grouprl keeps the policy in eval mode (dropout would move the on-policy
ratio away from 1), so the layers' ``forward`` is wrapped here instead; it checkpoints only when autograd is
recording, so rollout and the frozen log-prob passes run at full speed.
"""

from __future__ import annotations

from functools import wraps
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of an HF causal LM: the children of its first ``ModuleList`` with more than one
    entry."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            return list(module)
    return []


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Checkpoint each decoder layer when grad is enabled; returns the number of layers wrapped."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.forward = _checkpointed(layer.forward)
    # a recomputed layer would write a KV cache twice: no shared-prompt passes
    model.layers_checkpointed = True
    return len(layers)


def _checkpointed(forward):
    @wraps(forward)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def _mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def activation_bytes_per_token(model: torch.nn.Module, gradient_checkpointing: bool = False) -> float:
    """Bytes one token keeps for backward across the decoder, in float32: per layer about ``10 × hidden``
    (norms, attention input/output, residuals) + ``2 × kv_dim`` (keys, values) + ``4 × intermediate`` (the
    MLP's gate, up, activation and product) values; with checkpointing only each layer's input
    (``2 × hidden``) plus one layer recomputed. (Saved-tensor hooks on a 4-layer Llama measured 18.1 kB/token
    at intermediate 2 × hidden and 32.4 kB at 5.5 × hidden; this gives 20.5 and 34.8.)"""
    model_config = getattr(model, "config", None)
    cfg = (model_config.get_text_config(decoder=True) if hasattr(model_config, "get_text_config")
           else model_config)
    hidden = getattr(cfg, "hidden_size", 0) or 0
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    intermediate = getattr(cfg, "intermediate_size", 0) or 4 * hidden
    heads = getattr(cfg, "num_attention_heads", 0) or 1
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    kv_dim = (getattr(cfg, "num_key_value_heads", None) or heads) * head_dim
    per_layer = (10 * hidden + 2 * kv_dim + 4 * intermediate) * 4
    return (2 * hidden * 4 * layers + per_layer) if gradient_checkpointing else per_layer * layers


def micro_batch_rows(num_rows: int, width: int, bytes_per_token: float, budget_mib: float) -> int:
    """Rows per micro-batch so that ``rows × width`` tokens keep at most ``budget_mib`` for backward,
    balanced: the ``num_rows`` rows split into the fewest micro-batches that fit, of nearly equal size."""
    if num_rows <= 0:
        return 1  # a rank that holds no rows this step (dynamic sampling) still runs one (dummy) pass
    fit = max(1, int(budget_mib * 2**20 // max(width * bytes_per_token, 1.0)))
    parts = -(-num_rows // fit)
    return max(1, -(-num_rows // parts))


def row_extents(prompt_mask: torch.Tensor, sequence_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt, completion)`` ``[n]``: the columns of each row a pass cannot cut, the real prompt tokens
    (left-padded) and the completion up to its last present token (right-padded)."""
    T = sequence_mask.shape[1]
    last = (sequence_mask.bool() * torch.arange(1, T + 1, device=sequence_mask.device)).amax(-1)
    return prompt_mask.sum(-1).cpu(), last.cpu()


def rollout_extents(rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_extents`` of a ``Rollout``'s rows (what the model attends to: its tokens and the env's)."""
    return row_extents(rollout.prompt_mask, rollout.sequence_mask())


def plan_micro_batches(prompt_len: torch.Tensor, completion_len: torch.Tensor, groups: torch.Tensor,
                       bytes_per_token: float, budget_mib: float) -> list[torch.Tensor]:
    """Micro-batches of rows (positions ``[k]`` into the ``[n]`` inputs) with little padding, each under the
    activation budget.

    A pass cuts the columns that are padding in all of its rows, so it runs ``k × (P + T)`` positions for
    ``k`` rows whose longest prompt and completion are ``P`` and ``T``, and runs a group's prompt once for
    the rows of the group it holds. Groups are taken by their longest completion first, a group's rows
    longest first; a micro-batch takes whole groups while ``k × (P + T) × bytes_per_token`` stays within
    ``budget_mib``, so long rows go with long rows and no prompt runs twice; a group over the budget on its
    own is cut into runs of rows that fit (a row over the budget alone is a micro-batch of one). The
    gradient is the same sum in another order (global counts, ``algo.Counts``): equal up to float
    rounding."""
    n = len(completion_len)
    if n == 0:
        return []
    group_max = torch.zeros(int(groups.max()) + 1, dtype=completion_len.dtype, device=groups.device)
    group_max = group_max.scatter_reduce(0, groups, completion_len, "amax")
    order = torch.argsort(-completion_len, stable=True)  # tertiary key: the row's length, longest first
    order = order[torch.argsort(groups[order], stable=True)]  # secondary: its group
    order = order[torch.argsort(-group_max[groups[order]], stable=True)]  # primary: the group's longest
    fit = budget_mib * 2**20 / max(bytes_per_token, 1.0)  # positions one micro-batch may run

    def fits(rows: list[int]) -> bool:
        return len(rows) <= 1 or len(rows) * int(prompt_len[rows].max() + completion_len[rows].max()) <= fit

    plan: list[torch.Tensor] = []
    current: list[int] = []
    ordered = order.tolist()
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    for size in counts.tolist():
        group, ordered = ordered[:size], ordered[size:]
        if fits(current + group):
            current += group
            continue
        if current:
            plan.append(torch.tensor(current, dtype=torch.long, device=groups.device))
            current = []
        for i in group:  # a group that fits goes whole; one that does not, in runs of rows that fit
            if not fits(current + [i]):
                plan.append(torch.tensor(current, dtype=torch.long, device=groups.device))
                current = []
            current.append(i)
    plan.append(torch.tensor(current, dtype=torch.long, device=groups.device))
    return plan


def estimate(model: torch.nn.Module, *, separate_reference: bool, micro_batch_size: int, seq_len: int,
             chunk_size: int, gradient_checkpointing: bool, shards: int = 1) -> dict[str, float]:
    """Rough peak memory per process by phase, in MiB.

    weights: every parameter (gathered whole for the rollout, also under FSDP); gradients and optimizer: the
    trainable ones (AdamW keeps two moments of each), divided by ``shards`` under FSDP;
    reference: a second copy of the weights when the reference is a separate model; activations: what one
    micro-batch's backward needs, about ``14 × hidden`` values per token per layer kept for backward
    (attention and MLP inputs/outputs; 2 × hidden with checkpointing, plus one layer recomputed), plus the
    ``[chunk, vocab]`` float32 log-prob buffer a few times over (logits, softmax, gradient).
    """
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", 0) or 0
    tokens = micro_batch_size * seq_len
    kept = activation_bytes_per_token(model, gradient_checkpointing) * tokens
    logits = 3 * min(chunk_size, tokens) * vocab * 4
    out = {"weights": _mib(weights), "gradients": _mib(trainable / shards),
           "optimizer": _mib(2 * trainable / shards),
           "reference": _mib(weights) if separate_reference else 0.0, "activations": _mib(kept + logits)}
    out["total"] = sum(out.values())
    return out


AUTO_BUDGET_FRACTION = 0.25
AUTO_BUDGET_MIB = (320, 8192)


def free_memory_mib(device: torch.device | None = None) -> float | None:
    """Memory a new allocation can still get, in MiB: the CUDA device's free memory, or on the CPU Linux's
    ``MemAvailable`` capped by the cgroup's limit (a container's ``memory.max``). None where unknown."""
    if device is not None and device.type == "cuda":
        return _mib(torch.cuda.mem_get_info(device)[0])
    try:
        text = Path("/proc/meminfo").read_text()
        meminfo = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        free = float(meminfo["MemAvailable"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None
    try:  # cgroup v2: the container's own limit, when it has one
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = min(free, _mib(float(limit) - used))
    except (OSError, ValueError):
        pass
    return max(free, 0.0)


def auto_activation_budget_mib(free_mib: float | None, still_to_allocate_mib: float) -> float:
    """The activation budget ``train.activation_budget_mib=0`` picks: a quarter of what is free once the
    gradients and optimizer moments (allocated at the first step) are taken out, within ``AUTO_BUDGET_MIB``.
    A quarter, not more: the estimate undercounts what backward really holds (SmolLM2-135M with a
    10,817 MiB budget peaked at 19,338 MiB RSS, 1.7x its 11,629 MiB estimate). Unknown free memory: the
    lower bound."""
    low, high = AUTO_BUDGET_MIB
    if free_mib is None:
        return float(low)
    return float(min(high, max(low, AUTO_BUDGET_FRACTION * (free_mib - still_to_allocate_mib))))


def describe(est: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in est.items() if k != "total")
    return f"memory estimate per process (MiB): {parts}; peak ≈ {est['total']:,.0f}"
