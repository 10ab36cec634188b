"""The hand-worked examples of docs/algorithms/{maxrl,gppo,ce_gppo}.md (issue 18's pieces), float64, to 1e-12:
advantages, loss, and autograd's dLoss/dl against the values derived by hand on those pages.

Every expected value is written as the arithmetic of the page (``0.75 / (0.25 + 1e-6)``), not as a rounded
decimal, so the only error left is float64's rounding of a handful of operations (well below 1e-12)."""

import math

import pytest
import torch

from grouprl.algo import ADVANTAGES, GroupContext, compute_loss, preset
from grouprl.algo.objectives import gppo

EXACT = 1e-12

# The "clip board": four sequences, lengths 2, 2, 1, 1, pi_old = -1 everywhere, and ratios chosen so that each
# case of a clipped objective occurs once (docs/algorithms/gppo.md, Worked example).
RATIOS = [[1.5, 1.0], [0.5, 1.5], [0.5, None], [4.0, None]]


def clip_board():
    """``(old, new, mask)`` ``[4, 2]`` float64: ``new = old + log r`` on the unmasked tokens."""
    old = torch.full((4, 2), -1.0, dtype=torch.float64)
    mask = torch.tensor([[r is not None for r in row] for row in RATIOS], dtype=torch.float64)
    log_r = torch.tensor([[math.log(r) if r else 0.0 for r in row] for row in RATIOS], dtype=torch.float64)
    return old, old + log_r, mask


def loss_and_grad(spec, rewards, old, new, mask):
    logp = new.clone().requires_grad_(True)
    out = compute_loss(torch.tensor(rewards, dtype=torch.float64), 4, logp, old, None, mask, spec)
    out.loss.backward()
    return out, logp.grad


# MaxRL -----------------------------------------------------------------------------------------------------

EPS = 1e-6
MAXRL_GROUPS = [
    ([1, 0, 0, 0], [0.75 / (0.25 + EPS)] + [-0.25 / (0.25 + EPS)] * 3),  # solved once: 3, -1 (x 1/(1+4e-6))
    ([1, 1, 0, 0], [0.5 / (0.5 + EPS)] * 2 + [-0.5 / (0.5 + EPS)] * 2),
    ([1, 1, 1, 1], [0.0] * 4),  # all solved: numerator 0
    ([0, 0, 0, 0], [0.0] * 4),  # none solved: mean 0, so 0 (the formula's numerator is 0 too)
    ([-1, 0, 0, 0], [0.0] * 4),  # mean -1/4 < 0: no signal rather than flipped signs
    ([1, -1, 0, 0], [0.0] * 4),  # mean exactly 0: 0, never a division by eps alone
    ([0.5, 0.25, 0.25, 0], [0.25 / (0.25 + EPS), 0.0, 0.0, -0.25 / (0.25 + EPS)]),  # partial credit
]


def test_maxrl_advantages_of_the_page():
    rewards = torch.tensor([r for r, _ in MAXRL_GROUPS], dtype=torch.float64)  # [7, 4]
    on = torch.ones_like(rewards, dtype=torch.bool)
    got = ADVANTAGES.get("maxrl")(rewards, GroupContext(torch.ones_like(rewards), on, on), eps=EPS)
    assert got.tolist() == [pytest.approx(a, abs=EXACT) for _, a in MAXRL_GROUPS]


def test_maxrl_preset_loss_and_gradient():
    """maxrl on the clip board with R = [1, 0, 0, 0]: A = [a, -b, -b, -b], a = 0.75/0.250001,
    b = 0.25/0.250001; ppo_clip 0.2/0.2, token mean over 6 tokens."""
    old, new, mask = clip_board()
    out, grad = loss_and_grad(preset("maxrl"), [1, 0, 0, 0], old, new, mask)
    a, b = 0.75 / (0.25 + EPS), 0.25 / (0.25 + EPS)
    assert out.advantages.tolist() == pytest.approx([a, -b, -b, -b], abs=EXACT)
    # seq 1 (A > 0): r = 1.5 clipped at 1.2, r = 1 unclipped; seq 2 (A < 0): r = 0.5 clipped at 0.8,
    # r = 1.5 unclipped (min picks 1.5 * A); seq 3 (A < 0): r = 0.5 clipped at 0.8; seq 4 (A < 0): r = 4.
    terms = [1.2 * a, 1.0 * a, -0.8 * b, -1.5 * b, -0.8 * b, -4.0 * b]
    assert out.loss.item() == pytest.approx(-sum(terms) / 6, abs=EXACT)
    # d/dl of the unclipped r A is r A; clipped tokens have none
    want = [[0.0, -a / 6], [0.0, 1.5 * b / 6], [0.0, 0.0], [4.0 * b / 6, 0.0]]
    assert grad.tolist() == [pytest.approx(row, abs=EXACT) for row in want]


# GPPO and CE-GPPO ------------------------------------------------------------------------------------------

# A = [1, -1, 1, -1] (R = [2, 0, 2, 0], group-centred); eps_low 0.2, eps_high 0.28, dual-clip c = 3.
# token (A, r)        PPO value, grad    GPPO value, grad       CE-GPPO (beta_1 0.75, beta_2 1)
# 1.1 (+1, 1.5) high  1.28, 0            1.28, 1.28             1.28, 1.28
# 1.2 (+1, 1.0)       1, 1               1, 1                   1, 1
# 2.1 (-1, 0.5) low   -0.8, 0            -0.8, -0.8             -0.6, -0.6
# 2.2 (-1, 1.5)       -1.5, -1.5         -1.5, -1.5             -1.5, -1.5
# 3.1 (+1, 0.5)       0.5, 0.5           0.5, 0.5               0.5, 0.5
# 4.1 (-1, 4.0) dual  -3, 0              -3, 0                  -3, 0
GPPO_VALUES = {"gppo": [[1.28, 1.0], [-0.8, -1.5], [0.5, 0.0], [-3.0, 0.0]],
               "ce_gppo": [[1.28, 1.0], [-0.6, -1.5], [0.5, 0.0], [-3.0, 0.0]]}
GPPO_GRADS = {"gppo": [[1.28, 1.0], [-0.8, -1.5], [0.5, 0.0], [0.0, 0.0]],
              "ce_gppo": [[1.28, 1.0], [-0.6, -1.5], [0.5, 0.0], [0.0, 0.0]]}


@pytest.mark.parametrize("name", ["gppo", "ce_gppo"])
def test_gppo_term_value_and_gradient_per_token(name):
    old, new, mask = clip_board()
    spec = preset(name)
    logp = new.clone().requires_grad_(True)
    surrogate = gppo(logp - old, torch.tensor([1.0, -1, 1, -1], dtype=torch.float64), mask, logp,
                     **spec.kwargs("objective", "gppo"))
    (grad,) = torch.autograd.grad((surrogate.term * mask).sum(), logp)
    assert (surrogate.term * mask).tolist() == [pytest.approx(r, abs=EXACT) for r in GPPO_VALUES[name]]
    assert grad.tolist() == [pytest.approx(r, abs=EXACT) for r in GPPO_GRADS[name]]
    assert surrogate.clipped_low[1, 0] and surrogate.clipped_high[0, 0]
    assert (surrogate.clipped_low * mask).sum() == 1 and (surrogate.clipped_high * mask).sum() == 1


@pytest.mark.parametrize("name", ["gppo", "ce_gppo"])
def test_gppo_presets_loss_and_gradient(name):
    """Through compute_loss: token mean over the 6 tokens, loss = -(sum of terms)/6, dLoss/dl = -grad/6."""
    old, new, mask = clip_board()
    out, grad = loss_and_grad(preset(name, advantage="group_center"), [2, 0, 2, 0], old, new, mask)
    assert out.advantages.tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=EXACT)
    assert out.loss.item() == pytest.approx(-sum(map(sum, GPPO_VALUES[name])) / 6, abs=EXACT)
    want = [[-g / 6 for g in row] for row in GPPO_GRADS[name]]
    assert grad.tolist() == [pytest.approx(row, abs=EXACT) for row in want]
    assert out.metrics["clip/low_frac"].item() == pytest.approx(1 / 6, abs=EXACT)
    assert out.metrics["clip/high_frac"].item() == pytest.approx(1 / 6, abs=EXACT)


def test_gppo_has_ppo_clips_value_and_ppo_unclipped_gradients():
    """GPPO changes only the gradient of the clipped tokens: its loss equals ppo_clip's with the same dual
    clip, and the gradients agree on every token that PPO leaves unclipped."""
    old, new, mask = clip_board()
    g_out, g_grad = loss_and_grad(preset("gppo", advantage="group_center"), [2, 0, 2, 0], old, new, mask)
    p_spec = preset("dapo", filters=[], shaping=[], clip_ratio_c=3.0, advantage="group_center")
    p_out, p_grad = loss_and_grad(p_spec, [2, 0, 2, 0], old, new, mask)
    assert g_out.loss.item() == pytest.approx(p_out.loss.item(), abs=EXACT)
    clipped = torch.zeros_like(mask, dtype=torch.bool)
    clipped[0, 0] = clipped[1, 0] = True
    torch.testing.assert_close(g_grad[~clipped], p_grad[~clipped], atol=EXACT, rtol=0)
    assert torch.all(p_grad[clipped] == 0) and torch.all(g_grad[clipped] != 0)


def test_ce_gppo_with_unit_betas_is_gppo():
    old, new, mask = clip_board()
    a, ga = loss_and_grad(preset("ce_gppo", gppo_beta1=1.0), [2, 0, 2, 0], old, new, mask)
    b, gb = loss_and_grad(preset("gppo"), [2, 0, 2, 0], old, new, mask)
    assert a.loss.item() == b.loss.item()  # exact: the same operations on the same values
    torch.testing.assert_close(ga, gb, atol=0, rtol=0)


# Entropy bonus ---------------------------------------------------------------------------------------------

H = [[0.5, 1.0], [2.0, 0.25], [1.5, 0.0], [0.75, 0.0]]  # per-token entropies on the clip board


@pytest.mark.parametrize("loss_type,bonus,dH", [
    # token mean: (0.5 + 1 + 2 + 0.25 + 1.5 + 0.75)/6 = 1; each token's dLoss/dH = -alpha/6
    ("token_mean", 1.0, [[-0.1 / 6] * 2, [-0.1 / 6] * 2, [-0.1 / 6, 0], [-0.1 / 6, 0]]),
    # seq-mean-token-mean: (0.75 + 1.125 + 1.5 + 0.75)/4 = 1.03125; dLoss/dH = -alpha/(|o_i| * 4)
    ("seq_mean_token_mean", 1.03125, [[-0.1 / 8] * 2, [-0.1 / 8] * 2, [-0.1 / 4, 0], [-0.1 / 4, 0]]),
])
def test_entropy_bonus_is_aggregated_like_the_loss(loss_type, bonus, dH):
    old, new, mask = clip_board()
    spec = preset("dapo", filters=[], shaping=[], clip_ratio_c=3.0, advantage="group_center",
                  loss_type=loss_type)
    entropy = torch.tensor(H, dtype=torch.float64, requires_grad=True)
    rewards = torch.tensor([2.0, 0, 2, 0], dtype=torch.float64)
    plain = compute_loss(rewards, 4, new.clone().requires_grad_(True), old, None, mask, spec)
    out = compute_loss(rewards, 4, new.clone().requires_grad_(True), old, None, mask,
                       spec.replace(entropy_coef=0.1), entropy=entropy)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(plain.loss.item() - 0.1 * bonus, abs=EXACT)
    assert out.metrics["loss/entropy"].item() == pytest.approx(bonus, abs=EXACT)
    assert entropy.grad.tolist() == [pytest.approx(row, abs=EXACT) for row in dH]
    if loss_type == "token_mean":  # the PPO part of the clip board: 2.52 / 6
        assert plain.loss.item() == pytest.approx(0.42, abs=EXACT)


def test_entropy_coef_without_entropies_says_how_to_fix():
    old, new, mask = clip_board()
    with pytest.raises(ValueError, match="pass entropy="):
        compute_loss(torch.tensor([2.0, 0, 2, 0], dtype=torch.float64), 4, new, old, None, mask,
                     preset("gppo", entropy_coef=0.01))
    with pytest.raises(ValueError, match="entropy_coef must be >= 0"):
        preset("gppo", entropy_coef=-0.01)


# OPSM ------------------------------------------------------------------------------------------------------

# On the clip board (A = [1, -1, 1, -1]) the mean log(pi_old / pi_theta) of each sequence is -mean_t log r:
# -log(1.5)/2, log(4/3)/2 = 0.143841, log 2, -log 4. Only sequence 2 has A < 0 and a positive drift.
@pytest.mark.parametrize("delta,masked", [(0.1, True), (math.log(4 / 3) / 2 - 1e-9, True), (0.15, False),
                                          (None, False)])
def test_opsm_masks_the_negative_sequence_that_drifted(delta, masked):
    old, new, mask = clip_board()
    spec = preset("gppo", advantage="group_center", opsm_delta=delta)
    out, grad = loss_and_grad(spec, [2, 0, 2, 0], old, new, mask)
    if masked:  # sequence 2 leaves the loss, not the normaliser: -(1.28 + 1 + 0.5 - 3)/6
        assert out.loss.item() == pytest.approx(-(1.28 + 1 + 0.5 - 3.0) / 6, abs=EXACT)
        assert grad[1].tolist() == [0.0, 0.0]
        assert out.metrics["opsm/seqs_masked"].item() == pytest.approx(1 / 4, abs=EXACT)
    else:
        assert out.loss.item() == pytest.approx(0.42, abs=EXACT)
        assert grad[1].tolist() == pytest.approx([0.8 / 6, 1.5 / 6], abs=EXACT)
    assert grad[0].tolist() == pytest.approx([-1.28 / 6, -1 / 6], abs=EXACT)  # A > 0: never masked


def test_opsm_on_policy_masks_nothing_and_refuses_a_negative_delta():
    old, new, mask = clip_board()
    spec = preset("gppo", advantage="group_center", opsm_delta=0.0)
    rewards = torch.tensor([2.0, 0, 2, 0], dtype=torch.float64)
    on_policy = compute_loss(rewards, 4, new, None, None, mask, spec)
    assert on_policy.metrics["opsm/seqs_masked"].item() == 0.0  # pi_old = sg[pi_theta]: no drift
    with pytest.raises(ValueError, match="opsm_delta must be >= 0"):
        preset("grpo", opsm_delta=-0.1)
