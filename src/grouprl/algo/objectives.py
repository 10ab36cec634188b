"""Clipped / gated surrogate objectives (docs/math.md, Objectives), as terms to **maximise**.

One signature::

    fn(log_ratio, advantages [N], mask [N, T], logp [N, T], **hparams) -> Surrogate

``log_ratio`` is ``[N, T]`` (token level) or ``[N]`` (sequence level); ``advantages`` are broadcast to it.
``Surrogate.term`` is ``[N, T]`` or ``[N]``; the aggregation step turns it into a scalar. ``clipped_low`` /
``clipped_high`` mark the units (tokens or sequences) whose gradient the clip removed (or, for CISPO, whose
weight it capped); they are for metrics only. Each objective is registered with the spec fields it reads
(``params``, the same names as its keywords).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from grouprl.algo.ratios import masked_token_mean
from grouprl.registry import Registry

OBJECTIVES: Registry = Registry("surrogate objective")

# exp() of a log-ratio beyond this overflows float16/bfloat16 and means the sample is useless anyway;
# clamping changes nothing for any ratio below e^20 (about 4.9e8).
MAX_LOG_RATIO = 20.0


@dataclass
class Surrogate:
    term: torch.Tensor  # [N, T] or [N], objective per unit (maximise)
    clipped_low: torch.Tensor  # bool, same unit shape as the clip decision
    clipped_high: torch.Tensor  # bool


_BOUNDS = ("epsilon_low", "epsilon_high")


def _broadcast(adv: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return adv[:, None] if like.dim() == 2 else adv


@OBJECTIVES.register("ppo_clip", params=(*_BOUNDS, "clip_ratio_c"))
def ppo_clip(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, epsilon_low: float,
             epsilon_high: float, clip_ratio_c: float | None = None) -> Surrogate:
    """``min(r A, clip(r, 1-eps_low, 1+eps_high) A)``; with ``clip_ratio_c`` (dual-clip, arXiv 1912.09729)
    the A<0 term is floored at ``c A``, which zeroes the gradient of negative tokens with ratio above c."""
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    term = torch.minimum(r * A, torch.clamp(r, 1 - epsilon_low, 1 + epsilon_high) * A)
    if clip_ratio_c is not None:
        term = torch.where(A < 0, torch.maximum(term, clip_ratio_c * A), term)
    return Surrogate(term, (A < 0) & (r < 1 - epsilon_low), (A > 0) & (r > 1 + epsilon_high))


@OBJECTIVES.register("log_clip", params=_BOUNDS, per_sequence=True)
def log_clip(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, epsilon_low: float,
             epsilon_high: float) -> Surrogate:
    """GMPO: clip each token's log-ratio one-sidedly by sgn(A) in **log** space, then take the geometric mean.

    ``d~_t = s min(s d_t, s clip(d_t, -eps_low, eps_high))`` with ``s = sgn(A_i)``;
    ``J_i = A_i exp(mean_t d~_t)``. The bounds are log-space: 0.4 means ratios in ``[e^-0.4, e^0.4]``.
    """
    if log_ratio.dim() != 2:
        raise ValueError("log_clip needs token-level log-ratios [N, T] "
                         "(importance_sampling_level='geometric')")
    sign = torch.sign(advantages)[:, None]  # [N, 1]
    clipped = torch.clamp(log_ratio, -epsilon_low, epsilon_high)
    d = sign * torch.minimum(sign * log_ratio, sign * clipped)  # [N, T]
    term = advantages * torch.exp(masked_token_mean(d, mask).clamp(max=MAX_LOG_RATIO))  # [N]
    return Surrogate(term, (sign < 0) & (log_ratio < -epsilon_low), (sign > 0) & (log_ratio > epsilon_high))


@OBJECTIVES.register("is_weight_clip", params=_BOUNDS)
def is_weight_clip(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *,
                   epsilon_low: float | None, epsilon_high: float) -> Surrogate:
    """CISPO: ``sg[clip(r, 1-eps_low, 1+eps_high)] A l``: clip the importance **weight**, not the update, so
    every token keeps a gradient. ``epsilon_low=None`` means no lower bound (the paper's choice)."""
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO)).detach()
    low = None if epsilon_low is None else 1 - epsilon_low
    weight = torch.clamp(r, min=low, max=1 + epsilon_high)
    clipped_low = torch.zeros_like(r, dtype=torch.bool) if low is None else r < low
    return Surrogate(weight * A * logp, clipped_low, r > 1 + epsilon_high)


@OBJECTIVES.register("soft_gate", params=("tau_pos", "tau_neg"))
def soft_gate(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, tau_pos: float,
              tau_neg: float) -> Surrogate:
    """SAPO: a smooth gate ``f(r) = sigmoid(tau (r - 1)) 4 / tau`` in place of the hard clip; term ``f(r) A``.
    ``tau`` is ``tau_pos`` for A>0, else ``tau_neg``. At r=1 the gradient is that of an unclipped ratio."""
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    tau = torch.where(A > 0, torch.full_like(r, tau_pos), torch.full_like(r, tau_neg))
    gate = torch.sigmoid(tau * (r - 1)) * 4 / tau
    none = torch.zeros_like(r, dtype=torch.bool)
    return Surrogate(gate * A, none, none)


@OBJECTIVES.register("gppo", params=(*_BOUNDS, "clip_ratio_c", "gppo_beta1", "gppo_beta2"))
def gppo(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, epsilon_low: float,
         epsilon_high: float, clip_ratio_c: float | None = None, gppo_beta1: float = 1.0,
         gppo_beta2: float = 1.0) -> Surrogate:
    """GPPO (Klear-Reasoner, arXiv 2508.07629) and CE-GPPO (arXiv 2509.20712): PPO's clipped value, but the
    clipped tokens keep a bounded gradient instead of none.

    A token that PPO clips (``A < 0`` with ``r < 1 - eps_low``: the "low" side; ``A > 0`` with
    ``r > 1 + eps_high``: the "high" side) gets the term ``beta * b * r / sg[r] * A`` with ``b`` the bound it
    crossed: its value is ``beta * b * A`` (PPO's clipped value when ``beta = 1``) and its gradient with
    respect to ``l`` is ``beta * b * A``, as if the ratio sat on the bound. ``gppo_beta1`` scales the low
    side, ``gppo_beta2`` the high side (CE-GPPO's beta_1, beta_2; both 1 is GPPO). Every other token is
    ``r A``, exactly PPO's unclipped term. ``clip_ratio_c`` is the dual-clip floor ``c A`` for ``A < 0``, as
    in ``ppo_clip`` (the authors' code applies it with c = 3).
    """
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    low, high = (A < 0) & (r < 1 - epsilon_low), (A > 0) & (r > 1 + epsilon_high)
    bound = torch.where(low, torch.full_like(r, gppo_beta1 * (1 - epsilon_low)),
                        torch.full_like(r, gppo_beta2 * (1 + epsilon_high)))
    # r / sg[r] is 1 in value and passes d r / d l = r through: the bound's value with the gradient of b * l
    scale = torch.where(low | high, bound / r.detach(), torch.ones_like(r))
    term = r * scale * A
    if clip_ratio_c is not None:
        term = torch.where(A < 0, torch.maximum(term, clip_ratio_c * A), term)
    return Surrogate(term, low, high)


# (i) covariance objectives (arXiv 2505.22617): ``selected`` [N, T] bool is their token selection
# (selection.py), taken on the whole mini-batch by the caller.
@OBJECTIVES.register("clip_cov", params=(*_BOUNDS, "clip_ratio_c"), selection="cov_random")
def clip_cov(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, epsilon_low: float,
             epsilon_high: float, clip_ratio_c: float | None = None, selected: Tensor) -> Surrogate:
    """Clip-Cov: ``ppo_clip``'s term, with the gradient of the selected tokens detached (their value stays).
    ``clipped_low`` / ``clipped_high`` are PPO's; the selected tokens are counted by the caller."""
    out = ppo_clip(log_ratio, advantages, mask, logp, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                   clip_ratio_c=clip_ratio_c)
    return Surrogate(torch.where(selected, out.term.detach(), out.term), out.clipped_low, out.clipped_high)


@OBJECTIVES.register("kl_cov", params=("beta_kl_cov",), selection="cov_top")
def kl_cov(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor, *, beta_kl_cov: float,
           selected: Tensor) -> Surrogate:
    """KL-Cov: the unclipped ``r A`` on every token, minus ``beta_kl_cov * |log r|`` on the selected ones (a
    term to maximise). At ``r = 1`` the penalty is 0 in value and gradient, so it acts once the policy has
    moved: from the second mini-batch or iteration of a rollout on."""
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    penalty = torch.where(selected, beta_kl_cov * log_ratio.abs(), torch.zeros_like(r))
    none = torch.zeros_like(r, dtype=torch.bool)
    return Surrogate(r * A - penalty, none, none)


@OBJECTIVES.register("none")
def unclipped(log_ratio: Tensor, advantages: Tensor, mask: Tensor, logp: Tensor) -> Surrogate:
    """Plain importance-weighted policy gradient ``r A`` (REINFORCE when on-policy)."""
    A = _broadcast(advantages, log_ratio)
    r = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    none = torch.zeros_like(r, dtype=torch.bool)
    return Surrogate(r * A, none, none)
