"""Multi-turn learning benchmark: ``grouprl train environment=calculator`` on its embedded player
(``src/grouprl/assets/default-calculator``), held-out success of whole episodes before and after.

    .venv/bin/python benchmarks/multiturn.py [--out DIR] [key=value ...]

Success is the verifier (``correct_answer`` on the episode's last message) accepting the episode: greedy
(``eval/pass@1``) and sampled at T = 1 (``eval/mean@8``), on the environment's 256 held-out problems. Prints a
markdown table (the figures in benchmarks/RESULTS.md come from it), with the training time summed from
``time/step`` and the command's wall time.
"""

import argparse
import json
import time
from pathlib import Path

from grouprl.cli.main import main as grouprl


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/multiturn")
    parser.add_argument("overrides", nargs="*", help="extra key=value settings for grouprl train")
    args = parser.parse_args()
    run_dir = Path(args.out)
    command = ["train", "environment=calculator", f"output.run_dir={run_dir}", "output.progress=false",
               "train.threads=2", *args.overrides]
    t0 = time.time()
    code = grouprl(command)
    wall = time.time() - t0
    assert code == 0, "the run failed"
    evals = _jsonl(run_dir / "eval.jsonl")
    steps = _jsonl(run_dir / "metrics.jsonl")
    before, after = evals[0], evals[-1]
    train_s = sum(row.get("time/step", 0.0) for row in steps)
    print("grouprl", " ".join(command))
    print("| | greedy success (pass@1) | sampled success (mean@8) | pass@8 | tool calls per episode |")
    print("|---|---|---|---|---|")
    for name, row in (("before", before), (f"after {after['step']} steps", after)):
        print(f"| {name} | {row['eval/pass@1']:.3f} | {row['eval/mean@8']:.3f} | {row['eval/pass@8']:.3f} | "
              f"{row['eval/tool_calls_mean']:.2f} |")
    print(f"gain: greedy {100 * (after['eval/pass@1'] - before['eval/pass@1']):+.1f} points, sampled "
          f"{100 * (after['eval/mean@8'] - before['eval/mean@8']):+.1f} points; training {train_s:.0f} s "
          f"(sum of time/step), whole command {wall:.0f} s")
    print("per step: " + ", ".join(f"{row['step']}:{row['accuracy']:.2f}"
                                   for row in steps))


if __name__ == "__main__":
    main()
