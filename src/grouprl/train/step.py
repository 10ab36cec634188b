"""The stages of one training step, each a function the loop calls in order (DESIGN.md §1).

Nothing here names an algorithm: every algorithm-dependent decision is a field of the ``AlgoSpec``, and the
math lives in ``grouprl.algo``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from grouprl import rewards as rewards_lib
from grouprl.algo import AlgoSpec, Counts, GroupView, group_advantages, policy_loss
from grouprl.algo.filters import FILTERS
from grouprl.model.kv import cache_unsupported_reason
from grouprl.model.logprobs import sequence_logprobs, shared_prompt_logprobs
from grouprl.types import Rollout, SamplingParams


@dataclass
class Scored:
    """A rollout with its rewards; rows are whole groups of ``G``."""

    rows: list[dict]  # [B] prompt rows (dataset columns)
    rollout: Rollout
    completions: list[str]  # [N]
    rewards: torch.Tensor  # [N] float64, weighted sum
    parts: dict[str, torch.Tensor]  # name -> [N], NaN where not applicable
    accuracy: torch.Tensor  # [N] float64, the first reward function's value (the verifier)
    errors: dict[str, int]
    timeouts: dict[str, int]
    advantages: torch.Tensor | None = None  # [N], set by the update stage (for completions.jsonl)
    seconds: dict[str, float] = field(default_factory=dict)  # "generate", "reward": time spent in each


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def rollout_and_score(backend, tokenizer, rewards: rewards_lib.RewardRunner, rows: list[dict], prompt_texts: list[str], G: int,
                      sampling: SamplingParams) -> Scored:
    """Stages 2–3: sample G completions per prompt and score each with every reward function."""
    t0 = time.perf_counter()
    rollout = backend.generate(encode_prompts(tokenizer, prompt_texts), G, sampling)
    t1 = time.perf_counter()
    ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    prompts = [p for p in prompt_texts for _ in range(G)]
    columns = {k: [row[k] for row in rows for _ in range(G)] for k in rows[0] if k != "prompt"}
    lengths = rollout.completion_mask.sum(-1).tolist()
    completion_ids = [row[:n] for row, n in zip(ids.tolist(), lengths)]  # unpadded, as TRL passes them
    scores = rewards.score(prompts, completions, completion_ids, columns)
    first = next(iter(scores.parts.values()))
    seconds = {"generate": t1 - t0, "reward": time.perf_counter() - t1}
    return Scored(rows, rollout, completions, scores.total, scores.parts, torch.nan_to_num(first, nan=0.0),
                  scores.errors, scores.timeouts, seconds=seconds)


def concat(batches: list[Scored], pad_id: int) -> Scored:
    """Join scored rollouts of possibly different widths (completion width T, prompt width P)."""
    if len(batches) == 1:
        return batches[0]
    P = max(b.rollout.prompt_ids.shape[1] for b in batches)
    T = max(b.rollout.completion_ids.shape[1] for b in batches)

    def left(x, width, value=0):  # prompts are left-padded
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    def right(x, width, value=0):
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    rs = [b.rollout for b in batches]
    rollout = Rollout(
        prompt_ids=torch.cat([left(r.prompt_ids, P, pad_id) for r in rs]),
        prompt_mask=torch.cat([left(r.prompt_mask, P) for r in rs]),
        completion_ids=torch.cat([right(r.completion_ids, T, pad_id) for r in rs]),
        completion_mask=torch.cat([right(r.completion_mask, T) for r in rs]),
        truncated=torch.cat([r.truncated for r in rs]),
        sampler_logprobs=torch.cat([right(r.sampler_logprobs, T) for r in rs]),
    )
    return Scored(
        rows=[row for b in batches for row in b.rows],
        rollout=rollout,
        completions=[c for b in batches for c in b.completions],
        rewards=torch.cat([b.rewards for b in batches]),
        parts={k: torch.cat([b.parts[k] for b in batches]) for k in batches[0].parts},
        accuracy=torch.cat([b.accuracy for b in batches]),
        errors={k: sum(b.errors[k] for b in batches) for k in batches[0].errors},
        timeouts={k: sum(b.timeouts[k] for b in batches) for k in batches[0].timeouts},
        seconds={k: sum(b.seconds.get(k, 0.0) for b in batches) for k in batches[0].seconds},
    )


def select_groups(batch: Scored, groups: list[int], G: int) -> Scored:
    """Keep whole groups, in the given order."""
    rows_idx = torch.tensor([g * G + j for g in groups for j in range(G)], dtype=torch.long)
    r = batch.rollout
    T = int(r.completion_mask[rows_idx].sum(-1).max()) if len(rows_idx) else 0
    return Scored(
        rows=[batch.rows[g] for g in groups],
        rollout=Rollout(r.prompt_ids[rows_idx], r.prompt_mask[rows_idx], r.completion_ids[rows_idx, :T],
                        r.completion_mask[rows_idx, :T], r.truncated[rows_idx], r.sampler_logprobs[rows_idx, :T]),
        completions=[batch.completions[i] for i in rows_idx.tolist()],
        rewards=batch.rewards[rows_idx],
        parts={k: v[rows_idx] for k, v in batch.parts.items()},
        accuracy=batch.accuracy[rows_idx],
        errors=batch.errors,
        timeouts=batch.timeouts,
        seconds=batch.seconds,
    )


def informative_groups(batch: Scored, G: int) -> list[int]:
    """Dynamic sampling's test (DAPO): the groups whose accuracies are not all equal."""
    acc = batch.accuracy.reshape(-1, G)
    view = GroupView(acc, acc, acc, acc.bool())
    return torch.nonzero(FILTERS.get("nonzero_variance")(view)[:, 0]).flatten().tolist()


def model_inputs(rollout: Rollout, rows: torch.Tensor | slice = slice(None)):
    """``(input_ids [n, P+T], attention_mask [n, P+T], T)`` for a teacher-forced pass over some rows."""
    ids = torch.cat([rollout.prompt_ids[rows], rollout.completion_ids[rows]], dim=1)
    mask = torch.cat([rollout.prompt_mask[rows], rollout.completion_mask[rows]], dim=1)
    return ids, mask, rollout.completion_ids.shape[1]


def can_share_prompts(model) -> bool:
    """Whether ``rollout_logprobs`` may run each group's prompt once (see ``shared_prompt_logprobs``)."""
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers >= 5 renamed it
    return cache_unsupported_reason(model) is None and not getattr(model, name, False)


def rollout_logprobs(model, rollout: Rollout, rows: torch.Tensor, G: int, *, temperature: float, chunk_size: int,
                     with_entropy: bool = False, share_prompts: bool = True):
    """Teacher-forced log-probs (and entropies) of the completions in ``rows`` ``[n]`` under ``model``.

    Rows of one group share their prompt; with ``share_prompts`` the prompt runs once per group present in
    ``rows`` instead of once per row (same result up to float rounding, ``G``-fold less prompt work).
    """
    if not share_prompts:
        ids, mask, T = model_inputs(rollout, rows)
        return sequence_logprobs(model, ids, mask, T, temperature=temperature, chunk_size=chunk_size,
                                 with_entropy=with_entropy)
    _, repeats = torch.unique_consecutive(rows // G, return_counts=True)  # [b] rows per group present
    firsts = rows[torch.cumsum(repeats, 0) - repeats]  # [b] one row per group: its prompt
    return shared_prompt_logprobs(model, rollout.prompt_ids[firsts], rollout.prompt_mask[firsts], repeats,
                                  rollout.completion_ids[rows], rollout.completion_mask[rows],
                                  temperature=temperature, chunk_size=chunk_size, with_entropy=with_entropy)


@torch.no_grad()
def frozen_logprobs(model, rollout: Rollout, G: int, temperature: float, micro_batch_size: int, chunk_size: int):
    """Stage 6: log-probs of every completion token under a model that is not being trained (π_old, π_ref)."""
    share = can_share_prompts(model)
    out = []
    for rows in torch.split(torch.arange(rollout.completion_ids.shape[0]), micro_batch_size):
        logp, _ = rollout_logprobs(model, rollout, rows, G, temperature=temperature, chunk_size=chunk_size,
                                   share_prompts=share)
        out.append(logp)
    return torch.cat(out)


@dataclass
class UpdateInputs:
    rollout: Rollout
    advantages: torch.Tensor  # [N]
    loss_mask: torch.Tensor  # [N, T]
    old_logp: torch.Tensor | None  # [N, T]; None: on-policy (the detached current log-probs)
    ref_logp: torch.Tensor | None  # [N, T]


def accumulate_gradients(policy, inputs: UpdateInputs, rows: torch.Tensor, G: int, spec: AlgoSpec, *,
                         temperature: float, micro_batch_size: int, chunk_size: int,
                         norm_length: int) -> dict[str, torch.Tensor]:
    """Stage 7 for one mini-batch: forward/backward per micro-batch with the mini-batch's global counts.

    Returns the mini-batch's metrics (sum-reduced over micro-batches, so they are mini-batch values).
    """
    counts = Counts.of(inputs.loss_mask[rows])
    metrics: dict[str, torch.Tensor] = {}
    entropy_sum = torch.zeros(())
    share = can_share_prompts(policy)
    for micro in torch.split(rows, micro_batch_size):
        logp, entropy = rollout_logprobs(policy, inputs.rollout, micro, G, temperature=temperature,
                                         chunk_size=chunk_size, with_entropy=True, share_prompts=share)
        old = logp.detach() if inputs.old_logp is None else inputs.old_logp[micro]
        ref = None if inputs.ref_logp is None else inputs.ref_logp[micro]
        mask = inputs.loss_mask[micro].to(logp.dtype)
        loss, m = policy_loss(logp, old, ref, mask, inputs.advantages[micro].to(logp.dtype), spec, counts,
                              norm_length=norm_length)
        loss.backward()
        entropy_sum += (entropy.detach() * mask).sum()
        for key, value in m.items():
            metrics[key] = metrics.get(key, 0.0) + value.float()
    metrics["entropy"] = entropy_sum / max(counts.num_tokens, 1.0)
    return metrics


def advantages_stage(batch: Scored, G: int, spec: AlgoSpec, ref_logp: torch.Tensor | None,
                     old_logp_for_kl: torch.Tensor | None):
    """Stages 4–5: shaping, filters and advantages on the whole rollout."""
    r = batch.rollout
    mask = r.completion_mask.to(torch.float64)
    kl_penalty = None
    if spec.beta > 0 and spec.kl_placement == "reward":
        kl_penalty = ((old_logp_for_kl - ref_logp).double() * mask).sum(-1)
    adv = group_advantages(batch.rewards, G, mask.sum(-1), spec, truncated=r.truncated, accuracy=batch.accuracy,
                           kl_penalty=kl_penalty)
    loss_mask = r.completion_mask * adv.in_loss[:, None].to(r.completion_mask.dtype)
    return adv, loss_mask
