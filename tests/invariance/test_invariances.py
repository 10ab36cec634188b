"""Invariances of the loss: padding width, micro-batching with global counts, and docs/math.md, Invariants."""

import pytest
import torch

from algo_examples import VERL_STD, example, rounding_tol
from grouprl.algo import PRESETS, Counts, compute_loss, group_advantages, policy_loss, preset, select_tokens
from reference.test_against_loop import random_batch

NAMES = sorted(PRESETS)


def _loss_and_grad(name, rewards, G, new, old, ref, mask, **kw):
    logp = new.clone().requires_grad_(True)
    out = compute_loss(rewards, G, logp, old, ref, mask, preset(name, **kw), max_new_tokens=8)
    out.loss.backward()
    return out.loss.detach(), logp.grad


@pytest.mark.parametrize("name", NAMES)
def test_padding_width_does_not_change_loss_or_gradient(name):
    rewards, new, old, ref, mask, _ = random_batch(3, 4, 3, 6)
    pad = lambda x: torch.cat([x, torch.zeros(x.shape[0], 5, dtype=x.dtype)], dim=1)  # noqa: E731
    base, g = _loss_and_grad(name, rewards, 4, new, old, ref, mask)
    wide, gw = _loss_and_grad(name, rewards, 4, pad(new), pad(old), pad(ref), pad(mask))
    atol = rounding_tol(gw, 4)  # the wide batch's sums are longer: they round differently
    assert wide.item() == pytest.approx(base.item(), abs=atol)
    torch.testing.assert_close(gw[:, :6], g, atol=atol, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("splits", [[3, 9], [6, 6], [1, 4, 7]])
def test_micro_batches_with_global_counts_equal_the_full_batch(name, splits):
    """Advantages on the whole rollout, then loss per micro-batch (whole groups or not) with the global
    counts: the summed loss and the accumulated gradient equal the full-batch ones."""
    G = 4
    rewards, new, old, ref, mask, truncated = random_batch(4, G, 3, 6)
    spec = preset(name, **({"beta": 0.03} if not PRESETS[name].beta else {}))
    adv = group_advantages(rewards, G, mask.sum(-1), spec, truncated=truncated)
    loss_mask = mask * adv.in_loss[:, None]
    counts = Counts.of(loss_mask)

    # Clip-Cov, KL-Cov, M2PO: the token selection is taken once on the whole mini-batch, then sliced
    sel = select_tokens(old, adv.advantages, loss_mask, spec, sampler_logp=old - 0.2 * (new - old), seed=3) \
        if spec.needs_selection else None
    logp = new.clone().requires_grad_(True)
    full, _ = policy_loss(logp, old, ref, loss_mask, adv.advantages, spec, counts, norm_length=6,
                          selection=sel)
    full.backward()
    full_grad = logp.grad.clone()

    logp.grad = None
    total = torch.zeros((), dtype=torch.float64)
    for part in torch.split(torch.arange(12), splits):
        part_loss, _ = policy_loss(logp[part], old[part], ref[part], loss_mask[part], adv.advantages[part],
                                   spec, counts, norm_length=6,
                                   selection=None if sel is None else sel.rows(part))
        part_loss.backward()
        total += part_loss.detach()
    atol = rounding_tol(new, G)
    assert total.item() == pytest.approx(full.item(), abs=atol)
    torch.testing.assert_close(logp.grad, full_grad, atol=atol, rtol=0)


def test_micro_batch_metrics_sum_to_full_batch_metrics():
    rewards, new, old, ref, mask, _ = random_batch(5, 4, 2, 5)
    spec = preset("dapo", soft_overlong=False)
    adv = group_advantages(rewards, 4, mask.sum(-1), spec)
    counts = Counts.of(mask * adv.in_loss[:, None])
    lm = mask * adv.in_loss[:, None]
    _, full = policy_loss(new, old, ref, lm, adv.advantages, spec, counts)
    parts = [policy_loss(new[p], old[p], ref[p], lm[p], adv.advantages[p], spec, counts)[1]
             for p in torch.split(torch.arange(8), 3)]
    for key in ("clip/low_frac", "clip/high_frac", "ratio/mean", "kl/mean", "loss/policy"):
        assert sum(p[key] for p in parts).item() == pytest.approx(full[key].item(), abs=rounding_tol(new, 4))


# docs/math.md, Invariants ----------------------------------------------------------------------------


def test_grpo_on_policy_without_kl_has_zero_loss():
    old, _, ref, mask = example()
    out = compute_loss(torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), 4, old.clone(), old, ref, mask,
                       preset("grpo", beta=0.0))
    assert out.loss.item() == pytest.approx(0.0, abs=rounding_tol(old, 4))  # advantages sum to 0 in rounding


def test_dapo_on_policy_loss_is_not_zero_when_lengths_differ():
    old, _, ref, mask = example()
    out = compute_loss(torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), 4, old.clone(), old, ref, mask,
                       preset("dapo", soft_overlong=False))
    assert abs(out.loss.item()) > rounding_tol(old, 4)


@pytest.mark.parametrize("seed", range(4))
def test_gspo_and_gspo_token_agree_in_loss_and_gradient(seed):
    rewards, new, old, ref, mask, _ = random_batch(seed, 4, 2, 6)
    a, ga = _loss_and_grad("gspo", rewards, 4, new, old, ref, mask, epsilon=0.05)
    b, gb = _loss_and_grad("gspo_token", rewards, 4, new, old, ref, mask, epsilon=0.05)
    # The two differ only in where 1/N_seq sits (one term per sequence vs a token mean of equal terms).
    assert a.item() == pytest.approx(b.item(), abs=rounding_tol(new, 4))
    torch.testing.assert_close(ga, gb, atol=rounding_tol(new, 4), rtol=0)


def test_gmpo_with_one_token_responses_equals_grpo_with_log_space_clip():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(8, 1, generator=g, dtype=torch.float64)
    new = old + torch.randn(8, 1, generator=g, dtype=torch.float64) * 0.5
    mask = torch.ones(8, 1, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1], dtype=torch.float64)
    eps = 0.2
    gm, ggm = _loss_and_grad("gmpo", rewards, 4, new, old, None, mask, epsilon=eps)
    # GRPO's ratio clip at exactly the log-space bounds: [e^-eps, e^eps] = [1 - a, 1 + b].
    import math
    gr, ggr = _loss_and_grad("grpo", rewards, 4, new, old, None, mask, beta=0.0, **VERL_STD,
                             epsilon_low=1 - math.exp(-eps), epsilon_high=math.exp(eps) - 1)
    assert gm.item() == pytest.approx(gr.item(), abs=rounding_tol(new, 4))
    torch.testing.assert_close(ggm, ggr, atol=rounding_tol(new, 4), rtol=0)


def test_lite_ppo_with_one_group_equals_grpo_advantages_under_token_mean():
    rewards, new, old, ref, mask, _ = random_batch(1, 5, 1, 6)
    lite = compute_loss(rewards, 5, new, old, ref, mask, preset("lite_ppo"))
    grpo = compute_loss(rewards, 5, new, old, ref, mask,
                        preset("grpo", beta=0.0, loss_type="token_mean", **VERL_STD))
    torch.testing.assert_close(lite.advantages, grpo.advantages, atol=rounding_tol(new, 5), rtol=0)
    assert lite.loss.item() == pytest.approx(grpo.loss.item(), abs=rounding_tol(new, 5))


def test_dual_clip_equals_plain_clip_when_every_ratio_is_below_c():
    rewards, new, old, ref, mask, _ = random_batch(2, 4, 2, 6)
    assert torch.exp(new - old).max() < 3
    a, ga = _loss_and_grad("lite_ppo", rewards, 4, new, old, ref, mask)
    b, gb = _loss_and_grad("lite_ppo", rewards, 4, new, old, ref, mask, clip_ratio_c=3.0)
    assert a.item() == b.item()  # exact: the dual clip only selects (max/min/where) among the same values
    torch.testing.assert_close(ga, gb, atol=0, rtol=0)


def test_dual_clip_zeroes_gradient_of_negative_tokens_above_c():
    old = torch.zeros(2, 1, dtype=torch.float64)
    new = torch.tensor([[0.0], [2.0]], dtype=torch.float64)  # ratio e^2 = 7.4 > 3 on the A<0 row
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    _, g = _loss_and_grad("lite_ppo", rewards, 2, new, old, None, torch.ones(2, 1), clip_ratio_c=3.0)
    assert g[1, 0] == 0
    _, g = _loss_and_grad("lite_ppo", rewards, 2, new, old, None, torch.ones(2, 1))
    assert g[1, 0] != 0


def test_gfpo_with_k_equal_to_g_is_grpo_under_dapo_aggregation():
    rewards, new, old, ref, mask, _ = random_batch(3, 4, 3, 6)
    gfpo = compute_loss(rewards, 4, new, old, ref, mask, preset("gfpo", retain_k=4))
    dapo = compute_loss(rewards, 4, new, old, ref, mask, preset("dapo", filters=[], shaping=[]))
    torch.testing.assert_close(gfpo.advantages, dapo.advantages, atol=rounding_tol(new, 4), rtol=0)
    assert gfpo.loss.item() == pytest.approx(dapo.loss.item(), abs=rounding_tol(new, 4))


@pytest.mark.parametrize("name", NAMES)
def test_all_equal_rewards_never_give_nan(name):
    old, new, ref, mask = example(repeat=2)
    spec = PRESETS[name]
    no_eps = {**({"adv_eps": 0.0} if spec.reads("adv_eps") else {}),
              **({"adv_eps_inside": False} if spec.reads("adv_eps_inside") else {})}
    out = compute_loss(torch.ones(8, dtype=torch.float64), 4, new, old, ref, mask, preset(name, **no_eps),
                       max_new_tokens=5)
    assert torch.isfinite(out.loss) and torch.all(out.advantages == 0)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_completion_contributes_nothing(name):
    old, new, ref, mask = example()
    mask[1] = 0  # sequence 2 is empty
    out = compute_loss(torch.tensor([1.0, 0, 1, 0], dtype=torch.float64), 4, new, old, ref, mask,
                       preset(name), max_new_tokens=5)
    assert torch.isfinite(out.loss)
    changed = new.clone()
    changed[1] += 1.0  # moving the empty row's log-probs changes nothing
    again = compute_loss(torch.tensor([1.0, 0, 1, 0], dtype=torch.float64), 4, changed, old, ref, mask,
                         preset(name), max_new_tokens=5)
    assert again.loss.item() == pytest.approx(out.loss.item(), abs=rounding_tol(new, 4))


def test_gspo_with_trl_grpo_loss_type_equals_the_papers_seq_mean():
    """TRL reproduces GSPO with importance_sampling_level='sequence' and loss_type='grpo'; same numbers."""
    rewards, new, old, ref, mask, _ = random_batch(2, 4, 2, 6)
    a, ga = _loss_and_grad("gspo", rewards, 4, new, old, ref, mask, epsilon=0.05)
    b, gb = _loss_and_grad("gspo", rewards, 4, new, old, ref, mask, epsilon=0.05, loss_type="grpo")
    assert a.item() == b.item()  # exact: seq_mean_token_mean of a per-sequence term is seq_mean itself
    torch.testing.assert_close(ga, gb, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["grpo", "dapo", "gspo", "gppo"])
def test_the_entropy_bonus_and_opsm_split_over_micro_batches_and_ignore_padding(name):
    G = 4
    rewards, new, old, ref, mask, truncated = random_batch(4, G, 3, 6)
    H = torch.rand(new.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    H[mask == 0] = float("nan")  # padding may hold anything
    spec = preset(name, entropy_coef=0.05, opsm_delta=0.02)  # and OPSM: a per-sequence decision
    adv = group_advantages(rewards, G, mask.sum(-1), spec, truncated=truncated)
    loss_mask = mask * adv.in_loss[:, None]
    counts = Counts.of(loss_mask)
    entropy = H.clone().requires_grad_(True)
    full, _ = policy_loss(new, old, ref, loss_mask, adv.advantages, spec, counts, entropy=entropy)
    full.backward()
    full_grad, entropy.grad = entropy.grad.clone(), None
    total = 0.0
    for part in torch.split(torch.arange(12), [5, 7]):
        part_loss, _ = policy_loss(new[part], old[part], ref[part], loss_mask[part], adv.advantages[part],
                                   spec, counts, entropy=entropy[part])
        part_loss.backward()
        total += part_loss.item()
    atol = rounding_tol(new, G)
    assert torch.isfinite(full) and total == pytest.approx(full.item(), abs=atol)
    torch.testing.assert_close(entropy.grad, full_grad, atol=atol, rtol=0)
