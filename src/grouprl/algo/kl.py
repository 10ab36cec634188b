"""Schulman's KL estimators (docs/math.md, KL estimators) of KL(pi_theta || pi_ref) at sampled tokens.

One signature::

    fn(logp [N, T], ref_logp [N, T]) -> [N, T]

With ``d = l^ref - l``: k1 = ``-d`` (unbiased, can be negative), k2 = ``d^2 / 2`` (biased, >= 0),
k3 = ``exp(d) - d - 1`` (unbiased, >= 0, low variance; GRPO's choice).

Each is registered as reading ``beta`` (the composition weighs the KL term by it) and needing π_ref.
"""

from __future__ import annotations

import torch

from grouprl.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator")

_KL = dict(reads=("beta",), needs=("ref_logp",))


@KL_ESTIMATORS.register("k1", **_KL)
def k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``l - l^ref``."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2", **_KL)
def k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``(l^ref - l)^2 / 2``."""
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("k3", **_KL)
def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """>>> k3(torch.tensor([0.0]), torch.tensor([0.0]))
    tensor([0.])
    """
    d = ref_logp - logp
    return torch.expm1(d) - d
