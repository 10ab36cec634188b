"""LoRA benchmark: (1) LoRA training on the embedded default learns — held-out greedy pass@1 before and after;
(2) peak RSS of a LoRA run vs a full fine-tune of the same model, same batch (each run in its own process,
with ``MALLOC_MMAP_THRESHOLD_=1048576`` so that freed large blocks leave RSS).

    .venv/bin/python benchmarks/lora.py learn [--steps 200] [overrides ...]
    .venv/bin/python benchmarks/lora.py memory [--model default|small] [--steps 3] [overrides ...]

``small`` is ``grouprl bench``'s random 25 M-parameter Llama (made in a temporary directory). Prints markdown
rows (benchmarks/RESULTS.md, "Scale-out").
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LORA = ["model.lora.r=16", "model.lora.alpha=32",
        "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"]


def train(run_dir: Path, args: list[str], env: dict | None = None) -> list[dict]:
    cmd = [sys.executable, "-m", "grouprl", "train", f"output.run_dir={run_dir}", "output.progress=false",
           *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def learn(args, out: Path) -> None:
    t0 = time.time()
    train(out / "lora-learn", [f"train.steps={args.steps}", "eval.num_samples=0", "train.lr=2e-3", *LORA,
                               *args.overrides])
    evals = [json.loads(line) for line in (out / "lora-learn" / "eval.jsonl").read_text().splitlines()]
    before, after = evals[0]["eval/pass@1"], evals[-1]["eval/pass@1"]
    print("| run | pass@1 before | pass@1 after | gain (points) | wall time (s) |\n|---|---|---|---|---|")
    print(f"| LoRA r=16 (all linear layers), lr 2e-3, {args.steps} steps | {before:.3f} | {after:.3f} | "
          f"{100 * (after - before):+.1f} | {time.time() - t0:.0f} |")


def memory(args, out: Path) -> None:
    model = "default"
    if args.model != "default":
        from grouprl.bench import make_model_dir

        model = str(make_model_dir(args.model, out))
    common = [f"model.name_or_path={model}", f"train.steps={args.steps}", "data.num_eval=0", *args.overrides]
    print("| model | run | trainable params | peak RSS (MiB) |\n|---|---|---|---|")
    for name, extra in (("full fine-tune", []), ("LoRA r=16", LORA)):
        # Blocks of 1 MiB and more straight from mmap: with glibc's sliding threshold, freed blocks stay in
        # the heap and RSS counts memory that is no longer live, which blurs the comparison.
        rows = train(out / f"mem-{args.model}-{'lora' if extra else 'full'}", [*common, *extra],
                     env={"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
        trainable = _trainable(model, extra)
        peak = max(r['memory/peak_rss_mib'] for r in rows)
        print(f"| {args.model} | {name} | {trainable:,} | {peak:,.0f} |", flush=True)


def _trainable(model: str, extra: list[str]) -> int:
    from grouprl.config import load_config
    from grouprl.train.setup import build

    with tempfile.TemporaryDirectory() as tmp:
        s = build(load_config(None, [f"model.name_or_path={model}", "data.num_eval=0", *extra]), Path(tmp))
        s.rewards.close()
        return sum(p.numel() for p in s.policy.parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["learn", "memory"])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--model", default="default", help="memory: default | small")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    args.steps = args.steps or (200 if args.what == "learn" else 3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        (learn if args.what == "learn" else memory)(args, out)


if __name__ == "__main__":
    main()
