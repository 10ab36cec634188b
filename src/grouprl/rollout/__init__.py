"""Rollout backends: sample groups of completions and the sampler's log-probs."""

from __future__ import annotations

from grouprl.config.schema import ROLLOUT_BACKENDS
from grouprl.rollout.base import RolloutBackend
from grouprl.rollout.fast import FastRollout, unsupported_reason
from grouprl.rollout.hf import HFRollout

BACKENDS = ROLLOUT_BACKENDS


def build_backend(name: str, model, tokenizer) -> RolloutBackend:
    """The rollout backend ``name`` on ``model``; ``auto`` is ``fast`` where the model supports it, else ``hf``."""
    if name == "auto":
        name = "hf" if unsupported_reason(model) else "fast"
    if name == "fast":
        return FastRollout(model, tokenizer)
    if name == "hf":
        return HFRollout(model, tokenizer)
    raise ValueError(f"unknown rollout backend {name!r}; known: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "FastRollout", "HFRollout", "RolloutBackend", "build_backend", "unsupported_reason"]
