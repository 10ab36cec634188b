"""Token sampling with per-group random streams: the samples do not depend on how a batch is split.

Every group (prompt) of a rollout owns a generator seeded from ``(seed, global group index)``; it draws one
uniform number per completion and per position up front (``group_uniforms``). A token is then picked by the
inverse CDF of the (top-k, top-p filtered) distribution at that uniform (``sample_tokens``). The draw of row
``i`` at position ``t`` is therefore the same whether the group is sampled alone, in a batch of 8 or of 256,
on rank 0 or rank 3, and whether its neighbours finished early or not.

Filtering follows ``transformers``' warpers in their order: ``softmax(logits / temperature)``, then top-k,
then top-p on the renormalised top-k distribution (the smallest set of most likely tokens whose mass reaches
``top_p``; at least one token is kept).
"""

from __future__ import annotations

import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads consecutive group indices over the seed space


def group_seed(seed: int, group: int) -> int:
    """The seed of one group's generator, a 63-bit mix of the call's seed and the group's global index."""
    return (seed * _MIX + group * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def group_uniforms(seed: int, first_group: int, num_groups: int, group_size: int,
                   length: int) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` for ``num_groups`` groups of ``group_size`` rows,
    ``[num_groups*group_size, length]`` float64; group ``g`` (global index ``first_group + g``) comes from its
    own generator."""
    generator = torch.Generator()
    out = torch.empty(num_groups * group_size, length, dtype=torch.float64, device="cpu")
    for g in range(num_groups):
        generator.manual_seed(group_seed(seed, first_group + g))
        out[g * group_size : (g + 1) * group_size] = torch.rand(
            group_size, length, generator=generator, dtype=torch.float64, device="cpu"
        )
    return out


def filtered_probs(
    logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sampling distribution of ``logits`` ``[n, V]``, unnormalised after filtering.

    Returns ``(weights, order)``: ``weights`` ``[n, K]`` float32 where column ``j`` is token ``order[:, j]``
    (``order`` ``[n, K]`` long), or ``(probs [n, V], None)`` when nothing is filtered (column = token id).
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [n, V]
    vocab = probs.shape[-1]
    k = top_k if 0 < top_k < vocab else vocab
    if k == vocab and top_p >= 1.0:
        return probs, None
    if k < vocab:
        weights, order = probs.topk(k, dim=-1)  # [n, k] sorted descending
    else:
        weights, order = probs.sort(dim=-1, descending=True)  # [n, V]
    if top_p < 1.0:
        renorm = weights / weights.sum(-1, keepdim=True)
        mass_before = renorm.cumsum(-1) - renorm  # [n, K] mass of the strictly more likely tokens
        keep = mass_before < top_p
        keep[:, 0] = True
        weights = weights * keep
    return weights, order


def sample_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by the inverse CDF at ``uniforms`` ``[n]``; greedy when ``temperature == 0``.

    Returns ``tokens`` ``[n]`` long and their log-probs ``[n]`` under ``softmax(logits / temperature)``
    without the top-k/top-p renormalisation (for greedy: under ``softmax(logits)``), the quantity the trainer
    recomputes.
    """
    if temperature == 0:
        tokens = logits.argmax(-1)
        scale = 1.0
    else:
        weights, order = filtered_probs(logits, temperature, top_p, top_k)
        cdf = weights.double().cumsum(-1)  # [n, K]
        target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # [n, 1] inside [0, total)
        column = torch.searchsorted(cdf, target, right=True)  # [n, 1]: first column whose cdf exceeds target
        last_positive = (cdf < cdf[:, -1:]).sum(-1, keepdim=True)  # guards a target rounded up to the total
        column = torch.minimum(column, last_positive)
        tokens = (column if order is None else order.gather(-1, column)).squeeze(-1)
        scale = temperature
    logp = torch.log_softmax(logits.float() / scale, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, logp
