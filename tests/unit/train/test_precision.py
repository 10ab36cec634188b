"""``train.precision`` on the CPU (bf16 kernels run there too): bf16-mixed keeps float32 master weights and
AdamW moments while every forward runs in bfloat16; bf16 keeps bfloat16 weights with float32 moments; the
log-probs, and so the loss, are float32 in both."""

from __future__ import annotations

import pytest
import torch

from grouprl.config import load_config
from grouprl.model.device import cpu_supports_bf16
from grouprl.train.loop import one_step
from grouprl.train.setup import build

pytestmark = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bfloat16 kernels")

ARGS = ["train.prompts_per_step=2", "rollout.num_generations=2", "data.num_eval=0", "data.num_train=8",
        "output.progress=false", "reward_isolation=false", "algo.beta=0.04", "train.num_iterations=2",
        "rollout.max_new_tokens=6"]


def watched_step(setup) -> dict:
    """One step; returns the dtypes seen: decoder-layer outputs (every forward: rollout, pi_old, pi_ref,
    update) and the training pass's log-probs."""
    seen = {"layer": set(), "logp": set()}
    layer = setup.policy.model.layers[0].mlp
    hooks = [layer.register_forward_hook(lambda m, i, out: seen["layer"].add(out.dtype)),
             setup.scorer.register_forward_hook(lambda m, i, out: seen["logp"].add(out[0].dtype))]
    ref = setup.reference.model.model.layers[0].mlp
    hooks.append(ref.register_forward_hook(lambda m, i, out: seen.setdefault("ref", set()).add(out.dtype)))
    try:
        metrics = one_step(setup, 1, [])
    finally:
        for hook in hooks:
            hook.remove()
    return {**seen, "metrics": metrics}


def test_bf16_mixed_keeps_float32_masters_and_moments(tmp_path):
    setup = build(load_config(None, [*ARGS, "train.precision=bf16-mixed"]), tmp_path)
    try:
        seen = watched_step(setup)
        assert seen["layer"] == {torch.bfloat16} and seen["ref"] == {torch.bfloat16}
        assert seen["logp"] == {torch.float32}
        assert seen["metrics"]["update/steps"] == 2
        gap = {k: seen["metrics"][f"rollout/{k}"] for k in ("logprob_diff_mean", "logprob_diff_max",
                                                              "kl_sampler_trainer")}
        assert 0 <= gap["logprob_diff_mean"] <= gap["logprob_diff_max"] < 1 and gap["kl_sampler_trainer"] >= 0
        assert {p.dtype for p in setup.policy.parameters()} == {torch.float32}
        moments = [v for state in setup.optimizer.state.values() for k, v in state.items() if k != "step"]
        assert moments and {v.dtype for v in moments} == {torch.float32}
    finally:
        setup.close()


def test_bf16_has_bfloat16_weights_and_float32_moments(tmp_path):
    setup = build(load_config(None, [*ARGS, "train.precision=bf16"]), tmp_path)
    try:
        before = [p.detach().clone() for p in setup.policy.parameters()]
        seen = watched_step(setup)
        assert seen["layer"] == {torch.bfloat16} and seen["logp"] == {torch.float32}
        assert {p.dtype for p in setup.policy.parameters()} == {torch.bfloat16}
        moments = [v for state in setup.optimizer.state.values() for k, v in state.items() if k != "step"]
        assert moments and {v.dtype for v in moments} == {torch.float32}
        assert any(not torch.equal(a, p) for a, p in zip(before, setup.policy.parameters()))
    finally:
        setup.close()


def test_fp32_runs_no_autocast(tmp_path):
    setup = build(load_config(None, [*ARGS, "train.num_iterations=1"]), tmp_path)
    try:
        assert setup.precision.name == "fp32"
        seen = watched_step(setup)
        assert seen["layer"] == {torch.float32} and seen["logp"] == {torch.float32}
        # on-policy (no pi_old pass): the gap is taken from the update's first pass; in float32 the sampler
        # and the trainer agree to rounding (a few float32 ulps per layer of a 6-token pass, far below 1e-3)
        metrics = seen["metrics"]
        assert 0 <= metrics["rollout/logprob_diff_mean"] <= metrics["rollout/logprob_diff_max"] < 1e-3
        assert abs(metrics["rollout/kl_sampler_trainer"]) < 1e-6
    finally:
        setup.close()
