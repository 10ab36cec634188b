"""The stages of one training step, each a function the loop calls in order (DESIGN.md §1).

Nothing here names an algorithm: every algorithm-dependent decision is a field of the ``AlgoSpec``, and the
math lives in ``grouprl.algo``.

Multi-process runs (``Dist``): each rank holds whole groups of the global batch. Advantages need group and
batch statistics, so every rank gathers the per-sequence scalars of all ranks (rewards, lengths, flags: a few
numbers per sequence) and runs ``group_advantages`` on the whole batch in the order of a one-process run, then
keeps its own rows; the loss normalisers (``Counts``) and the metrics are all-reduced as sums and counts.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from grouprl import rewards as rewards_lib
from grouprl.algo import AlgoSpec, Counts, GroupView, group_advantages, policy_loss
from grouprl.algo.filters import FILTERS
from grouprl.model.logprobs import sequence_logprobs
from grouprl.train.distributed import SINGLE, Dist
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
    group_ids: torch.Tensor | None = None  # [B] long, each group's index in the one-process order (None: 0..B-1)


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def rollout_and_score(backend, tokenizer, rewards: rewards_lib.RewardRunner, rows: list[dict], prompt_texts: list[str], G: int,
                      sampling: SamplingParams) -> Scored:
    """Stages 2–3: sample G completions per prompt and score each with every reward function."""
    rollout = backend.generate(encode_prompts(tokenizer, prompt_texts), G, sampling)
    ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    prompts = [p for p in prompt_texts for _ in range(G)]
    columns = {k: [row[k] for row in rows for _ in range(G)] for k in rows[0] if k != "prompt"}
    lengths = rollout.completion_mask.sum(-1).tolist()
    completion_ids = [row[:n] for row, n in zip(ids.tolist(), lengths)]  # unpadded, as TRL passes them
    scores = rewards.score(prompts, completions, completion_ids, columns)
    first = next(iter(scores.parts.values()))
    return Scored(rows, rollout, completions, scores.total, scores.parts, torch.nan_to_num(first, nan=0.0),
                  scores.errors, scores.timeouts)


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
    )


def informative_groups(batch: Scored, G: int) -> list[int]:
    """Dynamic sampling's test (DAPO): the groups whose accuracies are not all equal."""
    acc = batch.accuracy.reshape(-1, G)
    view = GroupView(acc, acc, acc, acc.bool())
    return torch.nonzero(FILTERS.get("nonzero_variance")(view)[:, 0]).flatten().tolist()


def model_inputs(rollout: Rollout, rows: torch.Tensor | slice = slice(None)):
    """``(input_ids [n, P'+T'], attention_mask [n, P'+T'], T')`` for a teacher-forced pass over some rows.

    Columns that are padding in every one of these rows are cut (left of the prompts, right of the
    completions), so a micro-batch costs the same, and rounds the same, whatever batch it was drawn from;
    ``widen`` puts the ``T'`` result columns back to the rollout's ``T``.
    """
    prompt_mask, completion_mask = rollout.prompt_mask[rows], rollout.completion_mask[rows]
    P0 = int((prompt_mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-pad prompt columns
    T1 = max(int((completion_mask.sum(0) > 0).nonzero().max()) + 1 if completion_mask.any() else 1, 1)
    ids = torch.cat([rollout.prompt_ids[rows][:, P0:], rollout.completion_ids[rows][:, :T1]], dim=1)
    mask = torch.cat([prompt_mask[:, P0:], completion_mask[:, :T1]], dim=1)
    return ids, mask, T1


def widen(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[n, T']`` → ``[n, T]``, zeros on the right (the cut columns are padding)."""
    return torch.nn.functional.pad(x, (0, T - x.shape[1]))


@torch.no_grad()
def frozen_logprobs(model, rollout: Rollout, temperature: float, micro_batch_size: int, chunk_size: int):
    """Stage 6: log-probs of every completion token under a model that is not being trained (π_old, π_ref)."""
    out = [torch.zeros(0, rollout.completion_ids.shape[1])]  # a rank may hold no rows (dynamic sampling)
    for rows in torch.split(torch.arange(rollout.completion_ids.shape[0]), micro_batch_size):
        if not len(rows):
            continue
        ids, mask, T = model_inputs(rollout, rows)
        logp, _ = sequence_logprobs(model, ids, mask, T, temperature=temperature, chunk_size=chunk_size)
        out.append(widen(logp, rollout.completion_ids.shape[1]))
    return torch.cat(out)


@dataclass
class UpdateInputs:
    rollout: Rollout
    advantages: torch.Tensor  # [N]
    loss_mask: torch.Tensor  # [N, T]
    old_logp: torch.Tensor | None  # [N, T]; None: on-policy (the detached current log-probs)
    ref_logp: torch.Tensor | None  # [N, T]


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to ``max_norm`` (0: off); returns the norm before clipping, a plain
    scalar tensor also when the gradients are sharded (FSDP's DTensors)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm or float("inf"))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def global_counts(loss_mask: torch.Tensor, d: Dist) -> Counts:
    """The normalisers of a mini-batch spread over ranks: sequence and token counts summed over ranks."""
    local = Counts.of(loss_mask)
    total = d.sum_floats({"num_seqs": local.num_seqs, "num_tokens": local.num_tokens})
    return Counts(total["num_seqs"], total["num_tokens"])


def accumulate_gradients(scorer, inputs: UpdateInputs, rows: torch.Tensor, spec: AlgoSpec, counts: Counts, *,
                         temperature: float, micro_batch_size: int, chunk_size: int, norm_length: int,
                         d: Dist = SINGLE) -> dict[str, float]:
    """Stage 7 for one mini-batch: forward/backward per micro-batch with the mini-batch's global counts.

    ``scorer`` is ``TokenLogprobs(policy)``, DDP-wrapped when ``d.world > 1``. Every rank runs the same
    number of backward passes (DDP reduces gradients in the last one): a rank with fewer micro-batches
    pads with passes over a dummy row whose loss mask is empty, which add exactly zero.

    Returns the mini-batch's metrics, summed over micro-batches and ranks (so they are global values).
    """
    micros = [m for m in torch.split(rows, micro_batch_size) if len(m)]
    n_passes = int(d.all_reduce(torch.tensor([len(micros)]), "max").item())
    no_sync = getattr(scorer, "no_sync", nullcontext)
    metrics: dict[str, torch.Tensor] = {}
    entropy_sum = torch.zeros(())
    for i in range(n_passes):
        if i < len(micros):
            micro = micros[i]
            ids, attn, T = model_inputs(inputs.rollout, micro)
        else:  # a dummy row: one real token to score, nothing in the loss
            micro = None
            ids, attn, T = torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), 1
        with no_sync() if i < n_passes - 1 else nullcontext():
            logp, entropy = scorer(ids, attn, T, temperature=temperature, chunk_size=chunk_size)
            if micro is None:
                zeros = torch.zeros_like(logp)
                old, ref, mask, adv = logp.detach(), None if inputs.ref_logp is None else zeros, zeros, zeros[:, 0]
            else:
                full = inputs.rollout.completion_ids.shape[1]
                logp, entropy = widen(logp, full), widen(entropy, full)
                old = logp.detach() if inputs.old_logp is None else inputs.old_logp[micro]
                ref = None if inputs.ref_logp is None else inputs.ref_logp[micro]
                mask = inputs.loss_mask[micro].to(logp.dtype)
                adv = inputs.advantages[micro].to(logp.dtype)
            loss, m = policy_loss(logp, old, ref, mask, adv, spec, counts, norm_length=norm_length)
            # The loss uses global counts, so the ranks' losses sum to the global loss. DDP averages the
            # gradients over ranks (divides by world), so scaling by world makes the result that sum: the
            # gradient of a one-process run on the whole batch.
            (loss * d.world).backward()
        entropy_sum += (entropy.detach() * mask).sum()
        for key, value in m.items():
            metrics[key] = metrics.get(key, 0.0) + value.float()
    metrics["entropy"] = entropy_sum / max(counts.num_tokens, 1.0)
    return d.sum_floats({k: float(v) for k, v in metrics.items()})


def advantages_stage(batch: Scored, G: int, spec: AlgoSpec, ref_logp: torch.Tensor | None,
                     old_logp_for_kl: torch.Tensor | None, d: Dist = SINGLE):
    """Stages 4–5: shaping, filters and advantages on the whole (global) rollout.

    ``batch.group_ids`` ``[B_local]``: each local group's index in the one-process order. Every rank
    gathers ``[N_global, 6]`` per-sequence scalars, sorts them into that order, computes the
    advantages exactly as one process would, and keeps its own rows. Returns the local ``Advantages`` (its
    metrics are global) and the local loss mask ``[N, T]``.
    """
    r = batch.rollout
    mask = r.completion_mask.to(torch.float64)
    N = mask.shape[0]
    kl_penalty = torch.zeros(N, dtype=torch.float64)
    if spec.beta > 0 and spec.kl_placement == "reward":
        kl_penalty = ((old_logp_for_kl - ref_logp).double() * mask).sum(-1)
    group_ids = torch.arange(N // G) if batch.group_ids is None else batch.group_ids
    key = (group_ids.double()[:, None] * G + torch.arange(G)).flatten()  # [N] unique, in one-process order
    local = torch.stack([batch.rewards.double(), mask.sum(-1), r.truncated.double(), batch.accuracy.double(),
                         kl_penalty, key], dim=1)  # [N, 6]
    every = d.gather_rows(local)
    every = every[torch.argsort(every[:, 5], stable=True)]  # [N_global, 6]
    adv = group_advantages(every[:, 0], G, every[:, 1], spec, truncated=every[:, 2].bool(), accuracy=every[:, 3],
                           kl_penalty=every[:, 4] if spec.beta > 0 and spec.kl_placement == "reward" else None)
    mine = torch.searchsorted(every[:, 5].contiguous(), key)  # [N] positions of this rank's rows
    adv.advantages, adv.in_loss, adv.rewards = adv.advantages[mine], adv.in_loss[mine], adv.rewards[mine]
    loss_mask = r.completion_mask * adv.in_loss[:, None].to(r.completion_mask.dtype)
    return adv, loss_mask
