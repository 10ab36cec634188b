"""Every preset (and every registered piece) against the slow loop of ``slow_loss.py``: random shapes,
lengths, rewards and seeds, float64, loss / advantages / gradients to the rounding of their sums (~1e-13)."""

import pytest
import torch

from algo_examples import rounding_tol
from grouprl.algo import REGISTRIES, compute_loss, preset
from reference import slow_loss

# Each case: (preset, overrides). Together they exercise every registered name (see test_coverage).
CASES = [
    ("grpo", {}),
    ("grpo", dict(std_ddof=1, adv_eps=1e-6, adv_eps_inside=False, kl_estimator="k1")),
    ("grpo", dict(kl_estimator="k2", clip_ratio_c=3.0, epsilon_high=0.28)),
    ("grpo", dict(clip="none")),
    ("grpo", dict(beta=0.05, kl_placement="reward", kl_estimator="k1")),
    ("grpo", dict(loss_type="seq_mean_token_sum")),
    ("grpo_bessel", {}),
    ("dr_grpo", dict(loss_norm_length=7)),
    ("dapo", dict(overlong_max_len=6, overlong_buffer_len=3)),
    ("dapo", dict(overlong_max_len=6, overlong_buffer_len=2, overlong_filter=True)),
    ("grpo", dict(filters=["drop_truncated", "nonzero_variance"], shaping=["soft_overlong", "kl_in_reward"],
                  overlong_max_len=6, overlong_buffer_len=2, kl_estimator="k1")),
    ("gspo", dict(epsilon=0.05)),
    ("gspo", dict(beta=0.02)),
    ("gspo_token", dict(epsilon=0.05)),
    ("gmpo", {}),
    ("gmpo", dict(epsilon=0.05, beta=0.01)),
    ("gfpo", dict(retain_k=2)),
    ("gfpo", dict(retain_k=3, retain_metric="token_efficiency", retain_normalise_over="retained")),
    ("lite_ppo", {}),
    ("rloo", {}),
    ("reinforce_pp_baseline", dict(beta=0.01)),
    ("cispo", {}),
    ("cispo", dict(epsilon_low=0.1)),
    ("sapo", {}),
    ("maxrl", {}),
    ("maxrl", dict(adv_eps=0.0, loss_type="seq_mean_token_mean")),
    ("gppo", {}),
    ("gppo", dict(epsilon=0.05, clip_ratio_c=None, beta=0.02)),  # many clipped tokens, both sides
    ("ce_gppo", dict(epsilon=0.05)),
    ("ce_gppo", dict(gppo_beta1=0.3, gppo_beta2=1.5, epsilon_low=0.1, epsilon_high=0.1)),
    ("grpo", dict(entropy_coef=0.01)),  # the bonus under each aggregation and a sequence-level objective
    ("dapo", dict(entropy_coef=0.05, overlong_max_len=6, overlong_buffer_len=3)),
    ("dr_grpo", dict(entropy_coef=0.02, loss_norm_length=7)),
    ("gspo", dict(entropy_coef=0.03, beta=0.02)),
    ("gmpo", dict(entropy_coef=0.03)),
    ("grpo", dict(opsm_delta=0.0)),  # masks 0 to 40% of the sequences of the six batches
    ("dapo", dict(opsm_delta=0.05, entropy_coef=0.01, overlong_max_len=6, overlong_buffer_len=3)),
    ("gspo", dict(opsm_delta=0.02, epsilon=0.2)),
    # (i) token selections: wide bands and ratios so that several tokens of these small batches are chosen
    ("clip_cov", dict(clip_cov_ratio=0.3, clip_cov_lb=0.05, clip_cov_ub=3.0)),
    ("clip_cov", dict(clip_cov_ratio=0.1, clip_cov_lb=-0.2, clip_cov_ub=0.2, loss_type="seq_mean_token_mean",
                      clip_ratio_c=3.0, beta=0.02)),
    ("kl_cov", dict(kl_cov_ratio=0.25)),
    ("kl_cov", dict(kl_cov_ratio=0.5, beta_kl_cov=0.3, entropy_coef=0.01, loss_type="seq_mean_token_mean")),
    ("m2po", dict(m2po_tau=0.01)),
    ("grpo", dict(m2po_tau=0.02)),  # M2PO under seq-mean-token-mean, with the KL: a mean over kept tokens
    ("kl_cov", dict(kl_cov_ratio=0.3, m2po_tau=0.015)),
    # rollout correction against mu = pi_old - 0.4 N(0, 1): tight bounds so that every mode acts
    ("grpo", dict(rollout_correction="token_truncate", rollout_correction_max=1.5)),
    ("dapo", dict(rollout_correction="token_mask", rollout_correction_min=0.7, rollout_correction_max=1.5,
                  overlong_max_len=6, overlong_buffer_len=3)),
    ("grpo", dict(rollout_correction="sequence_truncate", rollout_correction_max=1.1, entropy_coef=0.01)),
    ("grpo", dict(rollout_correction="sequence_mask", rollout_correction_min=0.85,
                  rollout_correction_max=1.2, entropy_coef=0.01)),
    ("dr_grpo", dict(rollout_correction="token_mask", rollout_correction_max=1.3, opsm_delta=0.0,
                     loss_norm_length=7)),
    ("gspo", dict(rollout_correction="sequence_truncate", rollout_correction_max=1.1, beta=0.02)),
    ("gspo_token", dict(rollout_correction="token_mask", rollout_correction_max=1.3)),
    ("gmpo", dict(rollout_correction="sequence_mask", rollout_correction_min=0.85,
                  rollout_correction_max=1.2)),
    ("cispo", dict(rollout_correction="token_truncate", rollout_correction_max=1.2)),
]


def random_batch(seed, G, B, T):
    g = torch.Generator().manual_seed(seed)
    N = B * G
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    old = -torch.rand(N, T, generator=g, dtype=torch.float64) * 3
    new = old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.3
    ref = old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.3
    rewards = torch.randint(0, 3, (N,), generator=g).double()  # ties and all-equal groups happen
    truncated = lengths == T
    return rewards, new * mask, old * mask, ref * mask, mask, truncated


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name,overrides", CASES)
def test_matches_slow_loop(name, overrides, seed):
    G, B, T = [(2, 1, 3), (4, 2, 6), (3, 3, 5), (4, 3, 7), (5, 2, 4), (8, 1, 6)][seed]
    if overrides.get("retain_k", 0) > G:
        pytest.skip("retain_k larger than this group")
    rewards, new, old, ref, mask, truncated = random_batch(seed, G, B, T)
    spec = preset(name, **overrides)
    logp = new.clone().requires_grad_(True)
    H = torch.rand(new.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * mask
    entropy = H.clone().requires_grad_(True)
    if spec.rollout_correction != "none":
        gen = torch.Generator().manual_seed(100 + seed)
        noise = torch.randn(new.shape, generator=gen, dtype=torch.float64)
        mu = (old - 0.4 * noise) * mask  # the sampler's log-probs, off pi_old by a known amount
    else:
        noise = torch.randn(new.shape, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
        mu = old - noise * 0.15 * mask  # the sampler's log-probs, for M2PO
    out = compute_loss(rewards, G, logp, old, ref, mask, spec, truncated=truncated, max_new_tokens=T,
                       entropy=entropy, behaviour_logp=mu, seed=seed)
    out.loss.backward()

    ref_logp, ref_entropy = new.clone().requires_grad_(True), H.clone().requires_grad_(True)
    want, want_adv = slow_loss.loss(rewards.tolist(), G, ref_logp, old, ref, mask, spec,
                                    truncated=truncated.tolist(), norm_length=T, entropy=ref_entropy,
                                    sampler_logp=mu, seed=seed, behaviour=mu)
    if spec.rollout_correction != "none" and seed > 0:  # the bounds are tight enough to act, not on all
        assert 0 < out.metrics["rollout_corr/frac_clipped"] < 1
    atol = rounding_tol(new, G)  # the loop sums in another order
    assert out.advantages.tolist() == pytest.approx(want_adv, abs=atol)
    assert out.loss.item() == pytest.approx(float(want), abs=atol)
    if want.requires_grad:
        want.backward()
        torch.testing.assert_close(logp.grad, ref_logp.grad * mask, atol=atol, rtol=0)
        if spec.entropy_coef > 0:  # the bonus's gradient reaches the entropies, per token
            torch.testing.assert_close(entropy.grad, ref_entropy.grad * mask, atol=atol, rtol=0)
    else:  # every sequence filtered out: nothing to learn, and no NaN
        assert torch.all(logp.grad == 0)


def test_coverage_every_registered_name_has_a_case():
    """Adding a registered piece without a reference case fails here."""
    used = {piece for name, overrides in CASES for piece in preset(name, **overrides).pieces}
    used.add(("shaping", "length_penalty"))  # no spec switch turns it on: tested in test_pieces.py
    for kind, registry in REGISTRIES.items():
        missing = set(registry.names()) - {name for k, name in used if k == kind}
        assert not missing, f"registered {kind} without a reference case: {missing}"
