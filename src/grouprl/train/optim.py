"""AdamW with linear warm-up and a constant / linear / cosine schedule."""

from __future__ import annotations

import math

import torch


def build_optimizer(params, *, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the fused kernel (one pass per tensor, ~4x faster on CPU than the
    for-each one at 25 M parameters) where every parameter is a plain CPU/CUDA float tensor (not FSDP's DTensor)."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() and not hasattr(p, "device_mesh") for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)


def build_scheduler(optimizer, *, warmup_steps: int, total_steps: int, kind: str) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiplier of the peak lr at optimizer step ``s``: ramps up over ``warmup_steps``, then ``kind``."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / (warmup_steps + 1)
        if kind == "constant" or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (s - warmup_steps) / (total_steps - warmup_steps))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
