"""Run the same training on 1 process and on N processes (torchrun, gloo) and print, per step, the largest
difference (relative for values above 1, absolute below) between their metrics.jsonl rows (time, memory and
throughput excluded, and the sampler-vs-trainer gap, itself a rounding difference).

    .venv/bin/python scripts/compare_world_sizes.py [--nproc 2] [overrides ...]

Both runs share every override; add train.threads=1 on a small machine. Exit status 1 if a run fails.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# the sampler-vs-trainer gap is itself a rounding difference: another batching gives another one
VOLATILE = ("time/", "memory/", "tokens_per_s", "rollout/logprob_diff", "rollout/kl_sampler")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        base = ["-m", "grouprl", "train", "output.progress=false", *args.overrides]
        runs = [subprocess.Popen([sys.executable, *base, f"output.run_dir={one}"], stderr=subprocess.DEVNULL),
                subprocess.Popen([torchrun, "--nproc_per_node", str(args.nproc), "--standalone", *base,
                                  f"output.run_dir={many}"], stderr=subprocess.DEVNULL)]
        if any(run.wait() for run in runs):
            print("a run failed; rerun it by hand to see why", file=sys.stderr)
            return 1
        rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (one, many)]
    print(f"| step | largest difference, 1 vs {args.nproc} processes (relative above 1, absolute below) "
          "| metric |\n|---|---|---|")
    for a, b in zip(*rows):
        diffs = [(abs(a[k] - b[k]) / max(abs(a[k]), 1.0), k) for k in a
                 if isinstance(a[k], float) and isinstance(b.get(k), float) and not k.startswith(VOLATILE)]
        worst = max(diffs, default=(0.0, "-"))
        print(f"| {a['step']} | {worst[0]:.1e} | {worst[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
