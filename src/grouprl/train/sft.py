"""Supervised warm-start: teacher-forced cross-entropy on the completion tokens of ``prompt + answer + EOS``.

This is how a fresh model learns a task's answer format before RL improves its accuracy. Prompts are encoded
as plain text without BOS, exactly as the rollout encodes them, and only the answer and the EOS after it are
in the loss. A pure training function: no file I/O, no global RNG state (batches come from a local generator;
model initialisation is the caller's business).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions outside the loss (prompt and padding)


def encode_rows(tokenizer, rows: Sequence[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """Per row, ``(input_ids, labels)`` of ``prompt + answer + EOS``; labels are ``IGNORE`` on the prompt.

    A row with ``turns`` instead of ``answer`` is a multi-turn episode: ``turns`` is a list of ``(text,
    model)`` pairs after the prompt; a model turn is followed by EOS and is in the loss (EOS included), the
    other turns (the environment's replies, as they are rendered into the episode) are not."""
    encoded = []
    for row in rows:
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        labels = [IGNORE] * len(ids)
        turns = row["turns"] if "turns" in row else [(row["answer"], True)]
        for text, model in turns:
            part = tokenizer(text, add_special_tokens=False)["input_ids"]
            if model:
                part = part + [tokenizer.eos_token_id]
            ids += part
            labels += part if model else [IGNORE] * len(part)
        encoded.append((ids, labels))
    return encoded


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples to ``input_ids``, ``attention_mask`` and ``labels``, each ``[b, L]``.

    Right padding keeps position ids ``0 .. len-1`` for real tokens, the same as a left-padded prompt gets in
    ``generate`` (which derives positions from the attention mask).
    """
    width = max(len(ids) for ids, _ in examples)
    host = {"device": "cpu"}  # grouprl sft builds the small embedded default on the CPU
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long, **host)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long, **host)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long, **host)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids, **host)
        labels[i, : len(lab)] = torch.tensor(lab, **host)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions.

    ``logits`` is ``[b, L, V]`` and ``labels`` ``[b, L]``; position ``t`` predicts ``labels[:, t + 1]``.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless row-index batches: successive random permutations of ``range(n)``, cut into batches."""
    stream: list[int] = []
    while True:
        while len(stream) < batch_size:
            stream += torch.randperm(n, generator=generator, device="cpu").tolist()
        yield stream[:batch_size]
        stream = stream[batch_size:]


def sft(
    model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup: int = 50,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
) -> list[float]:
    """Fine-tune ``model`` in place on ``rows`` (``prompt``, and ``answer`` or ``turns``: ``encode_rows``)
    for ``steps`` AdamW steps.

    Args:
        steps: optimiser steps; the learning rate warms up over ``warmup`` steps, then decays to 0 by a
            cosine.
        batch_size: rows per step, drawn without replacement within each pass over ``rows``.
        lr: peak learning rate.
        seed: seeds the batch order (a local ``torch.Generator``).
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: gradients are clipped to this global norm.

    Returns:
        The loss of every step (mean cross-entropy per completion token, EOS included).
    """
    examples = encode_rows(tokenizer, rows)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup=warmup, total=steps)
    )
    model.train()
    losses = []
    for _, indices in zip(range(steps), _batches(len(examples), batch_size, generator)):
        batch = collate([examples[i] for i in indices], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = completion_loss(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses
