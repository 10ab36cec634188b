"""Per-token log-probabilities (and entropies) of completions under a causal LM, computed in chunks.

A GRPO step needs ``log pi(y_t | x, y_<t)`` for every completion token, under ``logits / temperature`` (the
distribution the rollout sampled from). The naive way, ``log_softmax(model(x).logits)``, materialises an
``[N, L, V]`` float32 tensor; with a 150k vocabulary that is the largest allocation of the step. Instead the
backbone runs once for hidden states, and the LM head, log-softmax and gather run on chunks of the ``N*T``
completion positions only. In grad mode each chunk is checkpointed, so backward stores hidden states, not
logits.

Departure from ``model(...).logits``: the head is re-applied by hand (``get_output_embeddings``), followed by
the logit post-processing that HF models declare in their config (Cohere's ``logit_scale``, Granite's
``logits_scaling``, Gemma's ``final_logit_softcapping``); a model with other custom post-processing would not
match its own ``forward``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, PreTrainedModel

from grouprl.model.kv import repeat_rows, with_cache


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as HF ``generate`` assigns them: ``cumsum(mask) - 1``, clipped at 0.

    ``attention_mask`` is ``[N, L]``; returns ``[N, L]`` long.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _head_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on ``hidden`` ``[M, H]`` -> logits ``[M, V]``, upcast to at least float32."""
    logits = model.get_output_embeddings()(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    scale = getattr(model.config, "logit_scale", None)  # Cohere
    if scale is not None:
        logits = logits * scale
    divisor = getattr(model.config, "logits_scaling", None)  # Granite
    if divisor is not None:
        logits = logits / divisor
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2/3
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _chunk_logprobs(
    model: PreTrainedModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    with_entropy: bool,
) -> torch.Tensor:
    """Log-prob of ``targets`` ``[M]`` given ``hidden`` ``[M, H]``; returns ``[M]`` or ``[2, M]`` (logp,
    entropy)."""
    logits = _head_logits(model, hidden) / temperature  # [M, V]
    lse = torch.logsumexp(logits, dim=-1)  # [M]
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # [M]
    if not with_entropy:
        return logp
    # H = -sum p log p = lse - sum p * logits
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)  # [M]
    return torch.stack([logp, entropy])


def sequence_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the last ``T = completion_len`` tokens of each row under ``logits / temperature``.

    Args:
        input_ids: ``[N, L]`` prompt (left-padded) followed by completion (right-padded), ``L = P + T``,
            ``P >= 1``.
        attention_mask: ``[N, L]`` 1 on real tokens; its last ``T`` columns are the completion mask.
        completion_len: ``T``.
        temperature: > 0; use 1.0 for greedy rollouts.
        chunk_size: completion positions per LM-head chunk; peak extra memory is about ``chunk_size * V``
            floats.
        with_entropy: also return the entropy of the temperature-scaled next-token distribution.

    Returns:
        ``logp`` ``[N, T]`` and ``entropy`` ``[N, T]`` (or ``None``), in float32 (float64 for a float64
        model), set to 0 where the completion mask is 0. Differentiable w.r.t. the model's parameters in grad
        mode.
    """
    n, seq_len = input_ids.shape
    if not 0 < completion_len < seq_len:
        raise ValueError(f"completion_len must be in [1, L-1] = [1, {seq_len - 1}], got {completion_len}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use 1.0 for greedy rollouts), got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")

    # The last token predicts nothing we score, so the backbone sees L-1 tokens; causality keeps the rest
    # exact.
    context = slice(0, seq_len - 1)
    hidden = model.base_model(
        input_ids=input_ids[:, context],
        attention_mask=attention_mask[:, context],
        position_ids=position_ids_from_mask(attention_mask)[:, context],
        use_cache=False,
    ).last_hidden_state  # [N, L-1, H]
    # The hidden state at position P-1+t predicts completion token t.
    hidden = hidden[:, -completion_len:]  # [N, T, H]
    return _score(model, hidden, input_ids[:, -completion_len:], attention_mask[:, -completion_len:] == 0,
                  temperature, chunk_size, with_entropy)


def _score(model, hidden: torch.Tensor, targets: torch.Tensor, pad: torch.Tensor, temperature: float,
           chunk_size: int, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """LM head, log-softmax and gather on ``hidden`` ``[N, T, H]`` in chunks of positions; ``targets``,
    ``pad`` ``[N, T]``. Returns ``logp`` ``[N, T]`` and ``entropy`` ``[N, T]`` or None, 0 where ``pad``."""
    n, completion_len = targets.shape
    head = partial(_chunk_logprobs, model, temperature=temperature, with_entropy=with_entropy)
    if torch.is_grad_enabled():  # backward recomputes each chunk's logits
        head = partial(checkpoint, head, use_reentrant=False)
    flat_hidden, flat_targets = hidden.flatten(0, 1), targets.flatten()  # [N*T, H], [N*T]
    chunks = [head(h, y) for h, y in zip(flat_hidden.split(chunk_size), flat_targets.split(chunk_size))]
    out = torch.cat(chunks, dim=-1).unflatten(-1, (n, completion_len))  # [N, T] or [2, N, T]
    out = out.masked_fill(pad, 0.0)
    return (out[0], out[1]) if with_entropy else (out, None)


def shared_prompt_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    repeats: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``sequence_logprobs`` for rows that share prompts, running each prompt once instead of once per row.

    Prompt ``i`` (``prompt_ids[i]``, left-padded ``[b, P]``) is the prompt of the next ``repeats[i]``
    completion rows (``completion_ids`` ``[n, T]``, ``n = repeats.sum()``). The prompts run once with a
    key/value cache; the cache and the last prompt hidden state are repeated ``repeats`` times
    (differentiably: backward sums the copies' gradients) and the completions run on top. The result equals
    ``sequence_logprobs`` on the concatenated rows up to float rounding; with ``G`` completions per prompt the
    prompt's share of the work drops ``G``-fold. Needs a model for which ``model.kv.cache_unsupported_reason``
    is None and no gradient checkpointing (a recomputed layer would append to the cache twice).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use 1.0 for greedy rollouts), got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    n, completion_len = completion_ids.shape
    if int(repeats.sum()) != n or len(repeats) != len(prompt_ids):
        raise ValueError(f"repeats must give one count per prompt summing to the {n} completion rows, "
                         f"got {repeats.tolist()}.")
    positions = position_ids_from_mask(prompt_mask)  # [b, P]
    cache = DynamicCache(config=model.config)
    decoder = model.base_model
    prompt_hidden = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                            use_cache=True, **with_cache(decoder, cache)).last_hidden_state  # [b, P, H]
    first = prompt_hidden[:, -1:].repeat_interleave(repeats, 0)  # [n, 1, H] predicts completion token 0
    if completion_len == 1:
        hidden = first
    else:
        repeat_rows(cache, repeats)
        attention = torch.cat([prompt_mask.repeat_interleave(repeats, 0), completion_mask[:, :-1]], dim=1)
        steps = torch.arange(1, completion_len, device=positions.device)
        rest = decoder(
            input_ids=completion_ids[:, :-1], attention_mask=attention,
            position_ids=positions[:, -1:].repeat_interleave(repeats, 0) + steps,
            use_cache=True, **with_cache(decoder, cache),
        ).last_hidden_state  # [n, T-1, H] predicts completion tokens 1..T-1
        hidden = torch.cat([first, rest], dim=1)  # [n, T, H]
    return _score(model, hidden, completion_ids, completion_mask == 0, temperature, chunk_size, with_entropy)
