"""Rollout correction (docs/algorithms/rollout_correction.md): the page's worked example in float64 to 1e-12,
a planted mismatch whose weights and masks are known, the exact no-op at mu = pi_old, micro-batching and
padding, and the refusals."""

import math

import pytest
import torch

from algo_examples import rounding_tol
from grouprl.algo import PRESETS, Counts, compute_loss, group_advantages, policy_loss, preset
from grouprl.algo.loss import rollout_correction
from reference.test_against_loop import random_batch

EXACT = 1e-12

# The page's example: one group of two, lengths 3 and 2, pi_old = -1 on every token and on-policy (pi_theta =
# pi_old, so r = 1), rloo with R = [1, 0] (A = [1, -1]), token-mean over 5 tokens; the sampler's ratios:
W = [[1.0, 2.5, 0.4], [3.0, 1.5, None]]


def example(mode, **bounds):
    """``(loss, dLoss/dl, metrics)`` of the page's example under ``rollout_correction=mode``."""
    mask = torch.tensor([[w is not None for w in row] for row in W], dtype=torch.float64)
    old = torch.full((2, 3), -1.0, dtype=torch.float64) * mask
    log_w = torch.tensor([[math.log(w) if w else 0.0 for w in row] for row in W], dtype=torch.float64)
    mu = old - log_w  # w = pi_old / mu
    spec = preset("rloo", rollout_correction=mode, **bounds)
    logp = old.clone().requires_grad_(True)
    out = compute_loss(torch.tensor([1.0, 0.0], dtype=torch.float64), 2, logp, None, None, mask, spec,
                       behaviour_logp=mu if mode != "none" else None)
    out.loss.backward()
    return out.loss.item(), logp.grad, out.metrics


G2 = math.sqrt(3.0 * 1.5)  # sequence 2's geometric mean, 2.1213...; TRL's product would be 4.5
PAGE = [  # mode, bounds, loss, gradient rows, ratio_mean, ratio_max, frac_clipped
    ("none", {}, -(3 - 2) / 5, [[-1 / 5] * 3, [1 / 5] * 2], None, None, None),
    ("token_truncate", {}, -((1 + 2 + 0.4) - (2 + 1.5)) / 5,
     [[-1 / 5, -2 / 5, -0.4 / 5], [2 / 5, 1.5 / 5]], 8.4 / 5, 3.0, 2 / 5),
    ("token_mask", {"rollout_correction_min": 0.5}, -(1 - 1.0) / 2,
     [[-1 / 2, 0.0, 0.0], [0.0, 1 / 2]], 8.4 / 5, 3.0, 3 / 5),
    ("sequence_truncate", {}, -(3 * 1.0 - 2 * 2.0) / 5, [[-1 / 5] * 3, [2 / 5] * 2], (1 + G2) / 2, G2, 1 / 2),
    ("sequence_mask", {"rollout_correction_min": 0.5}, -3 / 3, [[-1 / 3] * 3, [0.0] * 2], (1 + G2) / 2, G2,
     1 / 2),
]


@pytest.mark.parametrize("mode,bounds,loss,grad,ratio_mean,ratio_max,frac", PAGE, ids=[p[0] for p in PAGE])
def test_the_worked_example_of_the_page(mode, bounds, loss, grad, ratio_mean, ratio_max, frac):
    got, got_grad, metrics = example(mode, **bounds)
    assert got == pytest.approx(loss, abs=EXACT)
    rows = [got_grad[0].tolist(), got_grad[1, :2].tolist()]
    assert rows == [pytest.approx(g, abs=EXACT) for g in grad]
    if mode == "none":
        assert not any(k.startswith("rollout_corr/") for k in metrics)
        return
    assert metrics["rollout_corr/ratio_mean"].item() == pytest.approx(ratio_mean, abs=EXACT)
    assert metrics["rollout_corr/ratio_max"].item() == pytest.approx(ratio_max, abs=EXACT)
    assert metrics["rollout_corr/frac_clipped"].item() == pytest.approx(frac, abs=EXACT)


def test_a_planted_mismatch_gives_the_planted_weights_and_masks():
    """mu = pi_old - log w with known w: the truncation weights are min(w, max), the masks drop exactly the
    tokens (sequences) whose w (geometric mean) leaves [min, max]; padding is never a unit."""
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    w = torch.tensor([[0.3, 1.0, 1.9, 2.4], [1.2, 4.0, 9.0, 9.0], [0.6, 9.0, 9.0, 9.0], [9.0] * 4],
                     dtype=torch.float64)
    old = -torch.rand(4, 4, generator=g, dtype=torch.float64) * 3
    mu = old - torch.log(w)
    on = mask.bool()
    c = rollout_correction(old, mu, mask, preset("grpo", rollout_correction="token_truncate"))
    torch.testing.assert_close(c.weight, torch.where(on, w.clamp(max=2.0), 1.0), atol=EXACT, rtol=0)
    assert torch.equal(c.keep, mask) and c.clipped[on].tolist() == [False, False, False, True, False, True,
                                                                   False]
    c = rollout_correction(old, mu, mask, preset("grpo", rollout_correction="token_mask",
                                                 rollout_correction_min=0.5))
    assert c.keep.tolist() == [[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert torch.equal(c.weight, torch.ones_like(mask))
    geo = [(0.3 * 1.0 * 1.9 * 2.4) ** 0.25, math.sqrt(1.2 * 4.0), 0.6]  # 1.0887, 2.1909, 0.6
    c = rollout_correction(old, mu, mask, preset("grpo", rollout_correction="sequence_truncate"))
    assert c.ratio[:3].tolist() == pytest.approx(geo, abs=EXACT) and c.units.tolist() == [True] * 3 + [False]
    assert c.weight[:3, 0].tolist() == pytest.approx([geo[0], 2.0, 0.6], abs=EXACT)
    c = rollout_correction(old, mu, mask, preset("grpo", rollout_correction="sequence_mask",
                                                 rollout_correction_min=0.65))
    assert c.keep.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_token_truncate_with_mu_equal_to_pi_old_is_the_uncorrected_loss_bitwise(name):
    """w = exp(0) = 1 exactly, min(1, max) = 1, and a product by 1 is exact: the same bits. The presets
    with one term per sequence (which refuse token modes) take sequence_truncate, exact for the same
    reason."""
    rewards, new, old, ref, mask, truncated = random_batch(2, 4, 2, 5)
    spec = PRESETS[name]
    mode = "sequence_truncate" if spec.sequence_level else "token_truncate"
    kw = dict(truncated=truncated, max_new_tokens=5)
    outs = []
    for s, mu in ((spec, None), (preset(spec, rollout_correction=mode), old.clone())):
        logp = new.clone().requires_grad_(True)
        out = compute_loss(rewards, 4, logp, old, ref, mask, s, behaviour_logp=mu, **kw)
        out.loss.backward()
        outs.append((out.loss.detach(), logp.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("splits", [[5, 7], [1, 4, 7]])
def test_micro_batches_with_the_corrected_counts_equal_the_full_batch(mode, splits):
    """What the trainer does: the correction's keep-mask on the whole batch gives the counts, then
    policy_loss per micro-batch with the micro-batch's slice of mu."""
    G = 4
    rewards, new, old, ref, mask, truncated = random_batch(4, G, 3, 6)
    mu = old - 0.4 * torch.randn(old.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    bounds = {"rollout_correction_max": 1.3} | ({"rollout_correction_min": 0.8} if "mask" in mode else {})
    spec = preset("grpo", rollout_correction=mode, **bounds)
    adv = group_advantages(rewards, G, mask.sum(-1), spec, truncated=truncated)
    keep = rollout_correction(old, mu, mask * adv.in_loss[:, None], spec).keep
    counts = Counts.of(keep)
    logp = new.clone().requires_grad_(True)
    want = compute_loss(rewards, G, logp, old, ref, mask, spec, truncated=truncated, behaviour_logp=mu)
    want.loss.backward()
    want_grad, logp.grad = logp.grad.clone(), None
    total = torch.zeros((), dtype=torch.float64)
    for part in torch.split(torch.arange(12), splits):
        part_loss, _ = policy_loss(logp[part], old[part], ref[part], keep[part], adv.advantages[part], spec,
                                   counts, behaviour_logp=mu[part])
        part_loss.backward()
        total += part_loss.detach()
    atol = rounding_tol(new, G)
    assert total.item() == pytest.approx(want.loss.item(), abs=atol)
    torch.testing.assert_close(logp.grad, want_grad, atol=atol, rtol=0)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_padding_width_and_its_contents_change_nothing(mode):
    rewards, new, old, ref, mask, _ = random_batch(3, 4, 3, 6)
    mu = old - 0.4 * torch.randn(old.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    spec = preset("dapo", rollout_correction=mode, rollout_correction_max=1.3)

    def run(pad):
        grow = lambda x, v=0.0: torch.cat([x, torch.full((x.shape[0], pad), v, dtype=x.dtype)], 1)  # noqa: E731
        garbage = torch.where(mask.bool(), mu, float("nan"))  # mu off the mask may be anything
        logp = grow(new).requires_grad_(True)
        out = compute_loss(rewards, 4, logp, grow(old), grow(ref), grow(mask), spec, max_new_tokens=8,
                           behaviour_logp=grow(garbage, float("inf")))
        out.loss.backward()
        return out.loss.item(), logp.grad[:, :6], out.metrics["rollout_corr/frac_clipped"].item()

    base, wide = run(0), run(5)
    atol = rounding_tol(new, 4)
    assert wide[0] == pytest.approx(base[0], abs=atol) and wide[2] == base[2] and math.isfinite(base[0])
    torch.testing.assert_close(wide[1], base[1], atol=atol, rtol=0)


def test_without_behaviour_logprobs_a_correction_says_how_to_fix():
    rewards, new, old, ref, mask, _ = random_batch(1, 4, 2, 5)
    with pytest.raises(ValueError, match="pass behaviour_logp="):
        compute_loss(rewards, 4, new, old, ref, mask, preset("grpo", rollout_correction="token_mask"))
    # none reads no mu: passing one changes nothing
    a = compute_loss(rewards, 4, new, old, ref, mask, PRESETS["grpo"])
    b = compute_loss(rewards, 4, new, old, ref, mask, PRESETS["grpo"], behaviour_logp=old - 1)
    assert torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("overrides,message", [
    (dict(rollout_correction="token_clip"), "unknown rollout correction 'token_clip'"),
    (dict(rollout_correction="token_truncate", rollout_correction_max=1.0),
     "rollout_correction_max must be > 1"),
    (dict(rollout_correction="token_mask", rollout_correction_min=1.0), "rollout_correction_min must be in"),
    (dict(rollout_correction="token_mask", rollout_correction_min=-0.1), "rollout_correction_min must be in"),
    (dict(rollout_correction="token_truncate", rollout_correction_min=0.5),
     "rollout_correction_min is read by token_mask, sequence_mask, not by token_truncate"),
    (dict(rollout_correction_max=3.0), "rollout_correction_max is read by"),
])
def test_incoherent_corrections_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset("grpo", **overrides)


@pytest.mark.parametrize("name,mode,message", [
    ("gspo", "sequence_mask", "already a per-sequence geometric mean, clipped per sequence"),
    ("gspo_token", "sequence_mask", "already a per-sequence geometric mean, clipped per sequence"),
    ("gspo", "token_truncate", "gives one term per sequence"),
    ("gmpo", "token_mask", "gives one term per sequence"),
])
def test_corrections_that_do_not_fit_the_objective_are_refused(name, mode, message):
    with pytest.raises(ValueError, match=message):
        preset(name, rollout_correction=mode)
    preset(name, rollout_correction="sequence_truncate")  # a weight on the sequence's term always fits
