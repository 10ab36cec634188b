"""Resuming a run exactly, and stopping one cleanly.

A resumed run restores the policy weights (or LoRA adapter), optimizer, scheduler, every RNG (each rank its
own) and the data cursor from the newest complete checkpoint that loads, and drops JSONL rows written after
it (a step that was not checkpointed is re-run, identically). The reference policy is reloaded from its
original source, never from a checkpoint.

A checkpoint is read whole and checked against the run (``train/state.py``, ``read`` of the weights) before
any of it is applied, so one that does not load (a truncated file, a missing one, other shapes, an old
pickle-based ``trainer_state.pt``) changes nothing: ``--resume auto`` says so in one line and tries the one
before it.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

from grouprl.errors import ResumeError
from grouprl.logging.sinks import say
from grouprl.train.checkpoint import list_checkpoints
from grouprl.train.state import JSON_FILE, PICKLE_FILE, read_trainer_state, set_rng_state

RUN_FILES = ("metrics.jsonl", "completions.jsonl", "eval.jsonl")


def resume_candidates(run_dir: Path, resume: str | None) -> list[Path]:
    """The checkpoints to try, newest first: none (``None``: start fresh), every complete one of ``run_dir``
    (``"auto"``), or the directory given, which must be a checkpoint."""
    if resume is None:
        return []
    if resume == "auto":
        return list_checkpoints(run_dir)[::-1]
    path = Path(resume)
    if not ((path / JSON_FILE).is_file() or (path / PICKLE_FILE).is_file()):
        raise ResumeError(f"--resume {path}: not a checkpoint directory (no {JSON_FILE}); "
                          "use --resume auto or a checkpoints/step-N directory")
    return [path]


def resume_from(setup, resume: str | None) -> tuple[Path, int] | None:
    """Restore the newest candidate checkpoint that loads; returns it and the step it ends, or ``None`` when
    there is none to try. Every rank reads and checks it; they skip one together if any rank cannot load
    it."""
    candidates = resume_candidates(setup.run_dir, resume)
    skipped: list[tuple[Path, str]] = []
    for checkpoint in candidates:
        try:
            loaded, reason = read_checkpoint(setup, checkpoint), None
        except ResumeError as err:
            loaded, reason = None, str(err)
        if setup.dist.any(reason is not None):
            skipped.append((checkpoint, reason or "another rank could not load it"))
            continue
        if setup.dist.is_main:
            for path, why in skipped:
                say(f"--resume {resume}: skipping {path.name}, which does not load: {why}")
        return checkpoint, apply_checkpoint(setup, *loaded)
    if resume != "auto" and skipped:
        raise ResumeError(skipped[0][1])
    if skipped:
        reasons = "; ".join(f"{path.name}: {why}" for path, why in skipped)
        raise ResumeError(f"--resume auto: no checkpoint of {setup.run_dir} loads ({reasons}); "
                          "start afresh in another output.run_dir")
    return None


def read_checkpoint(setup, checkpoint: Path) -> tuple[dict, dict]:
    """The policy's tensors and the trainer state of ``checkpoint``, checked against ``setup``; nothing in
    ``setup`` changes."""
    state = read_trainer_state(checkpoint, run_like(setup))
    return setup.weights.read(checkpoint), state


def run_like(setup) -> dict:
    """The shape this run's trainer state has (``read_trainer_state``'s ``like``): the data cursor, the
    scheduler, and the optimizer's param groups with ``(key, shape)`` for each parameter."""
    optimizer = setup.optimizer
    groups = [{**{k: v for k, v in group.items() if k != "params"}, "params": params}
              for group, params in zip(optimizer.param_groups, setup.weights.optimizer_params(optimizer))]
    return {"data": setup.source.state_dict(), "scheduler": setup.scheduler.state_dict(), "optimizer": groups}


def apply_checkpoint(setup, weights: dict, state: dict) -> int:
    """Load what ``read_checkpoint`` returned into ``setup``; returns the step it ends."""
    setup.weights.apply(weights)
    setup.weights.load_optimizer(setup.optimizer, state["optimizer"])
    setup.scheduler.load_state_dict(state["scheduler"])
    setup.source.load_state_dict(state["data"])
    if state.get("entropy_alpha") is not None and setup.entropy_alpha is not None:  # (i) entropy target
        setup.entropy_alpha = state["entropy_alpha"]
    d, per_rank = setup.dist, state["rng"]
    set_rng_state(per_rank[d.rank] if len(per_rank) == d.world
                  else per_rank[0])  # another world size: rank 0's
    step = state["step"]
    if d.is_main:
        truncate_after(setup.run_dir, step)
    d.barrier()  # the other ranks must not run ahead of rank 0's truncation into a fresh metrics row
    return step


def truncate_after(run_dir: Path, step: int) -> None:
    """Drop JSONL rows of steps after ``step`` (written after the last checkpoint, before a crash).

    A last line cut short by the crash (no newline, not JSON) is dropped too: it belongs to a step after the
    checkpoint, which is re-run. A broken line before the last one is not a crash's doing: a ``ResumeError``.
    """
    for name in RUN_FILES:
        path = run_dir / name
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        keep = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the crash's half-written row (a complete row ends with a newline)
                    continue
                raise ResumeError(f"{path} line {number}: not valid JSON, and not a row cut short by a "
                                  "crash; fix or delete that line, then --resume again") from None
            if row.get("step", 0) <= step:
                keep.append(line)
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
