"""The rollout backend protocol: the trainer calls only these two methods and never knows which backend
runs."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from grouprl.types import Rollout, SamplingParams


@runtime_checkable
class RolloutBackend(Protocol):
    """Samples groups of completions from the current policy (which is pi_old for the update that follows)."""

    def generate(
        self, prompt_ids: list[list[int]], num_generations: int, sampling: SamplingParams
    ) -> Rollout:
        """Sample ``G = num_generations`` completions for each of the ``B`` prompts.

        ``prompt_ids`` are unpadded token ids. The result has ``N = B * G`` rows, prompt ``g`` in rows
        ``g*G .. g*G+G-1``, and follows the ``Rollout`` contract (EOS counted as a completion token,
        ``sampler_logprobs`` under ``logits / temperature`` without top-p/top-k renormalisation).
        """
        ...

    def load_weights(self, policy: torch.nn.Module) -> None:
        """Make the backend sample from ``policy``'s current weights."""
        ...
