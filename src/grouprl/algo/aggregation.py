"""Loss aggregation (docs/math.md, Aggregation): per-unit values → one scalar, with **global** counts.

One signature::

    fn(values [N, T] or [N], mask [N, T], counts: Counts, **hparams) -> scalar

Every mode is a weighted **sum** ``sum_{i,t} c_{i,t} v_{i,t}`` whose denominators come from ``counts`` — the
whole (global) mini-batch, not this micro-batch — so summing the results of micro-batches (and of ranks)
gives exactly the full-batch value, whatever the split. Each mode is registered with the spec fields it
reads (``params``) and what the caller must supply (``needs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grouprl.algo.ratios import masked_token_mean
from grouprl.registry import Registry

AGGREGATIONS: Registry = Registry("loss aggregation")


@dataclass(frozen=True)
class Counts:
    """Denominators for aggregation, counted over the global mini-batch."""

    num_seqs: float  # sequences with at least one unmasked token
    num_tokens: float  # unmasked tokens

    @staticmethod
    def of(mask: torch.Tensor) -> Counts:
        """The counts of one (full) batch's loss mask ``[N, T]``."""
        return Counts(float((mask.sum(-1) > 0).sum()), float(mask.sum()))


def _need_tokens(values: torch.Tensor, mode: str) -> None:
    if values.dim() != 2:
        raise ValueError(f"{mode} aggregates token-level values [N, T]; "
                         "a sequence-level term needs 'seq_mean'")


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor, counts: Counts) -> torch.Tensor:
    """GRPO: ``(1/N_seq) sum_i (1/|o_i|) sum_t v_{i,t}``; every sequence weighs the same.

    A sequence-level term ``[N]`` (GSPO with TRL's ``loss_type="grpo"``) is its own token mean:
    ``seq_mean``."""
    if values.dim() == 1:
        return seq_mean(values, mask, counts)
    return masked_token_mean(values, mask).sum() / max(counts.num_seqs, 1.0)


@AGGREGATIONS.register("token_mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor, counts: Counts) -> torch.Tensor:
    """DAPO: ``(1/sum_i |o_i|) sum_{i,t} v_{i,t}``; every token weighs the same."""
    _need_tokens(values, "token_mean")
    return (values * mask).sum() / max(counts.num_tokens, 1.0)


@AGGREGATIONS.register("seq_mean_token_sum_norm", params={"loss_norm_length": "norm_length"},
                       needs=("norm_length",))
def seq_mean_token_sum_norm(values: torch.Tensor, mask: torch.Tensor, counts: Counts, *,
                            norm_length: float | None) -> torch.Tensor:
    """Dr. GRPO: ``(1/(L_norm N_seq)) sum_{i,t} v_{i,t}`` with a **constant** ``L_norm`` (the generation
    budget), so a response's weight does not depend on its own length or on this batch's padding.
    ``norm_length`` is ``loss_norm_length`` when set, else the generation budget the caller supplies."""
    _need_tokens(values, "seq_mean_token_sum_norm")
    if not norm_length or norm_length <= 0:
        raise ValueError("loss_type='seq_mean_token_sum_norm' (Dr. GRPO) divides by a constant generation "
                         "budget; pass max_new_tokens= or set loss_norm_length")
    return (values * mask).sum() / (norm_length * max(counts.num_seqs, 1.0))


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(values: torch.Tensor, mask: torch.Tensor, counts: Counts) -> torch.Tensor:
    """``(1/N_seq) sum_{i,t} v_{i,t}``: long responses weigh more."""
    _need_tokens(values, "seq_mean_token_sum")
    return (values * mask).sum() / max(counts.num_seqs, 1.0)


@AGGREGATIONS.register("seq_mean")
def seq_mean(values: torch.Tensor, mask: torch.Tensor, counts: Counts) -> torch.Tensor:
    """GSPO / GMPO: one term per sequence, ``(1/N_seq) sum_i v_i``. Token values are first averaged per
    sequence, so a token-level quantity (the KL) is aggregated as seq-mean-token-mean."""
    present = (mask.sum(-1) > 0).to(values.dtype)
    per_seq = masked_token_mean(values, mask) if values.dim() == 2 else values * present
    return per_seq.sum() / max(counts.num_seqs, 1.0)
