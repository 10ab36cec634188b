"""``rollout/logprob_diff_*`` and ``rollout/kl_sampler_trainer``: the same numbers whether the trainer's
log-probs arrive whole (a pi_old pass) or micro-batch by micro-batch (the update's first pass)."""

from __future__ import annotations

import math

import torch

from grouprl.train.step import SamplerGap


def test_micro_batches_add_up_to_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    trainer = -torch.rand(6, 5, generator=g, dtype=torch.float32, device="cpu") * 3
    sampler = trainer + 0.01 * torch.randn(6, 5, generator=g, device="cpu")
    mask = torch.ones(6, 5, device="cpu")
    mask[2, 3:] = 0  # a finished row: its padding is not counted
    mask[5] = 0
    whole, parts = SamplerGap(), SamplerGap()
    whole.add(trainer, sampler, mask)
    for rows in torch.split(torch.arange(6, device="cpu"), 4):
        parts.add(trainer[rows], sampler[rows], mask[rows])
    a, b = whole.metrics(), parts.metrics()
    assert a.keys() == b.keys() == {"rollout/logprob_diff_mean", "rollout/logprob_diff_max",
                                    "rollout/kl_sampler_trainer"}
    for key in a:  # float64 sums of 23 terms, regrouped
        assert math.isclose(a[key], b[key], rel_tol=1e-12, abs_tol=1e-15), key
    on = mask > 0
    gap = (trainer.double() - sampler.double())[on]
    assert math.isclose(a["rollout/logprob_diff_mean"], gap.abs().mean().item(), rel_tol=1e-12)
    assert a["rollout/logprob_diff_max"] == gap.abs().max().item()
    k3 = (torch.expm1(gap) - gap).mean().item()  # KL(mu || pi) estimated on mu's samples: never negative
    assert math.isclose(a["rollout/kl_sampler_trainer"], k3, rel_tol=1e-12) and k3 > 0


def test_no_tokens_no_metrics():
    gap = SamplerGap()
    assert gap.metrics() == {}
    gap.add(torch.zeros(2, 3, device="cpu"), torch.ones(2, 3, device="cpu"), torch.zeros(2, 3, device="cpu"))
    assert gap.metrics() == {}
