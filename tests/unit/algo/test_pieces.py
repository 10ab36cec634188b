"""Registries, preset validation, bad input, and the pieces not covered elsewhere."""

import pytest
import torch

from algo_examples import example
from grouprl.algo import PRESETS, REGISTRIES, GroupView, compute_loss, preset
from grouprl.algo.filters import length_penalty, retain_k
from grouprl.algo.kl import k1, k2, k3
from tolerance import assert_close

SPEC_PRESETS = ["grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "gmpo", "gfpo", "lite_ppo", "rloo",
                "reinforce_pp_baseline", "cispo", "sapo"]


# Presets beyond the spec's contract (adding one is allowed): GRPOConfig()'s defaults, for TRL users.
EXTRA_PRESETS = ["trl_defaults", "grpo_bessel"]
# The 2025-26 methods of issue 18, each with its paper id.
TABLE_2025 = ["maxrl", "gppo", "ce_gppo", "clip_cov", "kl_cov", "m2po"]


def test_every_preset_of_the_contract_exists_and_validates():
    assert sorted(SPEC_PRESETS + EXTRA_PRESETS + TABLE_2025) == sorted(PRESETS)
    for name in SPEC_PRESETS + TABLE_2025:
        assert preset(name).name == name and preset(name).paper


def test_unknown_preset_lists_known_names():
    with pytest.raises(KeyError, match="unknown algorithm 'grpoo'; known: grpo, dr_grpo"):
        preset("grpoo")
    with pytest.raises(ValueError):  # also a ValueError, for callers that treat it as bad input
        preset("grpoo")


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_unknown_component_lists_known_names(kind):
    registry = REGISTRIES[kind]
    with pytest.raises(KeyError) as err:
        registry.get("nope")
    assert f"unknown {registry.kind} 'nope'; known: " in str(err.value)
    assert registry.names()[0] in str(err.value)


@pytest.mark.parametrize("overrides,message", [
    (dict(importance_sampling_level="sequence", loss_type="token_mean"), "one term per sequence"),
    (dict(advantage="subset_zscore", retain_k=1), "retain_k must be >= 2"),
    (dict(loss_type="token_mean", importance_sampling_level="geometric", clip="log_clip"), "seq_mean"),
    (dict(clip="log_clip"), "geometric ratio and the log-space clip go together"),
    (dict(clip_ratio_c=0.5), "dual-clip"),
    (dict(retain_k=2), "retain_k"),
    (dict(epsilon_low=None), "no lower bound"),
    (dict(beta=-1.0), "beta must be >= 0"),
    (dict(std_ddof=2), "std_ddof"),
    (dict(advantage="zscore"), "unknown advantage estimator 'zscore'"),
    (dict(loss_type="mean"), "unknown loss aggregation 'mean'"),
    (dict(kl_placement="reward"), "k1"),
    (dict(bogus=1), "unknown algorithm field"),
])
def test_incoherent_or_unknown_settings_are_rejected_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset("grpo", **overrides)


def test_trl_spellings_are_accepted():
    s = preset("grpo", scale_rewards="batch", loss_type="dapo", epsilon=0.1, delta=4.0)
    assert (s.advantage, s.loss_type, s.epsilon_low, s.epsilon_high, s.clip_ratio_c) == \
        ("group_mean_batch_std", "token_mean", 0.1, 0.1, 4.0)
    assert preset("grpo", scale_rewards="none").advantage == "group_center"


def _inputs():
    old, new, ref, mask = example()
    return torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), new, old, ref, mask


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.update(group_size=1), "group_size must be an integer >= 2"),
    (lambda a: a.update(group_size=3), "not a positive multiple of group_size=3"),
    (lambda a: a.update(rewards=a["rewards"][None]), "rewards must be 1-D"),
    (lambda a: a.update(old_logp=a["old_logp"][:, :3]), "old_logp must have logp's shape"),
    (lambda a: a.update(mask=a["mask"][:3]), "mask must have logp's shape"),
    (lambda a: a.update(rewards=torch.tensor([1.0, float("nan"), 0, 0], dtype=torch.float64)),
     "rewards contains NaN"),
    (lambda a: a["logp"].__setitem__((0, 0), float("inf")), "logp contains NaN or inf"),
    (lambda a: a.update(mask=torch.zeros_like(a["mask"])), "mask has no unmasked token"),
    (lambda a: a.update(truncated=torch.zeros(3, dtype=torch.bool)), "truncated must be"),
    (lambda a: a.update(ref_logp=None), "needs ref_logp"),
])
def test_bad_input_names_the_argument(mutate, message):
    rewards, new, old, ref, mask = _inputs()
    args = dict(rewards=rewards, group_size=4, logp=new, old_logp=old, ref_logp=ref, mask=mask,
                truncated=None)
    mutate(args)
    with pytest.raises(ValueError, match=message):
        compute_loss(args["rewards"], args["group_size"], args["logp"], args["old_logp"], args["ref_logp"],
                     args["mask"], preset("grpo"), truncated=args["truncated"])


def test_nan_in_padding_is_ignored():
    rewards, new, old, ref, mask = _inputs()
    new[0, 4] = float("nan")  # a padded position of a length-2 row
    out = compute_loss(rewards, 4, new, old, ref, mask, preset("grpo"))
    assert torch.isfinite(out.loss)


def test_dr_grpo_without_a_budget_says_how_to_fix():
    rewards, new, old, ref, mask = _inputs()
    with pytest.raises(ValueError, match="max_new_tokens"):
        compute_loss(rewards, 4, new, old, None, mask, preset("dr_grpo"))


def test_kl_estimator_values_and_derivatives():
    logp = torch.tensor([-1.0, -0.2, -3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -0.2, -1.0], dtype=torch.float64)
    d = ref - logp.detach()
    scale = float((d.exp() + d.abs() + 1).max())  # the largest term: three elementwise steps (e.g. exp, -, -)
    cases = ((k1, -d, torch.ones(3)), (k2, d * d / 2, -d), (k3, torch.exp(d) - d - 1, 1 - torch.exp(d)))
    for fn, value, deriv in cases:
        out = fn(logp, ref)
        assert_close(out, value, n=3, scale=scale)
        (grad,) = torch.autograd.grad(out.sum(), logp)
        assert_close(grad, deriv, n=3, scale=scale)
    assert torch.all(k3(logp, ref) >= 0) and torch.all(k2(logp, ref) >= 0)


def test_length_penalty_and_retain_k_ties():
    view = GroupView(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), None, torch.tensor([[3.0, 2.0, 2.0, 5.0]]), None)
    # float32: *, /
    assert_close(length_penalty(view, coef=0.5, max_len=10)[0], [-0.15, -0.1, -0.1, -0.25], n=2)
    # ties broken by index: of the two length-2 responses, index 1 comes first
    assert retain_k(view, k=1).tolist() == [[False, True, False, False]]
    assert retain_k(view, k=3, metric="token_efficiency").tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="1 <= k <= group size"):
        retain_k(view, k=5)


def test_metrics_are_detached_tensors():
    rewards, new, old, ref, mask = _inputs()
    out = compute_loss(rewards, 4, new.requires_grad_(True), old, ref, mask, preset("grpo"))
    for key in ("reward/mean", "reward/std", "frac_reward_zero_std", "adv/mean", "loss/policy", "loss/kl",
                "kl/mean", "clip/low_frac", "clip/high_frac", "ratio/mean", "filter/groups_dropped"):
        assert isinstance(out.metrics[key], torch.Tensor) and not out.metrics[key].requires_grad, key
    # Example 1, GRPO: token 2 of seq 1 (A>0) is clipped high, token 1 of seq 2 (A<0) clipped low; 14 tokens,
    # summed (20 positions) and divided
    assert_close(out.metrics["clip/high_frac"], 1 / 14, n=20 + 1)
    assert_close(out.metrics["clip/low_frac"], 1 / 14, n=20 + 1)
