"""Data contracts that cross module boundaries, every tensor field with its shape.

Notation: ``B`` prompts per step, ``G`` completions per prompt, ``N = B*G`` sequences, ``P`` padded prompt
width, ``T`` padded completion width. Groups are contiguous: rows ``g*G .. g*G+G-1`` belong to prompt ``g``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    seed: int | None = None
    group_offset: int = 0
    """Global index of this call's first prompt. A backend that seeds each group on its own (``fast``) draws
    group ``g``'s randomness from ``(seed, group_offset + g)``, so the samples do not depend on how the batch is
    split over calls or ranks."""


@dataclass
class Rollout:
    """What a rollout backend returns for ``N = len(prompts) * G`` completions.

    Completion rows are left-aligned: token ``t`` of row ``i`` is ``completion_ids[i, t]`` and the row's valid
    tokens are the ones where ``completion_mask`` is 1. The EOS token that ended a row counts as a completion
    token (it is a sampled action); padding after it does not.
    """

    prompt_ids: torch.Tensor  # [N, P] long, left-padded with pad id
    prompt_mask: torch.Tensor  # [N, P] long, 1 on real prompt tokens
    completion_ids: torch.Tensor  # [N, T] long, right-padded with pad id
    completion_mask: torch.Tensor  # [N, T] long, 1 on sampled tokens (EOS included)
    truncated: torch.Tensor  # [N] bool, hit max_new_tokens without EOS
    sampler_logprobs: torch.Tensor | None = None  # [N, T] float, log pi_old of each sampled token (0 on pad)


@dataclass
class StepBatch:
    """One rollout after scoring and shaping: what the update stage consumes."""

    rollout: Rollout
    rewards: torch.Tensor  # [N] float, combined (shaped) reward
    correct: torch.Tensor  # [N] float in {0,1} (or NaN when unknown): the verifier's accuracy signal
    reward_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N], NaN where not applicable
