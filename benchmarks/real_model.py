"""grouprl and TRL's GRPOTrainer on a real model, side by side: the same model directory, task prompts,
verifier and hyperparameters; held-out greedy accuracy against training wall time for both, one plot.

    .venv/bin/python benchmarks/real_model.py --model DIR [--task word_problems] [--knobs difficulty=2]
        [--steps 20] [--prompts 8] [--generations 8] [--max-new-tokens 128] [--lr 1e-5] [--beta 0.0]
        [--save-every 5] [--num-eval 256] [--sides grouprl,trl] [--out runs/real_model] [key=value ...]

Each side trains in its own process (its own peak RSS, nothing shared) and saves a checkpoint every
``--save-every`` steps; the wall time of a checkpoint is the sum of the step times before it (grouprl:
``time/step`` in metrics.jsonl; TRL: a callback around each optimizer step), so saving and evaluation are not
counted. Then the base model and every checkpoint of both sides are scored by the same ``grouprl eval``
(greedy, the task's verifier, the same held-out prompts). grouprl runs the ``trl_defaults`` preset, TRL its
own defaults, with the batch, learning rate, β, temperature and token budget set alike. ``key=value``
arguments go to ``grouprl train`` only (a grouprl lever, e.g. ``model.gradient_checkpointing=true``).

Writes ``out/results.json`` and ``out/accuracy.png`` and prints a markdown table with the GEMM rate measured
in this process. Needs ``pip install 'grouprl[bench]'`` for the TRL side.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def knobs_of(text: str) -> dict:
    """``"difficulty=2,answer_format=boxed"`` → ``{"difficulty": 2, "answer_format": "boxed"}``."""
    out = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def dataset_rows(task, n: int, seed: int) -> list[dict]:
    """The task's training rows for a TRL ``Dataset``: Arrow needs one type per column, so the prompt and the
    scalar columns the verifier reads."""
    return [{k: v for k, v in row.items() if k == "prompt" or isinstance(v, (str, int, float, bool))}
            for row in task.generate("train", n, seed)]


def grouprl_side(args, out: Path) -> dict:
    run_dir = out / "grouprl"
    mapping = ", ".join(f"{k}: {v}" for k, v in knobs_of(args.knobs).items())
    cmd = [sys.executable, "-m", "grouprl", "train", "algorithm=trl_defaults",
           f"model.name_or_path={args.model}",
           f"data.task={args.task}", f"data.task_kwargs={{{mapping}}}", f"data.num_train={args.num_train}",
           "data.num_eval=0", f"train.steps={args.steps}", f"train.prompts_per_step={args.prompts}",
           f"rollout.num_generations={args.generations}", f"rollout.max_new_tokens={args.max_new_tokens}",
           f"train.lr={args.lr}", f"algo.beta={args.beta}", "train.warmup_steps=0",
           "train.lr_scheduler=constant", f"output.save_every={args.save_every}", "output.keep_last=1000",
           "output.plots=false", "output.progress=false", f"output.run_dir={run_dir}",
           f"data.seed={args.seed}",
           *args.overrides]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    wall, elapsed = {}, 0.0
    for row in rows:
        elapsed += row["time/step"]
        wall[row["step"]] = elapsed
    phases = sorted(k for k in rows[0] if k.startswith("time/"))
    return {"checkpoints": {step: str(run_dir / "checkpoints" / f"step-{step}") for step in wall
                            if (run_dir / "checkpoints" / f"step-{step}").is_dir()},
            "wall": wall, "total_s": time.time() - t0,
            "phases": {k: sum(r[k] for r in rows[1:]) / max(len(rows) - 1, 1) for k in phases},
            "peak_rss_mib": max(r.get("memory/peak_rss_mib", 0) for r in rows)}


def trl_worker(args, out: Path) -> None:
    """The TRL side, in its own process: writes out/trl/times.json."""
    import resource

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grouprl.data.tasks import get_task

    torch.manual_seed(args.seed)
    task = get_task(args.task, **knobs_of(args.knobs))
    rows = dataset_rows(task, args.num_train, args.seed)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.wall, self.elapsed, self.t0 = {}, 0.0, None

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.elapsed += time.perf_counter() - self.t0
            self.wall[state.global_step] = self.elapsed

    config = GRPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, beta=args.beta,
        temperature=1.0, top_p=1.0, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        max_steps=args.steps, save_strategy="steps", save_steps=args.save_every, save_only_model=True,
        logging_steps=1, report_to=[], use_cpu=True, bf16=False, seed=args.seed, dataloader_num_workers=0,
    )
    timer = StepTimes()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
                          reward_funcs=list(task.reward_fns), args=config,
                          train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(args.model, padding_side="left"),
                          callbacks=[timer])
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "trl" / "times.json").write_text(json.dumps({"wall": timer.wall, "peak_rss_mib": peak,
                                                        "log": trainer.state.log_history}))


def trl_side(args, out: Path) -> dict:
    t0 = time.time()
    (out / "trl").mkdir(parents=True, exist_ok=True)
    (out / "trl" / "args.json").write_text(json.dumps(vars(args)))
    subprocess.run([sys.executable, __file__, "--trl-worker", str(out / "trl" / "args.json")], check=True)
    times = json.loads((out / "trl" / "times.json").read_text())
    wall = {int(k): v for k, v in times["wall"].items()}
    return {"checkpoints": {step: str(out / "trl" / f"checkpoint-{step}") for step in wall
                            if (out / "trl" / f"checkpoint-{step}").is_dir()},
            "wall": wall, "total_s": time.time() - t0, "peak_rss_mib": times["peak_rss_mib"]}


def accuracy(args, model: str, out: Path) -> tuple[float, float]:
    """Held-out greedy pass@1 of ``model`` and its standard error, by ``grouprl eval``."""
    run_dir = out / "eval" / Path(model).parent.name / Path(model).name
    mapping = ", ".join(f"{k}: {v}" for k, v in knobs_of(args.knobs).items())
    subprocess.run([sys.executable, "-m", "grouprl", "eval", "--model", model, f"data.task={args.task}",
                    f"data.task_kwargs={{{mapping}}}", "data.num_train=8", f"data.num_eval={args.num_eval}",
                    "eval.num_samples=0", f"rollout.max_new_tokens={args.max_new_tokens}",
                    f"output.run_dir={run_dir}", "output.progress=false", f"data.seed={args.seed}"],
                   check=True)
    p = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])["eval/pass@1"]
    return p, math.sqrt(p * (1 - p) / args.num_eval)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, r in results["sides"].items():
        xs = [0.0] + [r["wall"][s] / 60 for s in sorted(r["accuracy"])]
        ys = [results["base"][0]] + [r["accuracy"][s][0] for s in sorted(r["accuracy"])]
        es = [results["base"][1]] + [r["accuracy"][s][1] for s in sorted(r["accuracy"])]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=side)
    ax.set_xlabel("training wall time (min, 2 CPU cores)")
    ax.set_ylabel(f"held-out greedy pass@1 (n={results['num_eval']})")
    ax.set_title(f"{results['task']} {results['knobs']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a save_pretrained directory (grouprl models fetch)")
    parser.add_argument("--task", default="word_problems")
    parser.add_argument("--knobs", default="difficulty=2", help="the task's knobs, k=v,k=v")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-eval", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="grouprl,trl")
    parser.add_argument("--out", default="runs/real_model")
    parser.add_argument("overrides", nargs="*", help="key=value for grouprl train")
    if sys.argv[1:2] == ["--trl-worker"]:  # the TRL side's own process
        args = argparse.Namespace(**json.loads(Path(sys.argv[2]).read_text()))
        trl_worker(args, Path(args.out))
        return
    args = parser.parse_args()
    out = Path(args.out)
    from grouprl.bench import gemm_gflops

    out.mkdir(parents=True, exist_ok=True)
    gemm_before = gemm_gflops()
    sides = {}
    for side in args.sides.split(","):
        sides[side] = {"grouprl": grouprl_side, "trl": trl_side}[side](args, out)
    gemm_after = gemm_gflops()
    # written at once: the evaluations below take long, and a stopped run keeps its timings
    (out / "timings.json").write_text(json.dumps({"gemm_gflops": [gemm_before, gemm_after], "sides": sides},
                                                 indent=1, default=str))
    print(f"GEMM {gemm_before:.0f} / {gemm_after:.0f} GFLOP/s (before / after the training runs)", flush=True)
    base = accuracy(args, args.model, out)
    for r in sides.values():
        r["accuracy"] = {step: accuracy(args, path, out) for step, path in sorted(r["checkpoints"].items())}
    results = {"task": args.task, "knobs": args.knobs, "num_eval": args.num_eval, "base": base,
               "gemm_gflops": [gemm_before, gemm_after], "args": {k: v for k, v in vars(args).items()},
               "sides": sides}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, out / "accuracy.png")
    print(f"GEMM {gemm_before:.0f} / {gemm_after:.0f} GFLOP/s (before / after); base pass@1 {base[0]:.3f} "
          f"± {base[1]:.3f}")
    print("| side | step | wall (s) | pass@1 | s.e. |")
    print("|---|---|---|---|---|")
    for side, r in sides.items():
        for step, (p, se) in sorted(r["accuracy"].items()):
            print(f"| {side} | {step} | {r['wall'][step]:.0f} | {p:.3f} | {se:.3f} |")
        print(f"| {side} | peak RSS {r['peak_rss_mib']:.0f} MiB | s/step "
              f"{r['wall'][max(r['wall'])] / max(r['wall']):.1f} | | |")


if __name__ == "__main__":
    main()
