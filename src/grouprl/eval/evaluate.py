"""Held-out evaluation through the same rollout backend and verifier as training.

* ``pass@1`` — greedy decoding, the fraction of prompts whose completion the verifier accepts.
* ``pass@k`` — k samples at the eval temperature; a prompt counts if any sample is accepted.
* ``mean@k`` — the mean acceptance over those k samples (an estimate of sampled pass@1).

A completion is *accepted* when the first reward function (the verifier) gives it at least 1.0.
"""

from __future__ import annotations

import torch

from grouprl.train.step import encode_prompts
from grouprl.types import SamplingParams


def _accepted(backend, tokenizer, rewards, rows, prompt_texts, n, sampling) -> torch.Tensor:
    """``[len(rows), n]`` bool: the verifier accepts the sample."""
    rollout = backend.generate(encode_prompts(tokenizer, prompt_texts), n, sampling)
    ids = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    columns = {k: [row[k] for row in rows for _ in range(n)] for k in rows[0] if k != "prompt"}
    prompts = [p for p in prompt_texts for _ in range(n)]
    first = next(iter(rewards.score(prompts, completions, None, columns, first_only=True).parts.values()))
    return (torch.nan_to_num(first, nan=0.0) >= 1.0).reshape(len(rows), n)


@torch.no_grad()
def evaluate(backend, tokenizer, rewards, rows: list[dict], prompt_texts: list[str], *, max_new_tokens: int,
             k: int = 0, temperature: float = 1.0, batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    if not rows:
        return {}
    greedy, sampled = [], []
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        greedy.append(_accepted(backend, tokenizer, rewards, rows[part], prompt_texts[part], 1,
                                SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)))
        if k > 0:
            sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + start)
            sampled.append(_accepted(backend, tokenizer, rewards, rows[part], prompt_texts[part], k, sampling))
    out = {"eval/pass@1": torch.cat(greedy).float().mean().item(), "eval/num_prompts": float(len(rows))}
    if k > 0:
        samples = torch.cat(sampled).float()
        out[f"eval/pass@{k}"] = samples.max(dim=1).values.mean().item()
        out[f"eval/mean@{k}"] = samples.mean().item()
    return out
