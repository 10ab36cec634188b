"""The hand-worked examples of docs/algorithms/{clip_cov,kl_cov,m2po}.md (issue 18's token selections),
float64, to 1e-12: which tokens are selected, the loss, and autograd's dLoss/dl against the values derived on
those pages.

The "cov board": four sequences of lengths 2, 2, 1, 1 (six tokens, read row by row), A = [1, -1, 1, -1]
(R = [2, 0, 2, 0], group-centred), pi_old and the ratios below. Token values, in that order:

    A            1,    1,   -1,   -1,    1,   -1       mean 0
    l_old     -0.5,   -3,   -4,   -1,   -1, -2.5       mean -2
    Cov        1.5,   -1,    2,   -1,    1,  0.5       (l_old + 2) * A
    r          1.1,  1.5,  0.9,  1.5,  0.5,    4
"""

import math

import pytest
import torch

from grouprl.algo import TokenView, compute_loss, preset, select_tokens
from grouprl.algo.selection import cov_random, cov_top, covariance, m2po

EXACT = 1e-12
OLD = [-0.5, -3, -4, -1, -1, -2.5]
R = [1.1, 1.5, 0.9, 1.5, 0.5, 4.0]
SHIFT = [0.1, 0.0, 0.5, 0.0, -0.2, 0.0]  # log pi_old - log mu, for M2PO
ROWS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)]


def board(values):
    """Six token values into the ``[4, 2]`` board (0 on the padding)."""
    out = torch.zeros(4, 2, dtype=torch.float64)
    for (i, t), v in zip(ROWS, values):
        out[i, t] = v
    return out


def inputs():
    mask = board([1.0] * 6)
    old = board(OLD)
    new = board([o + math.log(r) for o, r in zip(OLD, R)])
    mu = board([o - d for o, d in zip(OLD, SHIFT)])
    return old, new, mask, mu


def flat(x):
    return [x[i, t].item() for i, t in ROWS]


def run(spec, **kw):
    old, new, mask, mu = inputs()
    logp = new.clone().requires_grad_(True)
    out = compute_loss(torch.tensor([2.0, 0, 2, 0], dtype=torch.float64), 4, logp, old, None, mask,
                       spec.replace(advantage="group_center"), behaviour_logp=mu, **kw)
    out.loss.backward()
    return out, flat(logp.grad)


def view():
    return TokenView(torch.tensor(OLD, dtype=torch.float64), torch.tensor([1.0, 1, -1, -1, 1, -1],
                                                                         dtype=torch.float64))


def test_covariance_of_the_board():
    assert covariance(view()).tolist() == pytest.approx([1.5, -1, 2, -1, 1, 0.5], abs=EXACT)


def test_cov_top_takes_the_highest_covariances():
    assert torch.nonzero(cov_top(view(), ratio=1 / 3)).flatten().tolist() == [0, 2]  # k = 2: Cov 2, 1.5
    assert torch.nonzero(cov_top(view(), ratio=1e-4)).flatten().tolist() == [2]  # at least one token


def test_cov_random_draws_among_the_band_with_the_seeded_generator():
    # candidates 1 < Cov < 5: tokens 0 (1.5) and 2 (2); token 4 (Cov = 1) is not strictly inside
    assert torch.nonzero(cov_random(view(), ratio=0.5, lb=1.0, ub=5.0)).flatten().tolist() == [0, 2]
    for seed in range(4):  # k = floor(0.2 * 6) = 1: the first of randperm(2) from the seeded generator
        first = torch.randperm(2, generator=torch.Generator().manual_seed(seed))[0].item()
        got = cov_random(TokenView(view().old_logp, view().advantages, seed=seed), ratio=0.2, lb=1.0, ub=5.0)
        assert torch.nonzero(got).flatten().tolist() == [[0, 2][first]]
    assert not cov_random(view(), ratio=0.5, lb=2.0, ub=5.0).any()  # nobody strictly inside: nothing


def test_clip_cov_detaches_the_selected_tokens_and_keeps_the_value():
    """ratio 0.5 selects both candidates (tokens 0 and 2, both inside PPO's band). PPO 0.2/0.2 terms:
    1.1, 1.2 (clipped), -0.9, -1.5, 0.5, -4; token mean: loss = 3.6 / 6 = 0.6 with or without Clip-Cov."""
    out, grad = run(preset("clip_cov", clip_cov_ratio=0.5))
    assert out.loss.item() == pytest.approx(3.6 / 6, abs=EXACT)
    assert grad == pytest.approx([0.0, 0.0, 0.0, 1.5 / 6, -0.5 / 6, 4.0 / 6], abs=EXACT)
    assert out.metrics["cov/selected_frac"].item() == pytest.approx(2 / 6, abs=EXACT)
    plain, plain_grad = run(preset("dapo", filters=[], shaping=[], epsilon_high=0.2))
    assert plain.loss.item() == pytest.approx(out.loss.item(), abs=EXACT)
    assert plain_grad == pytest.approx([-1.1 / 6, 0.0, 0.9 / 6, 1.5 / 6, -0.5 / 6, 4.0 / 6], abs=EXACT)


def test_kl_cov_penalises_the_top_covariance_tokens():
    """k = floor(6/3) = 2: tokens 2 and 0. Terms r A = 1.1, 1.5, -0.9, -1.5, 0.5, -4 (sum -3.3), minus
    |log 1.1| and |log 0.9|; d/dl of r A - |log r| is 1.1 - 1 on token 0 and -0.9 + 1 on token 2."""
    out, grad = run(preset("kl_cov", kl_cov_ratio=1 / 3))
    assert out.loss.item() == pytest.approx((3.3 + math.log(1.1) - math.log(0.9)) / 6, abs=EXACT)
    assert grad == pytest.approx([-0.1 / 6, -1.5 / 6, -0.1 / 6, 1.5 / 6, -0.5 / 6, 4.0 / 6], abs=EXACT)
    assert out.metrics["cov/selected_frac"].item() == pytest.approx(2 / 6, abs=EXACT)
    half, _ = run(preset("kl_cov", kl_cov_ratio=1 / 3, beta_kl_cov=0.5))
    assert half.loss.item() == pytest.approx((3.3 + 0.5 * (math.log(1.1) - math.log(0.9))) / 6, abs=EXACT)


def test_kl_cov_on_policy_is_the_plain_policy_gradient():
    old, _, mask, _ = inputs()
    rewards = torch.tensor([2.0, 0, 2, 0], dtype=torch.float64)
    logp = old.clone().requires_grad_(True)
    out = compute_loss(rewards, 4, logp, None, None, mask, preset("kl_cov", advantage="group_center",
                                                                  kl_cov_ratio=0.5))
    out.loss.backward()
    assert flat(logp.grad) == pytest.approx([-a / 6 for a in [1, 1, -1, -1, 1, -1]], abs=EXACT)


@pytest.mark.parametrize("tau,masked", [(0.04, [2]), (0.01, [2]), (0.005, [2, 4]), (0.06, []),
                                        (1e-9, [0, 2, 4])])
def test_m2po_masks_the_largest_second_moments_until_the_mean_is_below_tau(tau, masked):
    """M2 = (l_old - log mu)^2 = 0.01, 0, 0.25, 0, 0.04, 0 (mean 0.05). Masking 0.25 leaves 0.05/5 = 0.01;
    then 0.04 leaves 0.01/4 = 0.0025; then 0.01 leaves 0: the mean of what is left must be <= tau."""
    old, _, mask, mu = inputs()
    got = m2po(TokenView(old[mask.bool()], torch.zeros(6, dtype=torch.float64), mu[mask.bool()]), tau=tau)
    assert torch.nonzero(got).flatten().tolist() == masked


def test_m2po_preset_loss_and_gradient():
    """tau 0.04 masks token 2 (out of the loss, still in the normaliser of 6): unclipped r A terms,
    -(1.1 + 1.5 - 1.5 + 0.5 - 4)/6 = 0.4."""
    out, grad = run(preset("m2po"))
    assert out.loss.item() == pytest.approx(2.4 / 6, abs=EXACT)
    assert grad == pytest.approx([-1.1 / 6, -1.5 / 6, 0.0, 1.5 / 6, -0.5 / 6, 4.0 / 6], abs=EXACT)
    assert out.metrics["m2po/masked_frac"].item() == pytest.approx(1 / 6, abs=EXACT)
    assert out.metrics["m2po/m2_before"].item() == pytest.approx(0.3 / 6, abs=EXACT)
    assert out.metrics["m2po/m2_after"].item() == pytest.approx(0.05 / 5, abs=EXACT)


def test_select_tokens_reads_the_in_loss_tokens_row_by_row():
    old, _, mask, mu = inputs()
    adv = torch.tensor([1.0, -1, 1, -1], dtype=torch.float64)
    sel = select_tokens(old, adv, mask, preset("kl_cov", kl_cov_ratio=1 / 3), sampler_logp=mu)
    assert sel.masked is None and sel.objective.tolist() == [[True, False], [True, False], [False, False],
                                                             [False, False]]
    both = select_tokens(old, adv, mask, preset("kl_cov", kl_cov_ratio=1 / 3, m2po_tau=0.04), sampler_logp=mu)
    assert both.masked.tolist() == [[False, False], [True, False], [False, False], [False, False]]


@pytest.mark.parametrize("overrides,message", [
    (dict(beta_kl_cov=-1.0), "beta_kl_cov must be >= 0"),
    (dict(kl_cov_ratio=0.0), "fractions of the tokens, in (0, 1]"),
    (dict(importance_sampling_level="sequence", loss_type="seq_mean"), "selects tokens by their covariance"),
    (dict(m2po_tau=0.0), "m2po_tau must be > 0"),
    (dict(entropy_target=-1.0), "entropy_target and entropy_target_lr must be > 0"),
])
def test_incoherent_settings_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        preset("kl_cov", **overrides)
    with pytest.raises(ValueError, match="clip_cov_lb must be below clip_cov_ub"):
        preset("clip_cov", clip_cov_lb=5.0)


def test_policy_loss_without_the_selection_says_how_to_fix():
    old, new, mask, _ = inputs()
    from grouprl.algo import Counts, policy_loss
    with pytest.raises(ValueError, match="pass selection=select_tokens"):
        policy_loss(new, old, None, mask, torch.ones(4, dtype=torch.float64), preset("clip_cov"),
                    Counts.of(mask))
