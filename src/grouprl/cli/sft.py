"""``grouprl sft``: build a small model taught a built-in task by supervised fine-tuning.

With its defaults this is exactly how the embedded default checkpoint in ``src/grouprl/assets/default/`` is
made.

A fresh tiny Llama is taught 2-digit addition by supervised fine-tuning on *noisy demonstrations*: a share
``--distractor-rate`` of the answers are the "forgot the carry" answer (``37+48=`` → ``75``), the rest are
right. The model learns both procedures, always answers with digits then EOS, and its greedy answer is the
carry-less one wherever a column carries, so it is right on only part of the held-out prompts while one of
eight samples usually is. That is the situation RL with a verifier is for: the right procedure is already
in the model, and the reward teaches it which one to use (the same story as SFT on mixed-quality data
followed by RL, in miniature).

    grouprl sft --output src/grouprl/assets/default     # or: .venv/bin/python scripts/build_default.py

Deterministic on a given machine (fixed seeds, two threads). Writes the model and tokenizer
(``save_pretrained``, safetensors), ``metadata.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaForCausalLM

from grouprl.data.tasks import get_task
from grouprl.errors import UserError
from grouprl.eval.simple import generate_completions, majority_accuracy, score_samples
from grouprl.model.configs import tiny_llama_config
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.train.sft import sft

TASK = "arithmetic"
TASK_KNOBS = {"digits": 2, "operands": 2, "ops": ["+"]}  # 2-digit addition: answers "0" .. "198"
MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 344,
         "max_position_embeddings": 64}
TIE_EMBEDDINGS = False
MAX_NEW_TOKENS = 8  # answers have at most 3 digits + EOS; room to show a model that does not stop


ENV_DEFAULTS = {"steps": 1500, "distractor_rate": 0.6, "batch_size": 32}
"""What ``--environment`` changes in the defaults (episodes are longer, so fewer steps of smaller batches)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="directory for the model and tokenizer")
    parser.add_argument("--environment", default=None,
                        help="build a player of this environment instead (calculator: "
                             "src/grouprl/assets/default-calculator)")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (5000; 1500 with --environment)")
    parser.add_argument("--distractor-rate", type=float, default=None,
                        help="share of SFT answers replaced by the no-carry answer (0.7); with "
                             "--environment, share of demonstrations that call the confused tool (0.6)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak SFT learning rate (cosine decay to 0)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="linear warm-up steps of the SFT learning rate")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per step (64; 32 with --environment)")
    parser.add_argument("--n-train", type=int, default=5000, help="distinct training prompts for SFT")
    parser.add_argument("--n-eval", type=int, default=256, help="held-out prompts for the measurements")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt for pass@k and majority vote")
    parser.add_argument("--seed", type=int, default=0, help="seeds model init, SFT data and batch order")


def _fill_defaults(args: argparse.Namespace) -> None:
    """The arguments left unset take the defaults of the model being built."""
    single = {"steps": 5000, "distractor_rate": 0.7, "batch_size": 64}
    defaults = ENV_DEFAULTS if args.environment else single
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def measure(model, tokenizer, rows: list[dict], verifier, k: int, seed: int) -> dict[str, float]:
    """Greedy accuracy, and pass@k, mean@k, majority@k of ``k`` samples at temperature 1, on ``rows``."""
    prompts = [r["prompt"] for r in rows]
    greedy, greedy_done = generate_completions(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
    samples, sample_done = generate_completions(
        model, tokenizer, prompts, num_samples=k, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=seed
    )
    correct = score_samples(samples, rows, verifier)
    well_formed = [done and text.isdigit() for t, d in zip(greedy, greedy_done) for text, done in zip(t, d)]
    return {
        "greedy_accuracy": sum(c[0] for c in score_samples(greedy, rows, verifier)) / len(rows),
        f"pass@{k}": sum(any(c) for c in correct) / len(rows),
        f"mean@{k}": sum(map(sum, correct)) / (k * len(rows)),
        f"majority@{k}": majority_accuracy(samples, rows, verifier),
        "greedy_format_rate": sum(well_formed) / len(rows),
        "sampled_eos_rate": sum(map(sum, sample_done)) / (k * len(rows)),
    }


def write_readme(path: Path, meta: dict) -> None:
    """A human summary of ``metadata.json``: what the checkpoint is, how it was made, what it scores."""
    m, k = meta["measured"], meta["eval"]["k"]
    path.write_text(
        f"""# The embedded default checkpoint

A {meta["model"]["parameters"] / 1e6:.2f}M-parameter Llama-architecture causal LM with a character-level
tokenizer ({meta["model"]["vocab_size"]} ids), trained from scratch by supervised fine-tuning on the built-in
`{TASK}` task ({meta["task"]["knobs"]}: prompts like `37+48=`, answer `85` then EOS) from noisy
demonstrations: {100 * meta["sft"]["distractor_rate"]:.0f} % of the SFT answers are the \
"forgot the carry" answer
(`37+48=` → `75`), the rest are right. The model learns both procedures and always answers in the format, but
greedily it mostly drops the carry, so it is right on only part of the held-out prompts while one of {k}
samples at temperature 1.0 usually is: RL with the verifier has a behaviour to select, and `grouprl train`
shows a learning curve within minutes.

Made by (from the repository root, {meta["build_seconds"]:.0f} s on this machine):

    {meta["command"]}

SFT: {meta["sft"]["steps"]} AdamW steps, batch {meta["sft"]["batch_size"]}, peak lr {meta["sft"]["lr"]}
({meta["sft"]["warmup"]} warm-up steps, cosine decay to 0), on {meta["sft"]["n_train"]} distinct training
prompts, loss on the answer and EOS tokens only; final loss {meta["sft"]["final_loss"]:.3f}.

Measured on {meta["eval"]["n"]} held-out prompts (the task's `eval` split, seed {meta["eval"]["seed"]}):

| metric | value |
|---|---|
| greedy accuracy | {m["greedy_accuracy"]:.3f} |
| pass@{k} (T = 1.0) | {m[f"pass@{k}"]:.3f} |
| mean@{k} (T = 1.0, sampled accuracy) | {m[f"mean@{k}"]:.3f} |
| majority vote of {k} (T = 1.0) | {m[f"majority@{k}"]:.3f} |
| greedy answers that are digits then EOS | {m["greedy_format_rate"]:.3f} |
| samples that end with EOS | {m["sampled_eos_rate"]:.3f} |

Prompts are plain text without BOS, as `grouprl` encodes them; `metadata.json` holds every setting.
"""
    )


def run_sft(args: argparse.Namespace) -> int:
    _fill_defaults(args)
    if args.environment is not None:
        from grouprl.cli.sft_env import run_env_sft

        return run_env_sft(args)
    if not 0.0 <= args.distractor_rate < 1.0:
        raise UserError(f"--distractor-rate must be in [0, 1), got {args.distractor_rate}")
    torch.set_num_threads(2)
    start = time.time()
    task = get_task(TASK, **TASK_KNOBS)
    train_rows = task.generate("train", args.n_train, seed=args.seed)
    coin = random.Random(args.seed)
    demos = [{**row, "answer": task.no_carry_answer(row["prompt"])}
             if coin.random() < args.distractor_rate else row
             for row in train_rows]
    eval_rows = task.generate("eval", args.n_eval, seed=args.seed + 1)

    tokenizer = build_char_tokenizer()
    torch.manual_seed(args.seed)  # model initialisation is the only user of the global RNG here
    config = tiny_llama_config(len(tokenizer), **MODEL)
    config.tie_word_embeddings = TIE_EMBEDDINGS
    model = LlamaForCausalLM(config)
    losses = sft(
        model, tokenizer, demos, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        warmup=args.warmup,
    )  # fmt: skip
    measured = measure(model, tokenizer, eval_rows, task.reward_fns[0], args.k, seed=args.seed)

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    meta = {
        "task": {"name": TASK, "knobs": TASK_KNOBS},
        "model": {**MODEL, "tie_word_embeddings": TIE_EMBEDDINGS, "vocab_size": len(tokenizer),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "sft": {"distractor_rate": args.distractor_rate, "steps": args.steps, "batch_size": args.batch_size,
                "lr": args.lr, "warmup": args.warmup, "n_train": args.n_train, "seed": args.seed,
                "final_loss": sum(losses[-20:]) / len(losses[-20:])},
        "eval": {"n": args.n_eval, "seed": args.seed + 1, "k": args.k, "temperature": 1.0,
                 "sample_seed": args.seed},
        "measured": measured,
        "build_seconds": time.time() - start,
        "command": (f"grouprl sft --output src/grouprl/assets/default --steps {args.steps} "
                    f"--distractor-rate {args.distractor_rate} --lr {args.lr} --warmup {args.warmup} "
                    f"--batch-size {args.batch_size} --n-train {args.n_train} --seed {args.seed}"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }  # fmt: skip
    (args.output / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_readme(args.output / "README.md", meta)
    print(json.dumps(measured, indent=2), f"\nbuilt in {meta['build_seconds']:.0f} s -> {args.output}")
    return 0
