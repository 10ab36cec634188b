"""Base accuracy of a model on the chat tasks, level by level: where does it have signal to learn from?

    .venv/bin/python benchmarks/task_levels.py --model DIR [--tasks word_problems:1-6,chat_arithmetic:1-6]
        [--num-eval 64] [--max-new-tokens 256] [--out DIR] [key=value ...]

A task may carry more knobs: ``word_problems+answer_format=last_number:1-3``.

Each (task, difficulty) is one ``grouprl eval`` on the task's held-out split: greedy decoding, the task's own
verifier. Prints one markdown row per level: held-out prompts, greedy pass@1 and its standard error
(``sqrt(p (1 - p) / n)``), the share of completions that stated an answer in the asked-for form (chat
tasks with a numeric verifier), the mean completion length in tokens, the share cut off at the budget, and
the wall time. The figures in docs/tasks.md come from this.
"""

import argparse
import json
import math
import time
from pathlib import Path

from grouprl.cli.main import main as grouprl


def levels(spec: str) -> list[tuple[str, dict, int]]:
    """``"word_problems+answer_format=last_number:1-2,chat_countdown:2"`` →
    ``[("word_problems", {"answer_format": "last_number"}, 1), (…, 2), ("chat_countdown", {}, 2)]``."""
    out = []
    for part in spec.split(","):
        head, _, span = part.partition(":")
        task, *pairs = head.split("+")
        knobs = dict(pair.split("=", 1) for pair in pairs)
        first, _, last = span.partition("-")
        out += [(task, knobs, level) for level in range(int(first), int(last or first) + 1)]
    return out


def measure(model: str, task: str, knobs: dict, level: int, args, out: Path) -> dict:
    run_dir = out / "-".join([task, *knobs.values(), str(level)])
    t0 = time.time()
    mapping = ", ".join(f"{k}: {v}" for k, v in {**knobs, "difficulty": level}.items())
    code = grouprl(["eval", "--model", model, f"data.task={task}", f"data.task_kwargs={{{mapping}}}",
                    "data.num_train=8", f"data.num_eval={args.num_eval}", "eval.num_samples=0",
                    f"rollout.max_new_tokens={args.max_new_tokens}", f"output.run_dir={run_dir}",
                    "output.progress=false", *args.overrides])
    assert code == 0, f"{task} level {level} failed"
    row = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    return {**row, "seconds": time.time() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a save_pretrained directory")
    parser.add_argument("--tasks", default="word_problems:1-6,chat_arithmetic:1-6,chat_countdown:1-3")
    parser.add_argument("--num-eval", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", default="runs/task_levels")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print("| task | knobs | difficulty | n | pass@1 | s.e. | answered | mean length (tokens) | cut off | "
          "wall time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, knobs, level in levels(args.tasks):
        r = measure(args.model, task, knobs, level, args, Path(args.out))
        n, p = int(r["eval/num_prompts"]), r["eval/pass@1"]
        answered = r.get("eval/reward_log/answered")
        shown = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "-"
        print(f"| {task} | {shown} | {level} | {n} | {p:.3f} | {math.sqrt(p * (1 - p) / n):.3f} | "
              f"{'-' if answered is None else f'{answered:.2f}'} | {r['eval/len_mean']:.0f} | "
              f"{r['eval/truncated_frac']:.2f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
