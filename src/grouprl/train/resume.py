"""Resuming a run exactly, and stopping one cleanly.

A resumed run restores the policy weights (or LoRA adapter), optimizer, scheduler, every RNG (each rank its
own) and the data cursor from the newest complete checkpoint, and drops JSONL rows written after it (a step that was not checkpointed is
re-run, identically). The reference policy is reloaded from its original source, never from a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import torch

from grouprl.errors import ResumeError
from grouprl.train.checkpoint import list_checkpoints, set_rng_state

RUN_FILES = ("metrics.jsonl", "completions.jsonl", "eval.jsonl")


def find_resume_point(run_dir: Path, resume: str | None) -> Path | None:
    """``None``: start fresh. ``"auto"``: the newest complete checkpoint of ``run_dir``, if any. A path: that
    checkpoint directory."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.pt").is_file():
        raise ResumeError(f"--resume {path}: not a checkpoint directory (no trainer_state.pt); use --resume auto "
                          "or a checkpoints/step-N directory")
    return path


def restore(setup, checkpoint: Path) -> int:
    """Load everything a step needs from ``checkpoint`` into ``setup``; returns the step it ends."""
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    setup.weights.load(checkpoint)
    setup.weights.load_optimizer(setup.optimizer, state["optimizer"])
    setup.scheduler.load_state_dict(state["scheduler"])
    setup.source.load_state_dict(state["data"])
    per_rank = state.get("rng_per_rank", [])
    d = setup.dist
    set_rng_state(per_rank[d.rank] if len(per_rank) == d.world else state["rng"])  # another world size: rank 0's
    step = int(state["step"])
    if d.is_main:
        truncate_after(setup.run_dir, step)
    d.barrier()  # the other ranks must not run ahead of rank 0's truncation into a fresh metrics row
    return step


def truncate_after(run_dir: Path, step: int) -> None:
    """Drop JSONL rows of steps after ``step`` (written after the last checkpoint, before a crash)."""
    for name in RUN_FILES:
        path = run_dir / name
        if not path.exists():
            continue
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)


def clear_run_files(run_dir: Path) -> None:
    for name in (*RUN_FILES, "report.md"):
        (run_dir / name).unlink(missing_ok=True)


class StopSignal:
    """SIGINT / SIGTERM: finish the current step, checkpoint, exit. A second signal exits at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
