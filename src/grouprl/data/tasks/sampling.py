"""What every procedural task shares: a seed-independent train/eval split and distinct rows by rejection."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from grouprl.errors import ConfigError


def prompt_key(prompt: str | list[dict]) -> str:
    """What identifies a problem: a text prompt itself, or the user messages of a chat prompt (so the system
    prompt, which states only the answer format, moves no problem between the splits)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt if m["role"] == "user")


def split_of(prompt: str | list[dict], eval_fraction: float) -> str:
    """``"eval"`` or ``"train"`` from a stable hash of the problem (``prompt_key``): the same for every seed,
    so the two splits never share a problem."""
    digest = hashlib.blake2b(prompt_key(prompt).encode(), digest_size=8).digest()
    return "eval" if int.from_bytes(digest, "big") < eval_fraction * 2**64 else "train"


def distinct_rows(draw: Callable[[random.Random], dict[str, Any] | None], *, task: str, split: str, n: int,
                  seed: int, eval_fraction: float, tries_per_row: int = 50) -> list[dict[str, Any]]:
    """``n`` distinct rows of ``split`` from ``draw`` (which may return None for a rejected draw)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}: must be 'train' or 'eval'.")
    rng = random.Random(f"{task}/{split}/{seed}")  # str seeds hash with sha512: stable across runs
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(tries_per_row * n + 1000):  # the bound only stops a hopeless request
        if len(rows) == n:
            break
        row = draw(rng)
        if row is None:
            continue
        key = prompt_key(row["prompt"])
        if key not in seen and split_of(key, eval_fraction) == split:
            seen.add(key)
            rows.append(row)
    if len(rows) < n:
        raise ConfigError(f"found only {len(rows)} distinct {split!r} prompts of the {n} asked for: "
                          f"the {task} task's space is too small for that; "
                          "ask for fewer rows or make the task larger.")
    return rows
