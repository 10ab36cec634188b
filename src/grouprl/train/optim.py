"""AdamW with linear warm-up and a constant / linear / cosine schedule."""

from __future__ import annotations

import math

import torch


def build_optimizer(params, *, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay, betas=betas)


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
