"""Every worked example of docs/math.md: advantages, loss and autograd dLoss/dl, float64, to the decimals
the goldens are written with."""

import pytest
import torch

from algo_examples import VERL_STD, example, rounding_tol
from grouprl.algo import compute_loss, preset
from tolerance import written

# Advantages and gradients are written to 6 decimals, losses to 8, rounded or truncated: that error dominates
# the float64 rounding of the computation (the rule, for the largest example: 8 sequences of 5), added to it.
ROUNDING = rounding_tol(example(repeat=2)[0], 4)
TOL, LOSS_TOL = written(6) + ROUNDING, written(8) + ROUNDING


def run(name, rewards, repeat=1, truncated=None, **overrides):
    old, new, ref, mask = example(repeat)
    logp = new.clone().requires_grad_(True)
    spec = preset(name, **overrides)
    out = compute_loss(torch.tensor(rewards, dtype=torch.float64), 4, logp, old, ref, mask, spec,
                       truncated=truncated)
    out.loss.backward()
    grads = [logp.grad[i, : int(m.sum())].tolist() for i, m in enumerate(mask)]
    return out, grads


# (preset, overrides, advantages, loss) — Example 1, one group R = [1, 0, 0, 0]
GRPO_ADV = [1.499997, -0.499999, -0.499999, -0.499999]
EXAMPLE_1 = [
    ("grpo", VERL_STD, GRPO_ADV, -0.05131472),
    ("grpo", dict(VERL_STD, beta=0.0), GRPO_ADV, -0.05243563),
    ("grpo_bessel", {}, GRPO_ADV, -0.05131472),  # = grpo with VERL_STD, as a preset
    ("dr_grpo", dict(loss_norm_length=5), [0.75, -0.25, -0.25, -0.25], 0.06590533),
    ("dapo", dict(dynamic_sampling=False, soft_overlong=False), GRPO_ADV, 0.17972915),
    ("lite_ppo", {}, GRPO_ADV, 0.18830056),
    ("gspo", {}, GRPO_ADV, 0.01120526),
    ("gspo", dict(epsilon=0.2), GRPO_ADV, -0.07603918),
    ("gmpo", {}, GRPO_ADV, -0.08406520),
    ("gmpo", dict(epsilon_low=0.1, epsilon_high=0.1), GRPO_ADV, -0.03007482),
    ("gfpo", dict(retain_k=2), [0.707106, -0.707106, 0, 0], 0.02354158),
    ("rloo", {}, [1, -1 / 3, -1 / 3, -1 / 3], 0.12553396),
    ("reinforce_pp_baseline", {}, [2.360387, -0.393398, -0.393398, -0.393398], -0.04617049),
    ("cispo", {}, GRPO_ADV, -0.25789889),
    ("sapo", {}, GRPO_ADV, -0.11805220),
    ("lite_ppo", dict(clip_ratio_c=3.0), GRPO_ADV, 0.18830056),  # dual-clip: no ratio > 3, equals plain clip
]


@pytest.mark.parametrize("name,overrides,advantages,loss", EXAMPLE_1)
def test_example_1(name, overrides, advantages, loss):
    out, _ = run(name, [1, 0, 0, 0], **overrides)
    assert out.advantages.tolist() == pytest.approx(advantages, abs=TOL)
    assert out.loss.item() == pytest.approx(loss, abs=LOSS_TOL)


GRADS_1 = {
    "grpo": (VERL_STD, [[-0.206975, 0.001648], [-0.001639, 0.043965, 0.042271],
                        [0.038622, 0.027723, 0.031122, 0.040774],
                        [0.024557, 0.023678, 0.027992, 0.019769, 0.026379]]),
    "dapo": (dict(dynamic_sampling=False, soft_overlong=False),
             [[-0.118411, 0], [0, 0.037545, 0.035714], [0.043621, 0.032316, 0.035714, 0.045858],
              [0.035714, 0.033972, 0.039470, 0.029240, 0.037545]]),
    "gspo": ({}, [[0, 0], [0, 0, 0], [0.034108] * 4, [0] * 5]),
    "gmpo": ({}, [[-0.229013] * 2, [0.038335] * 3, [0.034108] * 4, [0.024505] * 5]),
    "sapo": ({}, [[-0.206647, -0.245508], [0.030303, 0.043771, 0.041667],
                  [0.037658, 0.028206, 0.03125, 0.039247], [0.025, 0.023765, 0.027545, 0.020284, 0.026263]]),
    "cispo": ({}, [[-0.118411, -0.137143], [0.026458, 0.037545, 0.035714],
                   [0.043621, 0.032316, 0.035714, 0.045714],
                   [0.035714, 0.033972, 0.039470, 0.029240, 0.037545]]),
}


@pytest.mark.parametrize("name", sorted(GRADS_1))
def test_example_1_gradients(name):
    overrides, expected = GRADS_1[name]
    _, grads = run(name, [1, 0, 0, 0], **overrides)
    for got, want in zip(grads, expected):
        assert got == pytest.approx(want, abs=TOL)


EXAMPLE_2 = [
    ("grpo", VERL_STD, [1.499997] + [-0.499999] * 3 + [0.499999, 0.499999, -1.499997, 0.499999], -0.01015088),
    ("grpo", dict(VERL_STD, beta=0.0), None, -0.01127179),
    ("grpo_bessel", {}, [1.499997] + [-0.499999] * 3 + [0.499999, 0.499999, -1.499997, 0.499999],
     -0.01015088),
    ("dr_grpo", dict(loss_norm_length=5), [0.75] + [-0.25] * 3 + [0.25, 0.25, -0.75, 0.25], 0.05299725),
    ("dapo", dict(dynamic_sampling=False, soft_overlong=False), None, 0.14570615),
    ("lite_ppo", {}, [1.403119] + [-0.467706] * 3 + [0.467706, 0.467706, -1.403119, 0.467706], 0.14164085),
    ("rloo", {}, [1] + [-1 / 3] * 3 + [1 / 3, 1 / 3, -1, 1 / 3], 0.10094715),
    ("reinforce_pp_baseline", {}, [1.988547] + [-0.432293] * 3 + [0.778127, 0.778127, -1.642713, 0.778127],
     0.00464050),
]


@pytest.mark.parametrize("name,overrides,advantages,loss", EXAMPLE_2)
def test_example_2_two_groups(name, overrides, advantages, loss):
    out, _ = run(name, [1, 0, 0, 0, 1, 1, 0, 1], repeat=2, **overrides)
    if advantages is not None:
        assert out.advantages.tolist() == pytest.approx(advantages, abs=TOL)
    assert out.loss.item() == pytest.approx(loss, abs=LOSS_TOL)


DAPO_3 = dict(soft_overlong=True, overlong_max_len=5, overlong_buffer_len=2, dynamic_sampling=True)


@pytest.mark.parametrize("overrides,truncated,advantages,loss", [
    (DAPO_3, None, [0.998625, -0.453920, 0.635488, -1.180193] + [0] * 4, 0.13759636),
    (dict(DAPO_3, overlong_filter=True), [False, False, False, True] * 2,
     [0.998625, -0.453920, 0.635488, -1.180193] + [0] * 4, -0.43197283),
    (dict(soft_overlong=False, dynamic_sampling=False), None, [0.866025, -0.866025] * 2 + [0] * 4,
     0.03050455),
])
def test_example_3_dapo_shaping_and_filtering(overrides, truncated, advantages, loss):
    truncated = None if truncated is None else torch.tensor(truncated)
    out, _ = run("dapo", [1, -1, 1, -1, 1, 1, 1, 1], repeat=2, truncated=truncated, **overrides)
    assert out.advantages.tolist() == pytest.approx(advantages, abs=TOL)
    assert out.loss.item() == pytest.approx(loss, abs=LOSS_TOL)


def test_example_3_soft_penalty():
    out, _ = run("dapo", [0, 0, 0, 0], soft_overlong=True, overlong_max_len=5, overlong_buffer_len=2,
                 dynamic_sampling=False)
    assert out.metrics["reward/mean"].item() == pytest.approx((0 + 0 - 0.5 - 1.0) / 4, abs=ROUNDING)


@pytest.mark.parametrize("name,overrides,advantages,loss", [
    ("gfpo", dict(retain_k=2, retain_metric="length"), [-0.707106, 0.707106, 0, 0], -0.01702406),
    ("gfpo", dict(retain_k=2, retain_normalise_over="retained"), [-0.707106, 0.707106, 0, 0], -0.04766736),
    ("gfpo", dict(retain_k=2, retain_metric="token_efficiency"), [0, 0, 0, 0], 0.0),
    ("grpo", dict(VERL_STD, beta=0.0), [-0.866024, 0.866024, 0.866024, -0.866024], 0.04457631),
])
def test_example_4_gfpo(name, overrides, advantages, loss):
    out, _ = run(name, [0, 1, 1, 0], **overrides)
    assert out.advantages.tolist() == pytest.approx(advantages, abs=TOL)
    assert out.loss.item() == pytest.approx(loss, abs=LOSS_TOL)


def test_grpo_default_uses_the_project_spec_std():
    """The grpo preset follows the founding description: population std, delta=1e-8 inside the root."""
    out, _ = run("grpo", [1, 0, 0, 0])
    sigma = (3 / 16 + 1e-8) ** 0.5  # sqrt((1/G) sum (R - mu)^2 + delta), mu = 1/4
    assert out.advantages.tolist() == pytest.approx([0.75 / sigma] + [-0.25 / sigma] * 3, abs=ROUNDING)
    # docs/math.md: ddof=0 with eps=1e-6 outside gives these; a sqrt(4/3) mismatch flags the convention.
    ddof0, _ = run("grpo", [1, 0, 0, 0], std_ddof=0, adv_eps=1e-6, adv_eps_inside=False)
    assert ddof0.advantages.tolist() == pytest.approx([1.732047, -0.577349, -0.577349, -0.577349], abs=TOL)
