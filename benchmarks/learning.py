"""Learning benchmark: each preset trains the embedded default on the same prompts, seed and budget; the
held-out greedy pass@1 before and after is recorded.

    .venv/bin/python benchmarks/learning.py [--steps 60] [--algorithms grpo,dr_grpo,...] [--out DIR]

Prints one markdown table row per algorithm (the figures in benchmarks/RESULTS.md come from this).
"""

import argparse
import json
import time
from pathlib import Path

from grouprl.cli.main import main as grouprl

SPEC = ["grpo", "dr_grpo", "dapo", "gspo", "gmpo", "gfpo", "lite_ppo"]


def run(algorithm: str, steps: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / algorithm
    t0 = time.time()
    code = grouprl(["train", f"algorithm={algorithm}", f"train.steps={steps}", f"output.run_dir={run_dir}",
                    "output.progress=false", "eval.num_samples=0", *extra])
    assert code == 0, f"{algorithm} failed"
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    return {"algorithm": algorithm, "before": evals[0]["eval/pass@1"], "after": evals[-1]["eval/pass@1"],
            "seconds": time.time() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--algorithms", default=",".join(SPEC))
    parser.add_argument("--out", default="runs/learning")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print("| algorithm | pass@1 before | pass@1 after | gain (points) | wall time (s) |")
    print("|---|---|---|---|---|")
    for algorithm in args.algorithms.split(","):
        r = run(algorithm, args.steps, Path(args.out), args.overrides)
        gain = 100 * (r['after'] - r['before'])
        print(f"| {algorithm} | {r['before']:.3f} | {r['after']:.3f} | {gain:+.1f} | {r['seconds']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
