"""Teacher-forced log-prob passes over a rollout's completions: the training pass, the frozen passes (π_old,
π_ref) and the plumbing they share (trimming all-padding columns, running each group's prompt once).

Used by the update (``train/``), the reference policy, the sharded wrappers (``distributed/``) and anything
else that needs ``log π(completion | prompt)``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from grouprl.model.kv import cache_unsupported_reason
from grouprl.model.logprobs import sequence_logprobs, shared_prompt_logprobs
from grouprl.types import Rollout


def _cut(prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> tuple[int, int]:
    """``(P0, T1)``: prompt columns ``< P0`` and completion columns ``>= T1`` are padding in every row."""
    P0 = int((prompt_mask.sum(0) == 0).long().cumprod(0).sum())
    T1 = int((completion_mask.sum(0) > 0).nonzero().max()) + 1 if completion_mask.any() else 1
    return P0, T1


def model_inputs(rollout: Rollout, rows: torch.Tensor | slice = slice(None)):
    """``(input_ids [n, P'+T'], attention_mask [n, P'+T'], T')`` for a teacher-forced pass over some rows,
    without the columns that are padding in every one of them. The environment's tokens of a multi-turn
    episode are in the attention mask (the model read them) though not in the completion mask."""
    present = rollout.sequence_mask()[rows]
    P0, T1 = _cut(rollout.prompt_mask[rows], present)
    ids = torch.cat([rollout.prompt_ids[rows][:, P0:], rollout.completion_ids[rows][:, :T1]], dim=1)
    mask = torch.cat([rollout.prompt_mask[rows][:, P0:], present[:, :T1]], dim=1)
    return ids, mask, T1


def _own_tokens(x: torch.Tensor | None, rollout: Rollout, rows) -> torch.Tensor | None:
    """``x`` ``[n, T]`` with 0 where the completion mask is 0 (padding, and the environment's tokens)."""
    if x is None or rollout.env_mask is None:
        return x
    return x.masked_fill(rollout.completion_mask[rows] == 0, 0.0)


def widen(x: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """``[n, T']`` → ``[n, T]``, zeros on the right (the cut columns are padding)."""
    return None if x is None else torch.nn.functional.pad(x, (0, T - x.shape[1]))


def can_share_prompts(model) -> bool:
    """Whether ``rollout_logprobs`` may run each group's prompt once (see ``shared_prompt_logprobs``)."""
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers >= 5 renamed it
    checkpointed = (getattr(model, name, False)
                    or getattr(model, "layers_checkpointed", False))  # model/memory.py
    return cache_unsupported_reason(model) is None and not checkpointed


def rollout_logprobs(model, rollout: Rollout, rows: torch.Tensor, G: int, *, temperature: float,
                     chunk_size: int, with_entropy: bool = False, share_prompts: bool = True):
    """Teacher-forced log-probs (and entropies) ``[n, T]`` of the completions in ``rows`` ``[n]`` under
    ``model``.

    Rows of one group share their prompt; with ``share_prompts`` the prompt runs once per group present in
    ``rows`` instead of once per row (same result up to float rounding, ``G``-fold less prompt work).
    Columns that are padding in every row are cut before the pass (and zeros put back after), so a
    micro-batch costs the same, and rounds the same, whatever batch it was drawn from.
    """
    T = rollout.completion_ids.shape[1]
    if not share_prompts:
        ids, mask, T1 = model_inputs(rollout, rows)
        logp, entropy = sequence_logprobs(model, ids, mask, T1, temperature=temperature,
                                          chunk_size=chunk_size, with_entropy=with_entropy)
        return _own_tokens(widen(logp, T), rollout, rows), _own_tokens(widen(entropy, T), rollout, rows)
    _, repeats = torch.unique_consecutive(rows // G, return_counts=True)  # [b] rows per group present
    firsts = rows[torch.cumsum(repeats, 0) - repeats]  # [b] one row per group: its prompt
    # repeat_interleave wants it beside the tensors it repeats
    repeats = repeats.to(rollout.prompt_ids.device)
    present = rollout.sequence_mask()[rows]  # [n, T] what the model attends to: its tokens and the env's
    P0, T1 = _cut(rollout.prompt_mask[firsts], present)
    logp, entropy = shared_prompt_logprobs(model, rollout.prompt_ids[firsts][:, P0:],
                                           rollout.prompt_mask[firsts][:, P0:], repeats,
                                           rollout.completion_ids[rows][:, :T1],
                                           present[:, :T1], temperature=temperature,
                                           chunk_size=chunk_size, with_entropy=with_entropy)
    return _own_tokens(widen(logp, T), rollout, rows), _own_tokens(widen(entropy, T), rollout, rows)


class TrainingPass(torch.nn.Module):
    """The policy's ``rollout_logprobs`` as a module, so that a wrapper hooking ``forward`` (DDP, FSDP2) sees
    the training pass: ``forward(rollout, rows [n], G) -> (logp [n, T], entropy [n, T])``, run under
    ``autocast()`` (``train.precision``: bf16 autocast for bf16-mixed; the log-probs come out float32)."""

    def __init__(self, model: torch.nn.Module, autocast: Callable[[], AbstractContextManager] = nullcontext):
        super().__init__()
        self.model = model
        self.share_prompts = can_share_prompts(model)
        self.autocast = autocast

    def forward(self, rollout: Rollout, rows: torch.Tensor, G: int, *, temperature: float, chunk_size: int):
        with self.autocast():
            return rollout_logprobs(self.model, rollout, rows, G, temperature=temperature,
                                    chunk_size=chunk_size, with_entropy=True,
                                    share_prompts=self.share_prompts)


def dummy_rollout(device: torch.device | str = "cpu") -> Rollout:
    """One row of one prompt token and one completion token (id 0), on ``device``: a pass that touches every
    parameter."""
    one = torch.ones(1, 1, dtype=torch.long, device=device)
    return Rollout(one * 0, one, one * 0, one, torch.zeros(1, dtype=torch.bool, device=device),
                   torch.zeros(1, 1, device=device))


@torch.no_grad()
def frozen_logprobs(model, rollout: Rollout, G: int, temperature: float, micro_batch_size: int,
                    chunk_size: int):
    """Stage 6: log-probs of every completion token under a model that is not being trained (π_old, π_ref)."""
    # a rank may hold no rows (dynamic sampling); no grad here, so checkpointed layers never recompute and the
    # prompt cache can be shared whatever model.gradient_checkpointing says
    out = [torch.zeros(0, rollout.completion_ids.shape[1], device=rollout.completion_ids.device)]
    share = cache_unsupported_reason(model) is None
    rows_all = torch.arange(rollout.completion_ids.shape[0], device=rollout.completion_ids.device)
    for rows in torch.split(rows_all, micro_batch_size):
        if not len(rows):
            continue
        logp, _ = rollout_logprobs(model, rollout, rows, G, temperature=temperature, chunk_size=chunk_size,
                                   share_prompts=share)
        out.append(logp)
    return torch.cat(out)
