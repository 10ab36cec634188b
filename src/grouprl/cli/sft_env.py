"""``grouprl sft --environment calculator``: build the small model that plays the calculator environment
imperfectly, as shipped in ``src/grouprl/assets/default-calculator/``.

A fresh tiny Llama (character vocabulary) learns whole episodes of the ``calculator`` environment by
supervised fine-tuning on noisy demonstrations (``env/demos.py``): read the word problem, call a tool in the
``hermes`` format with the problem's two numbers, read the tool's result, answer it. A share
``--distractor-rate`` of the demonstrations call the confused tool of the problem's operation (``sub`` for
``add`` ...), so the model calls the wrong tool more often than the right one: it can play every episode and
often fails, and RL with the verifier has a choice to correct. The environment's tokens are out of the loss,
as in RL.

    grouprl sft --environment calculator --output src/grouprl/assets/default-calculator

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

from grouprl.env import check_environment, tool_names
from grouprl.env.builtin import Calculator, calculator_rows
from grouprl.env.demos import CONFUSED, calculator_demo
from grouprl.env.episode import EnvironmentRollout, Renderer
from grouprl.env.host import EnvHost
from grouprl.env.parse import hermes
from grouprl.errors import UserError
from grouprl.eval.evaluate import evaluate
from grouprl.model.configs import tiny_llama_config
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.rewards import Reward, RewardRunner
from grouprl.rewards.arithmetic import correct_answer
from grouprl.rollout.fast import FastRollout
from grouprl.train.sft import sft

ENVIRONMENTS = ("calculator",)
MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 344,
         "max_position_embeddings": 160}
MAX_TURNS, MAX_NEW_TOKENS = 2, 112  # a call (~65 tokens), its result (~36), an answer: the budget


def demonstrations(rows: list[dict], rate: float, seed: int, renderer: Renderer) -> list[dict]:
    """SFT rows with ``turns``: the call (model), the tool's reply as the episode renders it (environment),
    the answer (model). A share ``rate`` of them call the confused tool."""
    coin = random.Random(seed)
    demos = []
    for row in rows:
        tool, call, result, answer = calculator_demo(row["prompt"], coin.random() < rate)
        reply = renderer.reply([{"role": "tool", "name": tool, "content": result}])
        demos.append({"prompt": row["prompt"], "turns": [(call, True), (reply, False), (answer, True)]})
    return demos


def play_backend(model, tokenizer) -> EnvironmentRollout:
    """Episodes of the calculator environment on the fast backend (as training plays them), in this
    process."""
    fast = FastRollout(model, tokenizer)
    renderer = Renderer(tokenizer, check_environment(Calculator, "calculator"), fast.eos_ids.tolist())
    host = EnvHost(Calculator, tool_names(Calculator), timeout=10.0, max_chars=2000, isolate=False)
    return EnvironmentRollout(fast, tokenizer, host, renderer, hermes, max_turns=MAX_TURNS)


def measure(model, tokenizer, rows: list[dict], k: int, seed: int) -> dict[str, float]:
    """Held-out success of whole episodes: greedy (pass@1), and pass@k, mean@k of ``k`` samples at T = 1."""
    backend = play_backend(model, tokenizer)
    rewards = RewardRunner([Reward("correct_answer", correct_answer)], isolate=False)
    try:
        out = evaluate(backend, tokenizer, rewards, rows, [r["prompt"] for r in rows],
                       max_new_tokens=MAX_NEW_TOKENS, k=k, temperature=1.0, seed=seed)
    finally:
        backend.close()
        rewards.close()
    return {key.removeprefix("eval/"): value for key, value in out.items()}


def write_readme(path: Path, meta: dict) -> None:
    m, k, s = meta["measured"], meta["eval"]["k"], meta["sft"]
    confused = ", ".join(f"`{a}` → `{b}`" for a, b in CONFUSED.items())
    path.write_text(f"""# The embedded calculator player

A {meta["model"]["parameters"] / 1e6:.2f}M-parameter Llama-architecture causal LM with a character-level
tokenizer ({meta["model"]["vocab_size"]} ids, context {meta["model"]["max_position_embeddings"]}), trained
from scratch by supervised fine-tuning on whole episodes of the built-in `calculator` environment: it reads a
word problem (`Ann has 37 pens, buys 5. Pens?`), calls a tool in the `hermes` format
(`<tool_call>{{"name":"add","arguments":{{"a":37,"b":5}}}}</tool_call>`), reads the result the environment
appends, and answers it (`42`). The demonstrations are noisy: {100 * s["distractor_rate"]:.0f} % of them call
the confused tool ({confused}) and answer what it returned. The model plays every episode in the format but
mostly with the wrong tool, so it often fails while one of {k} samples usually succeeds: RL with the verifier
has a choice to correct (`grouprl train environment=calculator` uses this model).

Made by (from the repository root, {meta["build_seconds"]:.0f} s on this machine, 2 threads):

    {meta["command"]}

SFT: {s["steps"]} AdamW steps, batch {s["batch_size"]}, peak lr {s["lr"]} ({s["warmup"]} warm-up steps, cosine
decay to 0), on {s["n_train"]} distinct training problems; loss on the model's tokens only (the two turns and
their EOS; the tool's reply is out of the loss, as in RL); final loss {s["final_loss"]:.3f}.

Measured on {meta["eval"]["n"]} held-out problems (the environment's `eval` split, seed
{meta["eval"]["seed"]}), whole episodes of at most {MAX_TURNS} turns and {MAX_NEW_TOKENS} tokens on the `fast`
backend:

| metric | value |
|---|---|
| greedy success (pass@1) | {m["pass@1"]:.3f} |
| pass@{k} (T = 1.0) | {m[f"pass@{k}"]:.3f} |
| mean@{k} (T = 1.0, sampled success) | {m[f"mean@{k}"]:.3f} |
| tool calls per greedy episode | {m["tool_calls_mean"]:.3f} |
| turns per greedy episode | {m["turns_mean"]:.3f} |
| greedy episodes cut off at the budget | {m["truncated_frac"]:.3f} |

`metadata.json` holds every setting.
""")


def run_env_sft(args: argparse.Namespace) -> int:
    if args.environment not in ENVIRONMENTS:
        raise UserError(f"grouprl sft --environment {args.environment}: no demonstrations for it; the "
                        f"environments with demonstrations are {', '.join(ENVIRONMENTS)}")
    if not 0.0 <= args.distractor_rate < 1.0:
        raise UserError(f"--distractor-rate must be in [0, 1), got {args.distractor_rate}")
    torch.set_num_threads(2)
    start = time.time()
    tokenizer = build_char_tokenizer()
    renderer = Renderer(tokenizer, [], [tokenizer.eos_token_id])
    demos = demonstrations(calculator_rows("train", args.n_train, args.seed), args.distractor_rate, args.seed,
                           renderer)
    eval_rows = calculator_rows("eval", args.n_eval, args.seed + 1)
    torch.manual_seed(args.seed)  # model initialisation is the only user of the global RNG here
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), **MODEL))
    losses = sft(model, tokenizer, demos, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 seed=args.seed, warmup=args.warmup)
    measured = measure(model, tokenizer, eval_rows, args.k, seed=args.seed)

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    meta = {
        "environment": args.environment,
        "model": {**MODEL, "vocab_size": len(tokenizer), "tie_word_embeddings": False,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "sft": {"distractor_rate": args.distractor_rate, "steps": args.steps, "batch_size": args.batch_size,
                "lr": args.lr, "warmup": args.warmup, "n_train": args.n_train, "seed": args.seed,
                "final_loss": sum(losses[-20:]) / len(losses[-20:])},
        "eval": {"n": args.n_eval, "seed": args.seed + 1, "k": args.k, "temperature": 1.0,
                 "sample_seed": args.seed, "max_turns": MAX_TURNS, "max_new_tokens": MAX_NEW_TOKENS},
        "measured": measured,
        "build_seconds": time.time() - start,
        "command": (f"grouprl sft --environment {args.environment} --output src/grouprl/assets/"
                    f"default-{args.environment} --steps {args.steps} "
                    f"--distractor-rate {args.distractor_rate} "
                    f"--lr {args.lr} --warmup {args.warmup} --batch-size {args.batch_size} "
                    f"--n-train {args.n_train} --seed {args.seed}"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (args.output / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_readme(args.output / "README.md", meta)
    print(json.dumps(measured, indent=2), f"\nbuilt in {meta['build_seconds']:.0f} s -> {args.output}")
    return 0
