"""Small held-out evaluators built on ``model.generate``: greedy accuracy, sampled pass@k and majority vote.

A completion counts as correct when the task's reward function gives it 1.0, so evaluation and RL training use
the same verifier. Prompts are encoded as plain text (no BOS), left-padded, exactly as the rollout sees them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from grouprl.rewards.arithmetic import correct_answer

RewardFn = Callable[..., list[float | None]]


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[list[list[str]], list[list[bool]]]:
    """Generate ``num_samples`` completions per prompt; ``temperature == 0`` is greedy.

    Returns ``(texts, finished)``, both ``[len(prompts)][num_samples]``: the decoded completion without
    special tokens, and whether it ended with EOS (False: truncated at ``max_new_tokens``). Sampling is seeded
    from ``seed`` inside a forked RNG, so the caller's global torch RNG state is left untouched.
    """
    was_training = model.training
    model.eval()
    texts: list[list[str]] = []
    finished: list[list[bool]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_k=None,
                top_p=None,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]  # [b * num_samples, <= max_new_tokens]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            ended = (new_tokens == tokenizer.eos_token_id).any(dim=1).tolist()
            for i in range(0, len(decoded), num_samples):
                texts.append(decoded[i : i + num_samples])
                finished.append(ended[i : i + num_samples])
    model.train(was_training)
    return texts, finished


def score_samples(samples: list[list[str]], rows: Sequence[dict[str, Any]],
                  reward_fn: RewardFn) -> list[list[bool]]:
    """``[len(rows)][k]``: whether each sample scores 1.0 under ``reward_fn`` with its row's columns."""
    out = []
    for row, row_samples in zip(rows, samples, strict=True):
        columns = {key: [value] * len(row_samples) for key, value in row.items() if key != "prompt"}
        rewards = reward_fn([row["prompt"]] * len(row_samples), row_samples, **columns)
        out.append([r == 1.0 for r in rewards])
    return out


def greedy_accuracy(
    model, tokenizer, rows: Sequence[dict[str, Any]], batch_size: int = 64, *,
    reward_fn: RewardFn = correct_answer,
) -> float:
    """Fraction of ``rows`` whose greedy completion is correct."""
    texts, _ = generate_completions(model, tokenizer, [r["prompt"] for r in rows], batch_size=batch_size)
    return sum(c[0] for c in score_samples(texts, rows, reward_fn)) / len(rows)


def sampled_pass_at_k(
    model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    k: int,
    temperature: float = 1.0,
    *,
    seed: int = 0,
    batch_size: int = 64,
    reward_fn: RewardFn = correct_answer,
) -> float:
    """Fraction of ``rows`` with at least one correct completion among ``k`` samples at ``temperature``."""
    texts, _ = generate_completions(
        model, tokenizer, [r["prompt"] for r in rows], num_samples=k, temperature=temperature,
        batch_size=batch_size, seed=seed,
    )
    return sum(any(c) for c in score_samples(texts, rows, reward_fn)) / len(rows)


def majority_accuracy(samples: list[list[str]], rows: Sequence[dict[str, Any]],
                      reward_fn: RewardFn = correct_answer) -> float:
    """Fraction of ``rows`` whose most frequent sample (stripped; ties go to the first seen) is correct.

    >>> majority_accuracy([["4", "5", "4"], ["7", "6"]],
    ...                   [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": "6"}])
    0.5
    """
    votes = [[Counter(s.strip() for s in row_samples).most_common(1)[0][0]] for row_samples in samples]
    return sum(c[0] for c in score_samples(votes, rows, reward_fn)) / len(rows)
