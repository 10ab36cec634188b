"""completions.jsonl: the first completions of each step, with their rewards, advantage and what the reward
functions logged for them."""

from __future__ import annotations

from pathlib import Path

from grouprl.logging.sinks import JsonlSink
from grouprl.types import Scored


def write_completions(path: Path, step: int, batch: Scored, limit: int, G: int) -> None:
    """Append the first ``limit`` completions of ``batch`` (``G`` per prompt) to ``path``; nothing when 0."""
    n = min(limit, len(batch.completions))
    if n == 0:
        return
    sink = JsonlSink(path)
    report = batch.report
    for i in range(n):
        failed = [name for name, mask in report.failed.items() if mask[i]]
        row = {"step": step, "prompt": batch.rows[i // G]["prompt"], "completion": batch.completions[i],
               "reward": batch.rewards[i].item(), "advantage": float(batch.advantages[i])}
        row.update({f"reward/{k}": None if k in failed else v[i].item() for k, v in batch.parts.items()})
        # the functions whose value here is the fallback (written as null above)
        row["reward_errors"] = failed
        row.update({f"extra/{column}": values[i] for column, values in report.extra.items()})
        sink.write(row)
