"""The one place the pieces are composed: rewards → advantages, and log-probs → loss.

Two stages, because they live at different granularities in the trainer:

* ``group_advantages`` runs once per rollout on the whole batch (group and batch statistics need every
  sequence): shaping, filters, the advantage estimator. It returns per-sequence advantages and the
  per-sequence loss mask.
* ``policy_loss`` runs per micro-batch with **global** ``Counts``, so summing micro-batch losses gives the
  full-batch loss and gradient exactly (docs/math.md, Aggregation).

``compute_loss`` chains the two on plain tensors: the contract of docs/contracts.md, and what the tests check.
Departures from the papers, all deliberate: the KL "in the reward" (REINFORCE++ style) is folded into the
sequence reward as ``-beta * sum_t k1`` because the estimators here are outcome-level; log-ratios are
clamped at 20 before ``exp`` (changes nothing below a ratio of 4.9e8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grouprl.algo.advantages import ADVANTAGES, GroupContext
from grouprl.algo.aggregation import AGGREGATIONS, Counts
from grouprl.algo.correction import CORRECTIONS, Correction, correction_metrics
from grouprl.algo.filters import FILTERS, SHAPING, GroupView
from grouprl.algo.kl import KL_ESTIMATORS
from grouprl.algo.objectives import OBJECTIVES
from grouprl.algo.presets import AlgoSpec
from grouprl.algo.ratios import RATIOS, masked_token_mean
from grouprl.algo.selection import SELECTIONS, TokenView


@dataclass
class Advantages:
    """Output of ``group_advantages``; every field is per sequence ``[N]``."""

    advantages: torch.Tensor  # float, 0 for sequences outside the statistics
    in_loss: torch.Tensor  # bool, the sequence's tokens enter the loss (and its normaliser)
    rewards: torch.Tensor  # float, the reward after shaping
    metrics: dict[str, torch.Tensor]


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    advantages: torch.Tensor  # [N]
    metrics: dict[str, torch.Tensor]  # detached


def _with_supplied(kwargs: dict, **supplied: object) -> dict:
    """``kwargs`` with each ``None`` that the caller ``supplied`` a value for filled in: a spec field left
    unset falls back to the run's value (``loss_norm_length`` to the generation budget)."""
    return {k: supplied[k] if v is None and k in supplied else v for k, v in kwargs.items()}


def _shaped(view: GroupView, spec: AlgoSpec) -> torch.Tensor:
    """The reward plus every chosen shaping piece's delta, added in order."""
    shaped = view.rewards
    for name in spec.acting("shaping"):
        shaped = shaped + SHAPING.get(name)(view, **spec.kwargs("shaping", name))
    return shaped


def _filtered(view: GroupView, spec: AlgoSpec) -> dict[str, torch.Tensor]:
    """The keep-mask of each filter role (``group``, ``loss``, ``subset``); all True for a role no chosen
    filter has."""
    keep = {role: torch.ones_like(view.truncated) for role in ("group", "loss", "subset")}
    for name in spec.acting("filter"):
        role = FILTERS.info(name)["role"]
        keep[role] = keep[role] & FILTERS.get(name)(view, **spec.kwargs("filter", name))
    return keep


def kept_groups(view: GroupView, spec: AlgoSpec) -> torch.Tensor:
    """``[B]`` bool: the groups that every chosen ``group``-role filter keeps (all True without one). The
    trainer asks it before shaping, on the raw rewards, to decide what to refill (DAPO's dynamic sampling)."""
    keep = torch.ones_like(view.truncated)
    for name in spec.acting("filter"):
        if FILTERS.info(name)["role"] == "group":
            keep = keep & FILTERS.get(name)(view, **spec.kwargs("filter", name))
    return keep.all(dim=1)


def group_advantages(
    rewards: torch.Tensor,  # [N]
    group_size: int,
    lengths: torch.Tensor,  # [N] completion token counts
    spec: AlgoSpec,
    *,
    truncated: torch.Tensor | None = None,  # [N] bool
    accuracy: torch.Tensor | None = None,  # [N]; dynamic sampling tests it (default: the raw rewards)
    kl_penalty: torch.Tensor | None = None,  # [N] sum_t k1(old, ref), when spec.needs has "seq_kl"
) -> Advantages:
    """Shaping → filters → advantage estimator, on the whole rollout (groups contiguous)."""
    N = rewards.shape[0]
    B, G = N // group_size, group_size
    as_groups = lambda x: x.reshape(B, G)  # noqa: E731
    lengths = lengths.to(rewards.dtype)
    no_cap = torch.zeros(N, dtype=torch.bool, device=rewards.device)
    truncated = no_cap if truncated is None else truncated.bool()
    accuracy = rewards if accuracy is None else accuracy
    if "seq_kl" in spec.needs and kl_penalty is None:
        raise ValueError("the kl_in_reward shaping with beta > 0 subtracts beta * sum_t k1(old, ref) from "
                         "the reward; pass kl_penalty=")
    seq_kl = None if kl_penalty is None else as_groups(kl_penalty)
    raw = GroupView(as_groups(rewards), as_groups(accuracy), as_groups(lengths), as_groups(truncated), seq_kl)
    shaped = _shaped(raw, spec).reshape(N)

    view = GroupView(as_groups(shaped), raw.accuracy, raw.lengths, raw.truncated, seq_kl)
    keep = _filtered(view, spec)
    valid, retained = keep["group"], keep["subset"]
    ctx = GroupContext(lengths=view.lengths, valid=valid, retained=retained)
    adv = ADVANTAGES.get(spec.advantage)(view.rewards, ctx, **spec.kwargs("advantage", spec.advantage))

    in_loss = valid & keep["loss"]
    if spec.retain_normalise_over == "retained":  # GFPO's rejected responses leave the normaliser too
        in_loss &= retained

    group_std = view.rewards.std(dim=1, unbiased=False)  # G >= 2 is checked by the callers
    metrics = {
        "reward/mean": shaped.mean(),
        "reward/std": shaped.std(unbiased=False),
        "frac_reward_zero_std": (group_std == 0).to(rewards.dtype).mean(),
        "adv/mean": adv.mean(),
        "adv/std": adv.std(unbiased=False),
        "adv/abs_max": adv.abs().max(),
        "filter/groups_dropped": (~valid[:, 0]).sum().to(rewards.dtype),
        "filter/seqs_out_of_loss": (~in_loss).sum().to(rewards.dtype),
    }
    return Advantages(adv.reshape(N), in_loss.reshape(N), shaped, {k: v.detach() for k, v in metrics.items()})


def _per_unit(values: torch.Tensor, mask: torch.Tensor, counts: Counts) -> torch.Tensor:
    """Mean of a per-token ``[n, T]`` or per-sequence ``[n]`` quantity over the global units."""
    if values.dim() == 1:
        return (values * (mask.sum(-1) > 0).to(mask.dtype)).sum() / max(counts.num_seqs, 1.0)
    return (values * mask).sum() / max(counts.num_tokens, 1.0)


@dataclass
class TokenSelection:
    """(i) The token selections of one mini-batch (``select_tokens``), ``[n, T]`` bool over its rows:
    ``objective`` for the chosen objective (Clip-Cov, KL-Cov), ``masked`` out of the loss (M2PO); ``None``
    where no such selection acts. ``metrics`` are the mini-batch's (global) values."""

    objective: torch.Tensor | None
    masked: torch.Tensor | None
    metrics: dict[str, torch.Tensor]

    def rows(self, index: torch.Tensor) -> TokenSelection:
        """The selection of a micro-batch's rows (metrics stay the mini-batch's)."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return TokenSelection(pick(self.objective), pick(self.masked), self.metrics)

    def blank(self, like: torch.Tensor) -> TokenSelection:
        """Nothing selected, in ``like``'s ``[n, T]`` shape (a padding pass with an empty loss mask)."""
        none = lambda x: None if x is None else torch.zeros_like(like, dtype=torch.bool)  # noqa: E731
        return TokenSelection(none(self.objective), none(self.masked), self.metrics)

    @staticmethod
    def of(chosen: dict, on: torch.Tensor) -> TokenSelection:
        """``select_flat``'s ``[n]`` selections of the in-loss tokens ``on`` ``[N, T]`` (read row by row),
        back in the ``[N, T]`` shape."""
        return TokenSelection(*[_scattered(chosen.get(role), on) for role in ("objective", "mask")],
                              chosen["metrics"])


def select_flat(view: TokenView, spec: AlgoSpec) -> dict[str, torch.Tensor]:
    """(i) Every acting token selection on the flat in-loss tokens of a whole mini-batch, by role
    (``objective``, ``mask``): ``[n]`` bool each, and the metrics (``cov/selected_frac``,
    ``m2po/masked_frac``, ``m2po/m2_before``, ``m2po/m2_after``) as 0-d tensors under ``metrics``."""
    out: dict = {"metrics": {}}
    n = max(len(view.old_logp), 1)
    for name in spec.acting("selection"):
        role = SELECTIONS.info(name)["role"]
        chosen = SELECTIONS.get(name)(view, **spec.kwargs("selection", name))
        out[role] = chosen
        if role == "objective":
            out["metrics"]["cov/selected_frac"] = chosen.sum().double() / n
        else:
            m2 = (view.old_logp - view.sampler_logp).double() ** 2
            out["metrics"].update({"m2po/masked_frac": chosen.sum().double() / n,
                                   "m2po/m2_before": m2.sum() / n,
                                   "m2po/m2_after": m2[~chosen].sum() / max(int((~chosen).sum()), 1)})
    return out


def select_tokens(old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, spec: AlgoSpec, *,
                  sampler_logp: torch.Tensor | None = None, seed: int = 0) -> TokenSelection:
    """(i) The token selections of a whole mini-batch held in one process: ``old_logp``, ``mask`` and
    ``sampler_logp`` ``[N, T]``, ``advantages`` ``[N]``; the in-loss tokens are read row by row."""
    on = mask.bool()
    mu = None if sampler_logp is None else sampler_logp.detach()[on]
    adv = advantages.detach()[:, None].expand_as(on)[on]
    return TokenSelection.of(select_flat(TokenView(old_logp.detach()[on], adv, mu, seed), spec), on)


def _scattered(flat: torch.Tensor | None, on: torch.Tensor) -> torch.Tensor | None:
    """``[n]`` values of the in-loss tokens back to ``[N, T]`` (False elsewhere)."""
    if flat is None:
        return None
    out = torch.zeros_like(on)
    out[on] = flat.to(on.device)
    return out


def _selection_inputs(spec: AlgoSpec, selection: TokenSelection | None, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, dict]:
    """(i) The loss mask without M2PO's masked tokens (they stay in the normaliser), and the ``selected``
    keyword of an objective that names a selection."""
    if not spec.needs_selection:
        return mask, {}
    if selection is None:
        raise ValueError(f"{', '.join(spec.acting('selection'))} select tokens over the whole mini-batch; "
                         "pass selection=select_tokens(...) of the mini-batch, sliced to these rows")
    if selection.masked is not None:
        mask = mask * (~selection.masked).to(mask.dtype)
    wanted = "selection" in OBJECTIVES.info(spec.clip)
    return mask, {"selected": selection.objective & mask.bool()} if wanted else {}
def rollout_correction(
    old_logp: torch.Tensor,  # [N, T] pi_old (on-policy: the detached current log-probs)
    behaviour_logp: torch.Tensor | None,  # [N, T] mu, the sampler's log-probs of the same tokens
    mask: torch.Tensor,  # [N, T] the loss mask
    spec: AlgoSpec,
) -> Correction:
    """The chosen rollout correction of ``w = pi_old / mu`` (docs/algorithms/rollout_correction.md): its
    detached weights, and ``keep``, the loss mask whose ``Counts`` are the normaliser (the mask modes take
    units out of both). A per-row function: a micro-batch gets the rows the whole batch gets."""
    mask = mask.to(old_logp.dtype)
    if "behaviour_logp" not in spec.info("correction").get("needs", ()):
        return CORRECTIONS.get(spec.rollout_correction)(torch.zeros_like(mask), mask)
    if behaviour_logp is None:
        raise ValueError(f"rollout_correction={spec.rollout_correction} weighs by pi_old / mu; pass "
                         "behaviour_logp= (the sampler's log-probs [N, T]), or rollout_correction='none'")
    if tuple(behaviour_logp.shape) != tuple(mask.shape):
        raise ValueError(f"behaviour_logp must have logp's shape {tuple(mask.shape)}, "
                         f"got {tuple(behaviour_logp.shape)}")
    on = mask.bool()
    if not torch.isfinite(behaviour_logp[on]).all():
        raise ValueError("behaviour_logp contains NaN or inf at unmasked positions; fix the sampler's "
                         "log-probs")
    dtype = torch.promote_types(old_logp.dtype, torch.float32)  # the ratio in at least float32
    log_w = torch.where(on, old_logp.detach().to(dtype) - behaviour_logp.detach().to(dtype), 0.0)
    c = CORRECTIONS.get(spec.rollout_correction)(log_w, mask.to(dtype),
                                                  **spec.kwargs("correction", spec.rollout_correction))
    return Correction(c.weight.to(mask.dtype), c.keep.to(mask.dtype), c.ratio, c.units, c.clipped)


def _corrected_terms(term: torch.Tensor, c: Correction) -> torch.Tensor:
    """The policy term times the correction's weight: per token, or per sequence for a one-term-per-sequence
    objective (validation leaves only the sequence modes there, whose weight is constant along a row)."""
    return term * (c.weight if term.dim() == 2 else c.weight[:, 0])


def policy_loss(
    logp: torch.Tensor,  # [n, T], differentiable
    old_logp: torch.Tensor,  # [n, T]
    ref_logp: torch.Tensor | None,  # [n, T]
    mask: torch.Tensor,  # [n, T], the loss mask (completion mask of in-loss sequences)
    advantages: torch.Tensor,  # [n]
    spec: AlgoSpec,
    counts: Counts,
    *,
    norm_length: int | None = None,  # the generation budget, for seq_mean_token_sum_norm
    entropy: torch.Tensor | None = None,  # [n, T] per-token entropies, differentiable; for entropy_coef > 0
    selection: TokenSelection | None = None,  # (i) the mini-batch's select_tokens, these rows; when needed
    behaviour_logp: torch.Tensor | None = None,  # [n, T] the sampler's log-probs mu; for rollout_correction
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The surrogate (plus KL, minus the entropy bonus) of one micro-batch, aggregated with the global
    ``counts``.

    Metrics are this micro-batch's contribution to a **sum** over micro-batches (and ranks): fractions and
    means are already divided by the global counts. With a rollout correction the masked units leave the
    loss here; ``counts`` must be those of ``rollout_correction(...).keep`` for them to leave the normaliser
    too (``compute_loss`` and the trainer do so), and its metrics come from that call, not from here.
    """
    on = mask.bool()
    # Padding may hold anything (even NaN); select rather than multiply, so it cannot leak into the loss.
    logp, old_logp = torch.where(on, logp, 0.0), torch.where(on, old_logp.detach(), 0.0)
    ref_logp = None if ref_logp is None else torch.where(on, ref_logp.detach(), 0.0)
    mask = mask.to(logp.dtype)
    correction = rollout_correction(old_logp, behaviour_logp, mask, spec)
    mask = correction.keep
    opsm = None
    if spec.opsm_delta is not None:  # DeepSeek-V3.2's OPSM: a per-sequence decision, so micro-batches agree
        with torch.no_grad():
            drift = masked_token_mean(old_logp - logp, mask)  # [n] mean log(pi_old / pi_theta)
            opsm = (advantages < 0) & (drift > spec.opsm_delta) & (mask.sum(-1) > 0)
        mask = mask * (~opsm)[:, None].to(mask.dtype)  # out of the loss; the global counts keep it
    mask, selected = _selection_inputs(spec, selection, mask)
    log_ratio = RATIOS.get(spec.importance_sampling_level)(logp, old_logp.detach(), mask)
    surrogate = OBJECTIVES.get(spec.clip)(log_ratio, advantages.detach(), mask, logp,
                                          **spec.kwargs("objective", spec.clip), **selected)
    agg_kwargs = _with_supplied(spec.kwargs("aggregation", spec.loss_type), norm_length=norm_length)
    aggregate = AGGREGATIONS.get(spec.loss_type)
    pg_loss = -aggregate(_corrected_terms(surrogate.term, correction), mask, counts, **agg_kwargs)
    loss = pg_loss

    with torch.no_grad():
        ratio = torch.exp(log_ratio.clamp(max=20.0))
        metrics = {
            "loss/policy": pg_loss.detach(),
            "clip/low_frac": _per_unit(surrogate.clipped_low, mask, counts),
            "clip/high_frac": _per_unit(surrogate.clipped_high, mask, counts),
            "ratio/mean": _per_unit(ratio, mask, counts),
        }
    if ref_logp is not None and spec.kl_in_loss:
        kl = KL_ESTIMATORS.get(spec.kl_estimator)(logp, ref_logp)  # [n, T]
        kl_loss = aggregate(kl, mask, counts, **agg_kwargs) if not spec.sequence_level else \
            AGGREGATIONS.get("seq_mean")(kl, mask, counts)
        loss = loss + spec.beta * kl_loss
        metrics["loss/kl"] = kl_loss.detach()
    if opsm is not None:
        metrics["opsm/seqs_masked"] = opsm.to(logp.dtype).sum() / max(counts.num_seqs, 1.0)
    if spec.entropy_coef > 0:
        if entropy is None:
            raise ValueError(f"entropy_coef={spec.entropy_coef} adds -entropy_coef * H to the loss; pass "
                             "entropy= (the per-token entropies [N, T]), or entropy_coef=0")
        entropy = torch.where(on, entropy, 0.0)
        # aggregated as the policy term; one term per sequence (GSPO, GMPO) takes its token mean, as the KL
        ent = aggregate(entropy, mask, counts, **agg_kwargs) if not spec.sequence_level else \
            AGGREGATIONS.get("seq_mean")(entropy, mask, counts)
        loss = loss - spec.entropy_coef * ent
        metrics["loss/entropy"] = ent.detach()
    if ref_logp is not None:
        with torch.no_grad():
            metrics["kl/mean"] = _per_unit(KL_ESTIMATORS.get("k3")(logp, ref_logp), mask, counts)
    return loss, metrics


def check_inputs(
    rewards: torch.Tensor,
    group_size: int,
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    mask: torch.Tensor,
    truncated: torch.Tensor | None = None,
) -> None:
    """Reject malformed inputs with a message naming the argument and the fix."""
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2, got {group_size!r}: a group of one has no "
                         "baseline to compare against; sample at least 2 completions per prompt")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}; "
                         "flatten groups contiguously")
    N = rewards.shape[0]
    if N == 0 or N % group_size:
        raise ValueError(f"rewards has {N} entries, not a positive multiple of group_size={group_size}; "
                         "pass whole groups, contiguous")
    if logp.dim() != 2 or logp.shape[0] != N:
        raise ValueError(f"logp must be [N={N}, T], got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t is not None and tuple(t.shape) != tuple(logp.shape):
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(t.shape)}")
    if truncated is not None and tuple(truncated.shape) != (N,):
        raise ValueError(f"truncated must be [N={N}], got shape {tuple(truncated.shape)}")
    if mask.sum() == 0:
        raise ValueError("mask has no unmasked token: there is nothing to train on; "
                         "check the completion mask")
    on = mask.bool()
    for name, t in (("rewards", rewards), ("logp", logp), ("old_logp", old_logp), ("ref_logp", ref_logp)):
        if t is None:
            continue
        values = t if name == "rewards" else t[on]
        if not torch.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or inf (at unmasked positions); fix the producer, or give "
                             "the sample a finite fallback value")


def compute_loss(
    rewards: torch.Tensor,  # [N]
    group_size: int,
    logp: torch.Tensor,  # [N, T]
    old_logp: torch.Tensor | None,  # [N, T]; None: on-policy (equal to logp, detached)
    ref_logp: torch.Tensor | None,  # [N, T]; needed when spec.beta > 0
    mask: torch.Tensor,  # [N, T]
    spec: AlgoSpec,
    *,
    truncated: torch.Tensor | None = None,  # [N] bool
    accuracy: torch.Tensor | None = None,  # [N]
    max_new_tokens: int | None = None,
    entropy: torch.Tensor | None = None,  # [N, T] per-token entropies; needed when spec.entropy_coef > 0
    behaviour_logp: torch.Tensor | None = None,  # [N, T] the sampler's log-probs mu: rollout_correction, M2PO
    seed: int = 0,  # (i) seeds Clip-Cov's random draw
) -> LossOutput:
    """Advantages and loss of any preset on plain tensors (docs/contracts.md).

    An empty completion (a mask row of zeros) contributes nothing to the loss and never a NaN.
    """
    if old_logp is None:
        old_logp = logp.detach()
    check_inputs(rewards, group_size, logp, old_logp, ref_logp, mask, truncated)
    if entropy is not None and tuple(entropy.shape) != tuple(logp.shape):
        raise ValueError(f"entropy must have logp's shape {tuple(logp.shape)}, got {tuple(entropy.shape)}")
    if spec.needs_ref_logp and ref_logp is None:
        raise ValueError(f"beta={spec.beta} needs ref_logp (the reference policy's log-probs); "
                         "pass it, or beta=0")
    mask = mask.to(logp.dtype)
    kl_penalty = None
    if "seq_kl" in spec.needs:  # the in-reward KL: its estimator (k1) at pi_old, summed per sequence
        kl = KL_ESTIMATORS.get(spec.kl_estimator)(old_logp, ref_logp)
        kl_penalty = torch.where(mask.bool(), kl, 0.0).sum(-1).detach()
    adv = group_advantages(rewards.to(logp.dtype), group_size, mask.sum(-1), spec, truncated=truncated,
                           accuracy=accuracy, kl_penalty=kl_penalty)
    loss_mask = mask * adv.in_loss[:, None].to(mask.dtype)
    loss_mask, corr_metrics = _corrected_mask(old_logp, behaviour_logp, loss_mask, spec)
    mu = old_logp if behaviour_logp is None else behaviour_logp
    selection = None if not spec.needs_selection else \
        select_tokens(old_logp, adv.advantages, loss_mask, spec, sampler_logp=mu, seed=seed)
    loss, metrics = policy_loss(logp, old_logp, ref_logp, loss_mask, adv.advantages, spec,
                                Counts.of(loss_mask), norm_length=max_new_tokens, entropy=entropy,
                                selection=selection, behaviour_logp=behaviour_logp)
    return LossOutput(loss, adv.advantages, {**adv.metrics, **corr_metrics, **metrics,
                                             **(selection.metrics if selection is not None else {})})


def _corrected_mask(old_logp: torch.Tensor, behaviour_logp: torch.Tensor | None, loss_mask: torch.Tensor,
                    spec: AlgoSpec) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss mask the rollout correction keeps (its ``Counts`` are the normaliser), and its metrics; the
    mask unchanged and no metrics without one."""
    if "behaviour_logp" not in spec.needs:
        return loss_mask, {}
    c = rollout_correction(old_logp, behaviour_logp, loss_mask, spec)
    metrics = correction_metrics(c.sums())
    like = {"dtype": loss_mask.dtype, "device": loss_mask.device}
    return c.keep, {k: torch.tensor(v, **like) for k, v in metrics.items()}
