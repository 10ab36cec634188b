"""Rollout correction (docs/algorithms/rollout_correction.md): the sampler's log-probs ``mu`` against the
trainer's ``pi_old`` for the same tokens.

One signature::

    fn(log_w [N, T], mask [N, T], **hparams) -> Correction

``log_w = log pi_old - log mu`` per token (0 off the mask). The rollout engine and the trainer compute the
same distribution with different kernels (and, in larger setups, precisions), so ``w = pi_old / mu`` is not
exactly 1; the pieces turn ``w`` into a detached weight on each token's policy term (``*_truncate``) or a mask
that takes tokens or sequences out of the loss and its normaliser (``*_mask``).

A sequence's ratio is the **geometric mean** of its token ratios, ``exp(mean_t log w)``: it is on the same
scale as a token ratio whatever the length, so one bound serves both levels. TRL and verl use the product
(``exp(sum_t log w)``), the unbiased sequence importance weight, whose spread grows with the length; this is a
deliberate departure (the doc says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grouprl.algo.ratios import masked_token_mean
from grouprl.registry import Registry

CORRECTIONS: Registry = Registry("rollout correction")


@dataclass(frozen=True)
class Correction:
    """What a correction does to one batch; every tensor is detached."""

    weight: torch.Tensor  # [N, T] multiplier of each token's policy term (1 where nothing is truncated)
    keep: torch.Tensor  # [N, T] the mask with the masked tokens / sequences removed (the loss mask to count)
    ratio: torch.Tensor  # [N, T] token or [N] sequence ratios w (1 off the units), before truncation
    units: torch.Tensor  # ratio's shape, bool: the units w is defined on (in-loss tokens, or sequences)
    clipped: torch.Tensor  # ratio's shape, bool: the units truncated (w > max) or masked (w outside bounds)

    def sums(self) -> dict[str, float]:
        """Sums over this batch for the metrics: ``ratio_sum``, ``units``, ``clipped`` (add over ranks),
        ``ratio_max`` (take the maximum); ``correction_metrics`` turns them into the logged values."""
        on = self.units
        return {"ratio_sum": float(self.ratio[on].sum()), "units": float(on.sum()),
                "clipped": float(self.clipped[on].sum()),
                "ratio_max": float(self.ratio[on].max()) if on.any() else 0.0}


def correction_metrics(sums: dict[str, float]) -> dict[str, float]:
    """``rollout_corr/ratio_mean``, ``ratio_max``, ``frac_clipped`` from ``Correction.sums`` (reduced over
    ranks: the first three added, ``ratio_max`` maximised)."""
    units = max(sums["units"], 1.0)
    return {"rollout_corr/ratio_mean": sums["ratio_sum"] / units, "rollout_corr/ratio_max": sums["ratio_max"],
            "rollout_corr/frac_clipped": sums["clipped"] / units}


def _token_ratio(log_w: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_{i,t} = exp(log w_{i,t})`` on the in-loss tokens (1 elsewhere), and those tokens."""
    on = mask > 0
    return torch.where(on, torch.exp(log_w.clamp(max=20.0)), 1.0), on


def _sequence_ratio(log_w: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_i = exp((1/|o_i|) sum_t log w_{i,t})`` over the in-loss tokens (1 for an empty row), and the
    sequences that have one."""
    on = mask.sum(-1) > 0
    return torch.where(on, torch.exp(masked_token_mean(log_w, mask).clamp(max=20.0)), 1.0), on


def _per_token(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A per-sequence ``[N]`` quantity broadcast to ``[N, T]``; a per-token one as it is."""
    return x[:, None].expand_as(mask) if x.dim() == 1 else x


def _truncated(ratio: torch.Tensor, on: torch.Tensor, mask: torch.Tensor, c_max: float) -> Correction:
    """Truncated importance sampling: the weight is ``min(w, c_max)``; nothing leaves the loss."""
    weight = _per_token(ratio.clamp(max=c_max), mask).to(mask.dtype)
    return Correction(weight, mask, ratio, on, on & (ratio > c_max))


def _masked(ratio: torch.Tensor, on: torch.Tensor, mask: torch.Tensor, c_min: float,
            c_max: float) -> Correction:
    """Masked importance sampling: units with ``w`` outside ``[c_min, c_max]`` leave the loss (and so the
    normaliser of the counts taken from ``keep``); the others keep weight 1."""
    out = on & ((ratio < c_min) | (ratio > c_max))
    keep = mask * (~_per_token(out, mask)).to(mask.dtype)
    return Correction(torch.ones_like(mask), keep, ratio, on, out)


@CORRECTIONS.register("none")
def none(log_w: torch.Tensor, mask: torch.Tensor) -> Correction:
    """No correction: weight 1, nothing masked (the sampler's log-probs are not read)."""
    ratio, on = _token_ratio(torch.zeros_like(log_w), mask)
    return Correction(torch.ones_like(mask), mask, ratio, on, torch.zeros_like(on))


@CORRECTIONS.register("token_truncate", params=("rollout_correction_max",), needs=("behaviour_logp",))
def token_truncate(log_w: torch.Tensor, mask: torch.Tensor, *, rollout_correction_max: float) -> Correction:
    """Token-level truncated IS: token ``t``'s policy term times ``min(w_{i,t}, max)``."""
    return _truncated(*_token_ratio(log_w, mask), mask, rollout_correction_max)


@CORRECTIONS.register("token_mask", params=("rollout_correction_max", "rollout_correction_min"),
                      needs=("behaviour_logp",))
def token_mask(log_w: torch.Tensor, mask: torch.Tensor, *, rollout_correction_max: float,
               rollout_correction_min: float) -> Correction:
    """Token-level masked IS: a token with ``w_{i,t}`` outside ``[min, max]`` leaves the loss."""
    return _masked(*_token_ratio(log_w, mask), mask, rollout_correction_min, rollout_correction_max)


@CORRECTIONS.register("sequence_truncate", params=("rollout_correction_max",), needs=("behaviour_logp",))
def sequence_truncate(log_w: torch.Tensor, mask: torch.Tensor, *,
                      rollout_correction_max: float) -> Correction:
    """Sequence-level truncated IS: every token of sequence ``i`` times ``min(w_i, max)``, ``w_i`` the
    geometric mean of its token ratios."""
    return _truncated(*_sequence_ratio(log_w, mask), mask, rollout_correction_max)


@CORRECTIONS.register("sequence_mask", params=("rollout_correction_max", "rollout_correction_min"),
                      needs=("behaviour_logp",))
def sequence_mask(log_w: torch.Tensor, mask: torch.Tensor, *, rollout_correction_max: float,
                  rollout_correction_min: float) -> Correction:
    """Sequence-level masked IS: a sequence whose geometric-mean ratio ``w_i`` is outside ``[min, max]``
    leaves the loss, all its tokens."""
    return _masked(*_sequence_ratio(log_w, mask), mask, rollout_correction_min, rollout_correction_max)


def sampler_gap(log_w: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far the sampler's log-probs are from the trainer's for the same tokens, as sums over one batch.

    ``log_w`` ``[N, T]`` is ``log pi - log mu`` (trainer minus sampler), ``mask`` ``[N, T]`` the tokens to
    count. Returns 0-dim tensors: ``abs_sum`` = sum |log w|, ``abs_max`` = max |log w| (0 for no token),
    ``kl_sum`` = sum of ``k3 = (w - 1) - log w``, whose mean over tokens sampled from mu estimates
    KL(mu || pi) without bias and is never negative, and ``tokens``. Add the sums over batches and ranks (take
    the maximum of ``abs_max``); ``rollout/logprob_diff_mean`` is ``abs_sum / tokens``.

    >>> g = sampler_gap(torch.tensor([[0.1, -0.2, 5.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    >>> round(float(g["abs_sum"]), 4), round(float(g["abs_max"]), 4), float(g["tokens"])
    (0.3, 0.2, 2.0)
    """
    on = mask > 0
    gap = torch.where(on, log_w, 0.0)
    k3 = torch.where(on, torch.expm1(gap.clamp(max=20.0)) - gap, 0.0)
    absolute = gap.abs()
    return {"abs_sum": absolute.sum(), "abs_max": absolute.max() if on.any() else absolute.new_zeros(()),
            "kl_sum": k3.sum(), "tokens": on.sum().to(log_w.dtype)}
