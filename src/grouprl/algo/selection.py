"""Token selections over a whole mini-batch (docs/math.md, Token selections): Clip-Cov's and KL-Cov's
covariance picks (arXiv 2505.22617) and M2PO's second-moment mask (arXiv 2510.01161).

Each one needs a statistic of the whole mini-batch (a mean, a top-k, a random draw), so it is taken once per
mini-batch, on pi_old (known for every row before the update), never per micro-batch: the gradient then
cannot depend on the split. A selection reads the in-loss tokens of the mini-batch as flat ``[n]`` vectors in
the one-process order (sequence by sequence, token by token), which the caller gathers over ranks::

    fn(view: TokenView, **hparams) -> selected [n] bool

Each is registered with ``params`` (spec field -> keyword), ``needs`` and ``role``: ``objective`` (the chosen
objective treats the selected tokens specially: Clip-Cov detaches them, KL-Cov penalises them; the objective
names its selection with ``selection=``) or ``mask`` (the selected tokens leave the loss, not its normaliser:
M2PO; it acts ``when`` its field is set). ``minibatch_old_logp`` is the need of a pi_old pass over the whole
mini-batch before the update, also on-policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from grouprl.registry import Registry

SELECTIONS: Registry = Registry("token selection")


@dataclass(frozen=True)
class TokenView:
    """The in-loss tokens of one mini-batch, flat ``[n]``, in the one-process order."""

    old_logp: Tensor  # float, log pi_old of each token
    advantages: Tensor  # float, the advantage of the token's sequence
    sampler_logp: Tensor | None = None  # float, log mu (the sampler's) of each token, for M2PO
    seed: int = 0  # seeds the random draw of Clip-Cov (one torch.Generator on the CPU)


def covariance(view: TokenView) -> Tensor:
    """``Cov_t = (l_t - mean l) (A_t - mean A)`` with ``l = log pi_old``, both means over the ``n`` tokens."""
    lp, adv = view.old_logp, view.advantages
    return (lp - lp.mean()) * (adv - adv.mean())


def _count(ratio: float, n: int) -> int:
    """``max(1, floor(ratio * n))`` tokens (verl's rule: at least one)."""
    return max(1, int(ratio * n))


@SELECTIONS.register("cov_random", role="objective", needs=("minibatch_old_logp",),
                     params={"clip_cov_ratio": "ratio", "clip_cov_lb": "lb", "clip_cov_ub": "ub"})
def cov_random(view: TokenView, *, ratio: float, lb: float, ub: float) -> Tensor:
    """Clip-Cov: ``k = max(1, floor(ratio n))`` tokens drawn uniformly among those with ``lb < Cov < ub``
    (all of them when fewer): the first ``k`` of ``torch.randperm(#candidates)`` from a generator seeded with
    ``view.seed``, the candidates in the one-process order."""
    cov = covariance(view)
    candidates = torch.nonzero((cov > lb) & (cov < ub)).flatten()
    selected = torch.zeros_like(cov, dtype=torch.bool)
    if len(candidates):
        draw = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(view.seed),
                              device="cpu")
        selected[candidates[draw[:_count(ratio, len(cov))]].to(cov.device)] = True
    return selected


@SELECTIONS.register("cov_top", role="objective", needs=("minibatch_old_logp",),
                     params={"kl_cov_ratio": "ratio"})
def cov_top(view: TokenView, *, ratio: float) -> Tensor:
    """KL-Cov: the ``k = max(1, floor(ratio n))`` tokens of highest Cov (ties to the earlier token)."""
    cov = covariance(view)
    order = torch.sort(cov, descending=True, stable=True).indices
    selected = torch.zeros_like(cov, dtype=torch.bool)
    selected[order[:_count(ratio, len(cov))]] = True
    return selected


@SELECTIONS.register("m2po", role="mask", needs=("minibatch_old_logp", "sampler_logp"),
                     params={"m2po_tau": "tau"}, when=lambda spec: spec.m2po_tau is not None)
def m2po(view: TokenView, *, tau: float) -> Tensor:
    """M2PO: with ``M2_t = (log pi_old - log mu)^2``, mask the tokens of largest ``M2`` (ties: the earlier
    token first), as few as possible, until the mean ``M2`` of the tokens left is ``<= tau``; every token when
    even the smallest exceeds ``tau``."""
    if view.sampler_logp is None:
        raise ValueError("m2po_tau needs the sampler's log-probs (mu) of the tokens; pass sampler_logp=")
    m2 = (view.old_logp - view.sampler_logp) ** 2
    order = torch.sort(m2, descending=True, stable=True).indices
    ranked = m2[order]
    kept = torch.arange(len(m2), 0, -1, dtype=m2.dtype, device=m2.device)  # tokens left after masking i
    tail_mean = ranked.flip(0).cumsum(0).flip(0) / kept  # [i]: mean of ranked[i:]
    fine = torch.nonzero(tail_mean <= tau).flatten()
    masked_count = int(fine[0]) if len(fine) else len(m2)
    selected = torch.zeros_like(m2, dtype=torch.bool)
    selected[order[:masked_count]] = True
    return selected
