"""The stages of one training step, each a function the loop calls in order (docs/architecture.md).

Nothing here names an algorithm: every algorithm-dependent decision is a field of the ``AlgoSpec``, and the
math lives in ``grouprl.algo``.

Multi-process runs (``Dist``): each rank holds whole groups of the global batch. Advantages need group and
batch statistics, so every rank gathers the per-sequence scalars of all ranks (rewards, lengths, flags: a few
numbers per sequence) and runs ``group_advantages`` on the whole batch in the order of a one-process run, then
keeps its own rows; the loss normalisers (``Counts``) and the metrics are all-reduced as sums and counts.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields

import torch

from grouprl import rewards as rewards_lib
from grouprl.algo import AlgoSpec, Counts, GroupView, group_advantages, policy_loss
from grouprl.algo.filters import FILTERS
from grouprl.model.kv import cache_unsupported_reason
from grouprl.model.logprobs import sequence_logprobs, shared_prompt_logprobs
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
    report: rewards_lib.Report = field(default_factory=rewards_lib.Report)  # fallbacks, faults, logged values
    advantages: torch.Tensor | None = None  # [N], set by the update stage (for completions.jsonl)
    group_ids: torch.Tensor | None = None  # [B] long, each group's index in the one-process order (None: 0..B-1)
    seconds: dict[str, float] = field(default_factory=dict)  # "generate", "reward": time spent in each


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def decode_completions(tokenizer, rollout: Rollout) -> tuple[list[str], list[list[int]]]:
    """Each completion's text (no special tokens) and its token ids, unpadded (as TRL passes them)."""
    ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, tokenizer.pad_token_id)
    lengths = rollout.completion_mask.sum(-1).tolist()
    return tokenizer.batch_decode(ids, skip_special_tokens=True), [row[:n] for row, n in zip(ids.tolist(), lengths)]


def rollout_and_score(backend, tokenizer, rewards: rewards_lib.RewardRunner, rows: list[dict], prompt_texts: list[str], G: int,
                      sampling: SamplingParams, state: rewards_lib.RewardState | None = None) -> Scored:
    """Stages 2–3: sample G completions per prompt and score each with every reward function, called as TRL
    calls them (``rewards_lib.reward_inputs``); ``state`` is their ``trainer_state``."""
    t0 = time.perf_counter()
    rollout = backend.generate(encode_prompts(tokenizer, prompt_texts), G, sampling)
    t1 = time.perf_counter()
    completions, completion_ids = decode_completions(tokenizer, rollout)
    prompts, as_passed, columns = rewards_lib.reward_inputs(rows, completions, G)
    scores = rewards.score(prompts, as_passed, completion_ids, columns, state=state)
    first = next(iter(scores.parts.values()))
    seconds = {"generate": t1 - t0, "reward": time.perf_counter() - t1}
    return Scored(rows, rollout, completions, scores.total, scores.parts, torch.nan_to_num(first, nan=0.0),
                  scores.errors, scores.timeouts, scores.report, seconds=seconds)


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
        report=rewards_lib.Report.concat([b.report for b in batches]),
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
        report=batch.report.select(rows_idx.tolist()),
        seconds=batch.seconds,
    )


def informative_groups(batch: Scored, G: int) -> list[int]:
    """Dynamic sampling's test (DAPO): the groups whose accuracies are not all equal."""
    acc = batch.accuracy.reshape(-1, G)
    view = GroupView(acc, acc, acc, acc.bool())
    return torch.nonzero(FILTERS.get("nonzero_variance")(view)[:, 0]).flatten().tolist()


def _cut(prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> tuple[int, int]:
    """``(P0, T1)``: prompt columns ``< P0`` and completion columns ``>= T1`` are padding in every row."""
    P0 = int((prompt_mask.sum(0) == 0).long().cumprod(0).sum())
    T1 = int((completion_mask.sum(0) > 0).nonzero().max()) + 1 if completion_mask.any() else 1
    return P0, T1


def model_inputs(rollout: Rollout, rows: torch.Tensor | slice = slice(None)):
    """``(input_ids [n, P'+T'], attention_mask [n, P'+T'], T')`` for a teacher-forced pass over some rows,
    without the columns that are padding in every one of them."""
    P0, T1 = _cut(rollout.prompt_mask[rows], rollout.completion_mask[rows])
    ids = torch.cat([rollout.prompt_ids[rows][:, P0:], rollout.completion_ids[rows][:, :T1]], dim=1)
    mask = torch.cat([rollout.prompt_mask[rows][:, P0:], rollout.completion_mask[rows][:, :T1]], dim=1)
    return ids, mask, T1


def widen(x: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """``[n, T']`` → ``[n, T]``, zeros on the right (the cut columns are padding)."""
    return None if x is None else torch.nn.functional.pad(x, (0, T - x.shape[1]))


def can_share_prompts(model) -> bool:
    """Whether ``rollout_logprobs`` may run each group's prompt once (see ``shared_prompt_logprobs``)."""
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers >= 5 renamed it
    checkpointed = getattr(model, name, False) or getattr(model, "layers_checkpointed", False)  # model/memory.py
    return cache_unsupported_reason(model) is None and not checkpointed


def rollout_logprobs(model, rollout: Rollout, rows: torch.Tensor, G: int, *, temperature: float, chunk_size: int,
                     with_entropy: bool = False, share_prompts: bool = True):
    """Teacher-forced log-probs (and entropies) ``[n, T]`` of the completions in ``rows`` ``[n]`` under ``model``.

    Rows of one group share their prompt; with ``share_prompts`` the prompt runs once per group present in
    ``rows`` instead of once per row (same result up to float rounding, ``G``-fold less prompt work).
    Columns that are padding in every row are cut before the pass (and zeros put back after), so a
    micro-batch costs the same, and rounds the same, whatever batch it was drawn from.
    """
    T = rollout.completion_ids.shape[1]
    if not share_prompts:
        ids, mask, T1 = model_inputs(rollout, rows)
        logp, entropy = sequence_logprobs(model, ids, mask, T1, temperature=temperature, chunk_size=chunk_size,
                                          with_entropy=with_entropy)
        return widen(logp, T), widen(entropy, T)
    _, repeats = torch.unique_consecutive(rows // G, return_counts=True)  # [b] rows per group present
    firsts = rows[torch.cumsum(repeats, 0) - repeats]  # [b] one row per group: its prompt
    repeats = repeats.to(rollout.prompt_ids.device)  # repeat_interleave wants it beside the tensors it repeats
    P0, T1 = _cut(rollout.prompt_mask[firsts], rollout.completion_mask[rows])
    logp, entropy = shared_prompt_logprobs(model, rollout.prompt_ids[firsts][:, P0:],
                                           rollout.prompt_mask[firsts][:, P0:], repeats,
                                           rollout.completion_ids[rows][:, :T1], rollout.completion_mask[rows][:, :T1],
                                           temperature=temperature, chunk_size=chunk_size, with_entropy=with_entropy)
    return widen(logp, T), widen(entropy, T)


class TrainingPass(torch.nn.Module):
    """The policy's ``rollout_logprobs`` as a module, so that a wrapper hooking ``forward`` (DDP, FSDP2) sees
    the training pass: ``forward(rollout, rows [n], G) -> (logp [n, T], entropy [n, T])``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.share_prompts = can_share_prompts(model)

    def forward(self, rollout: Rollout, rows: torch.Tensor, G: int, *, temperature: float, chunk_size: int):
        return rollout_logprobs(self.model, rollout, rows, G, temperature=temperature, chunk_size=chunk_size,
                                with_entropy=True, share_prompts=self.share_prompts)


_ONE = torch.ones(1, 1, dtype=torch.long)
DUMMY = Rollout(_ONE * 0, _ONE, _ONE * 0, _ONE, torch.zeros(1, dtype=torch.bool), torch.zeros(1, 1))
"""One row of one prompt token and one completion token (id 0): a pass that touches every parameter."""


@torch.no_grad()
def frozen_logprobs(model, rollout: Rollout, G: int, temperature: float, micro_batch_size: int, chunk_size: int):
    """Stage 6: log-probs of every completion token under a model that is not being trained (π_old, π_ref)."""
    # a rank may hold no rows (dynamic sampling); no grad here, so checkpointed layers never recompute and the
    # prompt cache can be shared whatever model.gradient_checkpointing says
    out = [torch.zeros(0, rollout.completion_ids.shape[1], device=rollout.completion_ids.device)]
    share = cache_unsupported_reason(model) is None
    for rows in torch.split(torch.arange(rollout.completion_ids.shape[0]), micro_batch_size):
        if not len(rows):
            continue
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


def accumulate_gradients(scorer, inputs: UpdateInputs, rows: torch.Tensor, G: int, spec: AlgoSpec, counts: Counts, *,
                         temperature: float, micro_batch_size: int, chunk_size: int, norm_length: int,
                         d: Dist = SINGLE) -> dict[str, float]:
    """Stage 7 for one mini-batch: forward/backward per micro-batch with the mini-batch's global counts.

    ``scorer`` is ``TrainingPass(policy)``, wrapped in DDP or FSDP2 when ``d.world > 1``. Every rank runs the same
    number of backward passes (DDP reduces gradients in the last one): a rank with fewer micro-batches
    pads with passes over a dummy row whose loss mask is empty, which add exactly zero.

    Returns the mini-batch's metrics, summed over micro-batches and ranks (so they are global values).
    """
    micros = [m for m in torch.split(rows, micro_batch_size) if len(m)]
    n_passes = int(d.all_reduce(torch.tensor([len(micros)]), "max").item())
    no_sync = getattr(scorer, "no_sync", nullcontext)
    metrics: dict[str, torch.Tensor] = {}
    entropy_sum = 0.0
    device = inputs.rollout.prompt_ids.device
    dummy = Rollout(**{f.name: getattr(DUMMY, f.name).to(device) for f in fields(Rollout)})
    for i in range(n_passes):
        rollout, micro, group = (inputs.rollout, micros[i], G) if i < len(micros) else (dummy, None, 1)
        with no_sync() if i < n_passes - 1 else nullcontext():
            logp, entropy = scorer(rollout, torch.zeros(1, dtype=torch.long, device=device) if micro is None else micro, group,
                                   temperature=temperature, chunk_size=chunk_size)
            if micro is None:  # a dummy row: a pass over every parameter, nothing in the loss
                zeros = torch.zeros_like(logp)
                old, ref, mask, adv = logp.detach(), None if inputs.ref_logp is None else zeros, zeros, zeros[:, 0]
            else:
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
    loss_mask = r.completion_mask * adv.in_loss[:, None].to(r.completion_mask.device, r.completion_mask.dtype)
    return adv, loss_mask
