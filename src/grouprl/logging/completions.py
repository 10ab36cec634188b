"""completions.jsonl: the first completions of each step, with their rewards, advantage and what the reward
functions logged for them. A multi-turn episode's completion is its trajectory as chat messages (assistant,
``tool`` and user messages after the prompt), with its turns and tool calls."""

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
        row.update({f"episode/{k}": int(batch.episodes[k][i]) for k in ("turns", "tool_calls", "tool_errors")
                    if k in batch.episodes})
        # the functions whose value here is the fallback (written as null above)
        row["reward_errors"] = failed
        row.update({f"extra/{column}": values[i] for column, values in report.extra.items()})
        sink.write(row)


def render_completion(completion) -> str:
    """A completion as ``grouprl show`` prints it: a string as its repr; a trajectory one message a line, its
    role first (a tool result with the tool's name).

    >>> print(render_completion([{"role": "assistant", "content": "<tool_call>...</tool_call>"},
    ...                          {"role": "tool", "name": "add", "content": "42"},
    ...                          {"role": "assistant", "content": "42"}]))
    assistant: '<tool_call>...</tool_call>'
    tool add: '42'
    assistant: '42'
    """
    if not isinstance(completion, list):
        return repr(completion)
    lines = []
    for message in completion:
        if not isinstance(message, dict):
            lines.append(repr(message))
            continue
        role = str(message.get("role", "?"))
        if role == "tool" and message.get("name"):
            role = f"tool {message['name']}"
        lines.append(f"{role}: {message.get('content', '')!r}")
    return "\n".join(lines)
