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
    group ``g``'s randomness from ``(seed, group_offset + g)``, so the samples do not depend on how the batch
    is split over calls or ranks."""


@dataclass
class Rollout:
    """What a rollout backend returns for ``N = len(prompts) * G`` completions.

    Completion rows are left-aligned: token ``t`` of row ``i`` is ``completion_ids[i, t]`` and the row's valid
    tokens are the ones where ``completion_mask`` is 1. The EOS token that ended a row counts as a completion
    token (it is a sampled action); padding after it does not.

    A multi-turn episode (``grouprl.env``) also holds tokens the environment wrote (tool results, the chat
    template's turn markers): they are in the sequence (``env_mask`` 1: attended to, positions counted) but
    not the model's actions, so ``completion_mask`` is 0 there, and everything that reads it (the loss, the
    KL, every normaliser, completion lengths) counts the model's own tokens only.
    """

    prompt_ids: torch.Tensor  # [N, P] long, left-padded with pad id
    prompt_mask: torch.Tensor  # [N, P] long, 1 on real prompt tokens
    completion_ids: torch.Tensor  # [N, T] long, right-padded with pad id
    completion_mask: torch.Tensor  # [N, T] long, 1 on sampled tokens (EOS included)
    truncated: torch.Tensor  # [N] bool, hit max_new_tokens without EOS
    sampler_logprobs: torch.Tensor | None = None  # [N, T] float, log pi_old of each sampled token (0 on pad)
    env_mask: torch.Tensor | None = None  # [N, T] long, 1 on environment tokens; None: there are none

    def sequence_mask(self) -> torch.Tensor:
        """``[N, T]`` long, 1 on every token in the sequence: the model's and the environment's (what the
        teacher-forced passes attend to)."""
        return self.completion_mask if self.env_mask is None else self.completion_mask | self.env_mask


@dataclass
class Report:
    """What the reward calls of a batch did besides scoring: which samples got the fallback, the first fault
    of each function, and what the functions logged."""

    n: int = 0  # samples held here (the per-sample fields below have this length)
    scored: int = 0  # samples scored, counting any that were later dropped (dynamic sampling)
    failed: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [n] bool: got the fallback
    first_error: dict[str, str] = field(default_factory=dict)  # name -> its first fault, as printed
    metrics: dict[str, list[float]] = field(default_factory=dict)  # log_metric: name -> values
    extra: dict[str, list] = field(default_factory=dict)  # log_extra: column -> [n] values (None: not logged)

    def add_logs(self, metrics: dict[str, list[float]], extra: dict[str, list]) -> None:
        """One call's logged values (``log_metric``, ``log_extra``); an extra column is cut or padded to one
        value per sample (a later function logging the same column replaces it)."""
        for name, values in metrics.items():
            self.metrics.setdefault(name, []).extend(values)
        for column, values in extra.items():
            self.extra[column] = (values + [None] * self.n)[:self.n]

    @staticmethod
    def concat(reports: list[Report]) -> Report:
        out = Report(sum(r.n for r in reports), sum(r.scored for r in reports))
        out.failed = {k: torch.cat([r.failed[k] for r in reports]) for k in reports[0].failed}
        for r in reports:
            for name, what in r.first_error.items():
                out.first_error.setdefault(name, what)
            for name, values in r.metrics.items():
                out.metrics.setdefault(name, []).extend(values)
        columns = dict.fromkeys(c for r in reports for c in r.extra)  # every report's, in order of appearance
        out.extra = {c: [v for r in reports for v in r.extra.get(c, [None] * r.n)] for c in columns}
        return out

    def select(self, rows: list[int]) -> Report:
        """The per-sample fields of ``rows`` only; the counts and logs stay the batch's."""
        index = torch.tensor(rows, dtype=torch.long, device="cpu")  # the report is host data
        return Report(len(rows), self.scored, {k: v[index] for k, v in self.failed.items()}, self.first_error,
                      self.metrics, {c: [values[i] for i in rows] for c, values in self.extra.items()})


@dataclass(frozen=True)
class Scored:
    """A rollout with its rewards; rows are whole groups of ``G``. A stage that adds to it returns a new one
    (``dataclasses.replace``)."""

    rows: list[dict]  # [B] prompt rows (dataset columns)
    rollout: Rollout
    completions: list[str]  # [N]
    rewards: torch.Tensor  # [N] float64, weighted sum
    parts: dict[str, torch.Tensor]  # name -> [N], NaN where not applicable
    accuracy: torch.Tensor  # [N] float64, the verifier's value (config ``verifier``), NaN as 0
    errors: dict[str, int]
    timeouts: dict[str, int]
    report: Report  # fallbacks, faults, logged values
    advantages: torch.Tensor | None = None  # [N], set by the update stage (for completions.jsonl)
    # [B] long, each group's index in the one-process order (None: 0..B-1)
    group_ids: torch.Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # "generate", "reward": time spent in each
    # multi-turn episodes only: name -> [N] per-episode counts (turns, tool_calls, tool_errors, env_tokens)
    episodes: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateInputs:
    """What the gradient passes of one step read: the rollout, its advantages and loss mask, and the frozen
    log-probs."""

    rollout: Rollout
    advantages: torch.Tensor  # [N]
    loss_mask: torch.Tensor  # [N, T]
    old_logp: torch.Tensor | None  # [N, T]; None: on-policy (the detached current log-probs)
    ref_logp: torch.Tensor | None  # [N, T]


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
        env_mask=None if rs[0].env_mask is None else torch.cat([right(r.env_mask, T) for r in rs]),
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
        report=Report.concat([b.report for b in batches]),
        seconds={k: sum(b.seconds.get(k, 0.0) for b in batches) for k in batches[0].seconds},
        episodes={k: torch.cat([b.episodes[k] for b in batches]) for k in batches[0].episodes},
    )


def select_groups(batch: Scored, groups: list[int], G: int) -> Scored:
    """Keep whole groups, in the given order."""
    # host indices: they index the rollout (on the model's device) and the reward parts (on the CPU) alike
    rows_idx = torch.tensor([g * G + j for g in groups for j in range(G)], dtype=torch.long, device="cpu")
    r = batch.rollout
    present = r.sequence_mask()[rows_idx]  # [n, T]: the columns past the last token of every row are padding
    T = int(present.any(0).nonzero().max()) + 1 if present.any() else 0
    return Scored(
        rows=[batch.rows[g] for g in groups],
        rollout=Rollout(r.prompt_ids[rows_idx], r.prompt_mask[rows_idx], r.completion_ids[rows_idx, :T],
                        r.completion_mask[rows_idx, :T], r.truncated[rows_idx],
                        r.sampler_logprobs[rows_idx, :T],
                        None if r.env_mask is None else r.env_mask[rows_idx, :T]),
        completions=[batch.completions[i] for i in rows_idx.tolist()],
        rewards=batch.rewards[rows_idx],
        parts={k: v[rows_idx] for k, v in batch.parts.items()},
        accuracy=batch.accuracy[rows_idx],
        errors=batch.errors,
        timeouts=batch.timeouts,
        report=batch.report.select(rows_idx.tolist()),
        seconds=batch.seconds,
        episodes={k: v[rows_idx] for k, v in batch.episodes.items()},
    )
