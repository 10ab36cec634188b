"""Rollout backends: sample groups of completions and the sampler's log-probs."""

from grouprl.rollout.base import RolloutBackend
from grouprl.rollout.hf import HFRollout

__all__ = ["HFRollout", "RolloutBackend"]
