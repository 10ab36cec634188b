"""Schulman's KL estimators (docs/math.md, KL estimators) of KL(pi_theta || pi_ref) at sampled tokens.

One signature::

    fn(logp [N, T], ref_logp [N, T]) -> [N, T]

With ``d = l^ref - l``: k1 = ``-d`` (unbiased, can be negative), k2 = ``d^2 / 2`` (biased, >= 0),
k3 = ``exp(d) - d - 1`` (unbiased, >= 0, low variance; GRPO's choice).
"""

from __future__ import annotations

import torch

from grouprl.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logp, ref_logp):
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp, ref_logp):
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp, ref_logp):
    """>>> k3(torch.tensor([0.0]), torch.tensor([0.0]))
    tensor([0.])
    """
    d = ref_logp - logp
    return torch.expm1(d) - d
