"""Group filters and reward shaping (docs/math.md, Filters and shaping), on ``[B, G]`` views of a rollout.

Filters share one signature and return a keep-mask; what a kept/dropped sequence means is the caller's role
for that filter (dynamic sampling drops whole groups from statistics and loss, the overlong filter drops
sequences from the loss only, retain-k chooses GFPO's subset)::

    fn(view: GroupView, **hparams) -> keep [B, G] bool

Shaping functions return a reward delta (deltas are added in registration order)::

    fn(view: GroupView, **hparams) -> delta [B, G] float

A spec chooses them by name: ``AlgoSpec.filters`` and ``AlgoSpec.shaping`` list the pieces (DAPO's row names
``nonzero_variance`` and ``soft_overlong``). Each is registered with ``params`` (spec field -> keyword),
``needs`` (the facts of ``GroupView`` it uses) and, for filters, ``role``: ``group`` (a dropped group leaves
statistics and loss, and the trainer samples more prompts to refill the batch), ``loss`` (a dropped sequence
leaves the loss only) or ``subset`` (GFPO's retained set, which the advantage's statistics use). ``reads``
names the spec fields the composition reads for the piece; ``provides`` the need of another piece that a
filter meets (``retain_k`` gives ``subset_zscore`` its ``retained`` set, so choosing that advantage chooses
the filter); ``when``, a condition on the spec under which a listed piece acts (``kl_in_reward``:
``beta > 0``); ``choice=False`` marks a piece that is for library callers, not a spec choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grouprl.registry import Registry

FILTERS: Registry = Registry("group filter")
SHAPING: Registry = Registry("reward shaping")


@dataclass(frozen=True)
class GroupView:
    """The per-sequence facts filters look at, all ``[B, G]``."""

    rewards: torch.Tensor  # float, the (shaped) reward
    accuracy: torch.Tensor  # float, the verifier's correctness signal (dynamic sampling tests this)
    lengths: torch.Tensor  # float, completion token counts
    truncated: torch.Tensor  # bool, hit the length cap without EOS
    seq_kl: torch.Tensor | None = None  # float, sum_t k1(pi_old, pi_ref), for the KL in the reward


@FILTERS.register("nonzero_variance", role="group", needs=("accuracy",))
def nonzero_variance(view: GroupView) -> torch.Tensor:
    """DAPO dynamic sampling: keep a group only if its accuracies are not all equal (``0 < #correct < G``)."""
    acc = view.accuracy
    varied = (acc != acc[:, :1]).any(dim=1, keepdim=True)  # [B, 1]
    return varied.expand_as(acc)


@FILTERS.register("drop_truncated", role="loss", needs=("truncated",))
def drop_truncated(view: GroupView) -> torch.Tensor:
    """DAPO overlong filtering: a truncated response is kept out of the loss (not out of its group's
    statistics)."""
    return ~view.truncated


@FILTERS.register("retain_k", role="subset", provides="retained",
                  params={"retain_k": "k", "retain_metric": "metric"},
                  reads=("retain_normalise_over",), needs=("lengths",))
def retain_k(view: GroupView, *, k: int | None = None, metric: str = "length") -> torch.Tensor:
    """GFPO: keep the ``k`` best responses of each group; ties go to the lower index (stable sort).

    ``metric="length"`` keeps the k shortest; ``"token_efficiency"`` the k highest ``R_i / |o_i|``.
    ``k=None`` keeps half the group, at least 2. With the spec's ``retain_normalise_over="retained"`` the
    rejected responses also leave the loss's normaliser.
    """
    if metric == "length":
        score = view.lengths
    elif metric == "token_efficiency":
        score = -view.rewards / view.lengths.clamp(min=1)
    else:
        raise ValueError(f"retain_k metric must be 'length' or 'token_efficiency', got {metric!r}")
    B, G = score.shape
    k = min(max(G // 2, 2), G) if k is None else k
    if not 1 <= k <= G:
        raise ValueError(f"retain_k needs 1 <= k <= group size ({G}), got k={k}")
    order = torch.sort(score, dim=1, stable=True).indices[:, :k]  # [B, k]
    keep = torch.zeros(B, G, dtype=torch.bool, device=score.device)
    return keep.scatter_(1, order, True)


@SHAPING.register("soft_overlong", needs=("lengths",),
                  params={"overlong_max_len": "max_len", "overlong_buffer_len": "cache_len"})
def soft_overlong(view: GroupView, *, max_len: int, cache_len: int) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 up to ``max_len - cache_len``, then linear down to -1 at ``max_len``.

    >>> v = GroupView(None, None, torch.tensor([[2., 3, 4, 5, 6]]), None)
    >>> soft_overlong(v, max_len=5, cache_len=2)
    tensor([[ 0.0000,  0.0000, -0.5000, -1.0000, -1.0000]])
    """
    expected = max_len - cache_len
    ramp = (expected - view.lengths) / cache_len
    return torch.where(view.lengths <= expected, torch.zeros_like(ramp), ramp.clamp(min=-1.0))


@SHAPING.register("kl_in_reward", when=lambda spec: spec.beta > 0, params=("beta",), needs=("seq_kl",))
def kl_in_reward(view: GroupView, *, beta: float) -> torch.Tensor:
    """REINFORCE++-style KL penalty in the reward, instead of the KL term in the loss: ``-beta * sum_t k1``.
    Listed with ``beta = 0`` it does nothing (and no reference pass runs)."""
    return -beta * view.seq_kl


@SHAPING.register("length_penalty", choice=False, needs=("lengths",))
def length_penalty(view: GroupView, *, coef: float, max_len: int) -> torch.Tensor:
    """A plain linear length cost: ``-coef * |o_i| / max_len``. Not a spec choice (its parameters are no spec
    fields): for callers composing their own shaping; the reward function of the same name is the config's
    way."""
    return -coef * view.lengths / max_len
