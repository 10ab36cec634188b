"""Group advantage estimators (docs/math.md, Advantages): outcome rewards ``[B, G]`` → advantages
``[B, G]``.

One signature for every estimator::

    fn(rewards [B, G], ctx: GroupContext, **hparams) -> advantages [B, G]

``ctx.valid`` marks the sequences that take part (a group dropped by dynamic sampling is all False); an
estimator gives 0 to every invalid sequence and never lets one into a statistic. ``ctx.retained`` is GFPO's
kept subset; ``ctx.lengths`` the completion token counts, for token-weighted statistics.

Std convention: ``ddof`` 0 (population) or 1 (Bessel); ``eps`` added outside the root
(``std + eps``, verl / TRL) or, with ``eps_inside=True``, inside it (``sqrt(var + eps)``, the project spec's
``δ``). Batch-level statistics (LitePPO, REINFORCE++-baseline) are over this call's batch; the trainer passes
the whole rollout, never a micro-batch.

Each estimator is registered with what it reads: ``params`` maps the ``AlgoSpec`` fields it takes to its
keyword names, ``needs`` names the per-sequence facts of ``GroupContext`` beyond ``valid`` that it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grouprl.registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")

# The std convention's spec fields, as the z-score estimators' keywords.
_STD = {"std_ddof": "ddof", "adv_eps": "eps", "adv_eps_inside": "eps_inside"}


@dataclass(frozen=True)
class GroupContext:
    """Per-sequence facts an estimator may need, all ``[B, G]``."""

    lengths: torch.Tensor  # completion token counts (float)
    valid: torch.Tensor  # bool: sequence takes part in the statistics
    retained: torch.Tensor  # bool: in GFPO's retained subset (all True when no retain_k)


def _masked_mean_var(x: torch.Tensor, w: torch.Tensor, ddof: int,
                     dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and variance of ``x`` with non-negative weights ``w`` (counts), ``ddof`` on the count."""
    n = w.sum(dim=dim, keepdim=dim is not None)
    mean = (x * w).sum(dim=dim, keepdim=dim is not None) / n.clamp(min=1)
    var = ((x - mean) ** 2 * w).sum(dim=dim, keepdim=dim is not None) / (n - ddof).clamp(min=1)
    return mean, var


def _standardise(x: torch.Tensor, var: torch.Tensor, eps: float, eps_inside: bool) -> torch.Tensor:
    """``x / std`` with ``eps`` inside or outside the root; 0 where the std is exactly 0 (only with eps=0)."""
    std = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return torch.where(std > 0, x / std.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(x))


@ADVANTAGES.register("group_zscore", params=_STD)
def group_zscore(rewards: torch.Tensor, ctx: GroupContext, *, ddof: int = 1, eps: float = 1e-6,
                 eps_inside: bool = False) -> torch.Tensor:
    """GRPO: ``(R_i - mean_g R) / std_g R``.

    >>> on = torch.ones(1, 4, dtype=torch.bool)
    >>> ctx = GroupContext(torch.ones(1, 4), on, on)
    >>> group_zscore(torch.tensor([[1., 0, 0, 0]], dtype=torch.float64), ctx, eps=0.0)
    tensor([[ 1.5000, -0.5000, -0.5000, -0.5000]], dtype=torch.float64)
    """
    w = ctx.valid.to(rewards.dtype)
    mean, var = _masked_mean_var(rewards, w, ddof, dim=1)
    return _standardise(rewards - mean, var, eps, eps_inside) * w


@ADVANTAGES.register("group_center")
def group_center(rewards: torch.Tensor, ctx: GroupContext) -> torch.Tensor:
    """Dr. GRPO: ``R_i - mean_g R`` (no std, so easy and hard prompts are not up-weighted)."""
    w = ctx.valid.to(rewards.dtype)
    mean, _ = _masked_mean_var(rewards, w, 0, dim=1)
    return (rewards - mean) * w


@ADVANTAGES.register("group_mean_batch_std", params=_STD)
def group_mean_batch_std(rewards: torch.Tensor, ctx: GroupContext, *, ddof: int = 1, eps: float = 1e-6,
                         eps_inside: bool = False) -> torch.Tensor:
    """LitePPO: ``(R_i - mean_g R) / std_batch R``, the std over the **raw** rewards of the whole batch."""
    w = ctx.valid.to(rewards.dtype)
    _, batch_var = _masked_mean_var(rewards, w, ddof)
    return _standardise(group_center(rewards, ctx), batch_var, eps, eps_inside)


@ADVANTAGES.register("rloo")
def rloo(rewards: torch.Tensor, ctx: GroupContext) -> torch.Tensor:
    """RLOO: ``R_i - mean_{j != i} R_j`` = ``G/(G-1) (R_i - mean_g R)``, G counting valid members."""
    w = ctx.valid.to(rewards.dtype)
    n = w.sum(dim=1, keepdim=True)
    return group_center(rewards, ctx) * n / (n - 1).clamp(min=1)


@ADVANTAGES.register("batch_whiten_tokens", needs=("lengths",))
def batch_whiten_tokens(rewards: torch.Tensor, ctx: GroupContext) -> torch.Tensor:
    """REINFORCE++-baseline: group-centre, then whiten over all response **tokens** of the batch.

    A sequence enters the batch mean and variance once per token (as in the reference implementations), and
    the variance is Bessel-corrected over the token count: ``A = (a - mu) / sqrt(var + 1e-8)``. Both are the
    reference implementation's constants, not the spec's std convention: ``std_ddof`` / ``adv_eps`` do not
    apply here (the spec rejects them with this estimator).
    """
    centred = group_center(rewards, ctx)
    tokens = ctx.lengths * ctx.valid.to(rewards.dtype)
    mean, var = _masked_mean_var(centred, tokens, 1)
    return (centred - mean) * torch.rsqrt(var + 1e-8) * ctx.valid.to(rewards.dtype)


@ADVANTAGES.register("subset_zscore", params=_STD, needs=("retained",))
def subset_zscore(rewards: torch.Tensor, ctx: GroupContext, *, ddof: int = 1, eps: float = 1e-6,
                  eps_inside: bool = False) -> torch.Tensor:
    """GFPO: z-score with the mean and std of the retained subset only; rejected responses get 0."""
    retained = GroupContext(ctx.lengths, ctx.valid & ctx.retained, ctx.retained)
    return group_zscore(rewards, retained, ddof=ddof, eps=eps, eps_inside=eps_inside)


@ADVANTAGES.register("maxrl", params={"adv_eps": "eps"})
def maxrl(rewards: torch.Tensor, ctx: GroupContext, *, eps: float = 1e-6) -> torch.Tensor:
    """MaxRL (arXiv 2602.02710): ``(R_i - mean_g R) / (mean_g R + eps)``: the centred reward divided by the
    group's mean, its success rate for 0/1 rewards, so a prompt solved once in G counts G - 1 times more
    than a solved one (the paper's ``1/p`` weighting of maximum likelihood).

    A group whose mean is ``<= 0`` gets 0 everywhere. With non-negative rewards that is only the all-zero
    group, where the numerator is already 0 (no success, nothing to imitate); with negative rewards the
    formula would divide by a negative "success rate" and flip every sign, so those groups carry no signal
    rather than the wrong one. ``eps`` (the spec's ``adv_eps``, 1e-6 as the authors' code) is added to the
    mean; it only matters for means near 0.

    >>> on = torch.ones(1, 4, dtype=torch.bool)
    >>> ctx = GroupContext(torch.ones(1, 4), on, on)
    >>> maxrl(torch.tensor([[1., 0, 0, 0]], dtype=torch.float64), ctx, eps=0.0)
    tensor([[ 3., -1., -1., -1.]], dtype=torch.float64)
    """
    w = ctx.valid.to(rewards.dtype)
    mean, _ = _masked_mean_var(rewards, w, 0, dim=1)  # [B, 1]
    scaled = (rewards - mean) / (mean + eps).clamp(min=torch.finfo(rewards.dtype).tiny)
    return torch.where(mean > 0, scaled, torch.zeros_like(scaled)) * w
