"""Checkpoints: HF-format model + tokenizer, plus the trainer state, written atomically.

``checkpoints/step-N/`` holds what ``save_pretrained`` writes (``model.safetensors`` and ``config.json``, or
with LoRA ``adapter_model.safetensors`` and ``adapter_config.json``; the tokenizer's files) and the trainer
state as ``trainer_state.json`` + ``trainer_state.safetensors`` (``train/state.py``: no pickle).

A checkpoint is written to ``checkpoints/.tmp-step-N``, flushed, then renamed to ``checkpoints/step-N``; an
old one is renamed to ``.trash-step-N`` before it is deleted. Renames are atomic, so a directory named
``step-N`` is always complete, whenever the process dies. Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from grouprl.logging.card import model_card
from grouprl.train.setup import Setup
from grouprl.train.state import rng_state, write_trainer_state


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, trainer_state: dict, keep_last: int,
                    card: str | None = None) -> Path:
    """Write checkpoint ``step`` (with ``card`` as its ``README.md``) atomically; keep the newest
    ``keep_last``."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".t*-step-*"):  # leftovers of a process that died mid-write or mid-delete
        shutil.rmtree(stale, ignore_errors=True)
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_trainer_state(tmp, trainer_state)
    if card is not None:
        (tmp / "README.md").write_text(card)
    _fsync_tree(tmp)
    if final.exists():
        _delete(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        _delete(old)
    return final


def _delete(checkpoint: Path) -> None:
    """Rename out of the ``step-N`` namespace first, so a kill mid-delete never leaves a partial
    ``step-N``."""
    trash = checkpoint.with_name(f".trash-{checkpoint.name}")
    os.replace(checkpoint, trash)
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def trainer_state(s: Setup, step: int) -> dict:
    """Collective: every rank's RNG state is gathered (rank r restores its own on resume), and under FSDP the
    optimizer state."""
    return {"step": step, "optimizer": s.weights.optimizer_state(s.optimizer),
            "scheduler": s.scheduler.state_dict(), "data": s.source.state_dict(),
            "rng": s.dist.gather_objects(rng_state()), "entropy_alpha": s.entropy_alpha}


def checkpoint(s: Setup, step: int) -> None:
    """Every rank calls it (the state gathers are collective); rank 0 alone writes."""
    state = trainer_state(s, step)
    s.weights.gather()
    if s.dist.is_main:
        save_checkpoint(s.run_dir, step, s.weights, s.tokenizer, state, s.cfg.output.keep_last,
                        card=model_card(s.cfg, step, s.last_eval))
