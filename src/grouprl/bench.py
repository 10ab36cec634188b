"""``grouprl bench``: seconds per training step by phase, tokens/s, achieved FLOP/s and peak memory.

The configurations are the ones the project compares against TRL's GRPOTrainer (issue 8):

* ``tiny``  — Llama, hidden 128, 4 layers, 4 heads, intermediate 344, char vocabulary; 8 prompts × 8
  completions, 16 new tokens, beta 0.04, μ = 1.
* ``small`` — Llama, hidden 512, 8 layers, 8 heads, intermediate 1376; the same batch, 32 new tokens.
* ``smollm2-135m`` — SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3 key-value heads, intermediate
  1536, vocabulary 49152, tied embeddings; 135 M parameters), built from a config; 8 prompts × 8 completions
  of 256 new tokens. Meant for ``--device cuda``.

The model is random (from a config), so completions run to the token budget: the work per step is fixed.
FLOPs are counted as 2·N per generated or scored token and 6·N per trained token (N = parameters). The
matrix-multiply peak is measured in the same process with large square products (fp32 on the CPU, bf16 on
CUDA, the dtype of the update's matrix multiplies there), because a machine's speed drifts from minute to
minute; ``fraction_of_gemm`` is the model FLOPs utilisation (MFU) against it. ``--device cuda`` runs on the
GPU (``model.device``; ``train.precision`` auto is bf16-mixed there) and adds the peak GPU memory.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grouprl.errors import UserError

CONFIGS = {
    "tiny": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=344, max_new_tokens=16),
    "small": dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376, max_new_tokens=32),
    "medium": dict(hidden_size=1024, num_layers=12, num_heads=16, intermediate_size=2816, max_new_tokens=32),
    "smollm2-135m": dict(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                         vocab_size=49152, tie_word_embeddings=True, max_new_tokens=256),
}


def gemm_gflops(size: int = 1024, repeats: int = 8, device: str = "cpu") -> float:
    """Matrix-multiply rate (best of ``repeats``): fp32 on this process's CPU threads, bf16 on CUDA (8192²
    products there: smaller ones do not fill the GPU)."""
    cuda = torch.device(device).type == "cuda"
    size, dtype = (8192, torch.bfloat16) if cuda else (size, torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a @ b  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class BenchResult:
    config: str
    sec_per_step: float
    phases: dict[str, float]
    tokens_per_s: float
    achieved_gflops: float
    gemm_gflops: float
    peak_rss_mib: float
    params: int
    steps: int
    device: str = "cpu"
    rollout_tokens_per_s: float = 0.0  # generated tokens / generation seconds
    peak_gpu_mib: float | None = None

    def as_dict(self) -> dict:
        return {**self.__dict__, "fraction_of_gemm": self.achieved_gflops / self.gemm_gflops}


def model_config(name: str, vocab_size: int):
    """The Llama config of bench shape ``name``; ``vocab_size`` (the char tokenizer's) unless the shape sets
    its own."""
    from grouprl.model import tiny_llama_config

    c = CONFIGS[name]
    config = tiny_llama_config(c.get("vocab_size", vocab_size), hidden_size=c["hidden_size"],
                               num_layers=c["num_layers"], num_heads=c["num_heads"],
                               intermediate_size=c["intermediate_size"], max_position_embeddings=2048)
    config.num_key_value_heads = c.get("num_kv_heads", c["num_heads"])
    config.tie_word_embeddings = c.get("tie_word_embeddings", False)
    return config


def make_model_dir(name: str, root: Path) -> Path:
    from transformers import LlamaForCausalLM

    from grouprl.model import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config(name, len(tokenizer)))
    path = root / name
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run(name: str, steps: int, warmup: int = 2, overrides: tuple[str, ...] = (),
        device: str = "cpu") -> BenchResult:
    from grouprl.config import load_config
    from grouprl.train.loop import sample_batch, update
    from grouprl.train.setup import build

    if name not in CONFIGS:
        raise UserError(f"unknown bench config {name!r}; known: {', '.join(CONFIGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(name, Path(tmp))
        cfg = load_config(None, [f"model.name_or_path={model_dir}", "algorithm=grpo", "algo.beta=0.04",
                                 "train.prompts_per_step=8", "rollout.num_generations=8",
                                 f"rollout.max_new_tokens={CONFIGS[name]['max_new_tokens']}",
                                 "data.num_eval=0", "data.num_train=512", "train.num_iterations=1",
                                 f"model.device={device}", *overrides])
        setup = build(cfg, Path(tmp) / "run")
        params = sum(p.numel() for p in setup.policy.parameters())
        on = str(setup.device)
        cuda = setup.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        gemm = gemm_gflops(device=on)
        times, phases, flops, tokens = [], [], [], []
        for step in range(1, warmup + steps + 1):
            if step == warmup + 1 and cuda:
                torch.cuda.reset_peak_memory_stats(setup.device)
            sync()
            t0 = time.perf_counter()
            batch, _ = sample_batch(setup, step)
            batch, metrics = update(setup, batch)
            sync()
            elapsed = time.perf_counter() - t0
            if step <= warmup:
                continue
            r = batch.rollout
            generated = int(r.completion_mask.sum())
            scored = int(r.prompt_mask.sum()) + generated  # one teacher-forced pass per frozen model
            passes = ((setup.reference is not None)
                      + (cfg.train.num_iterations > 1 or cfg.train.mini_batches > 1))
            flops.append(2 * params * (generated + passes * scored)
                         + 6 * params * scored * cfg.train.num_iterations)
            times.append(elapsed)
            tokens.append(generated)
            phases.append({"generate": batch.seconds["generate"], "reward": batch.seconds["reward"],
                           "reference": metrics["time/reference"],
                           "old_logprobs": metrics["time/old_logprobs"], "update": metrics["time/update"]})
            # prompts, tokenising, advantages, metrics
            phases[-1]["other"] = elapsed - sum(phases[-1].values())
        # the machine drifts: the better of the rates before and after the steps
        gemm = max(gemm, gemm_gflops(device=on))
        peak_gpu = torch.cuda.max_memory_allocated(setup.device) / 2**20 if cuda else None
    median = statistics.median(times)
    return BenchResult(
        config=name, sec_per_step=median,
        phases={k: statistics.median(p[k] for p in phases) for k in phases[0]},
        tokens_per_s=sum(tokens) / sum(times), achieved_gflops=sum(flops) / sum(times) / 1e9,
        gemm_gflops=gemm, peak_rss_mib=peak_rss_mib(), params=params, steps=steps, device=on,
        rollout_tokens_per_s=sum(tokens) / sum(p["generate"] for p in phases), peak_gpu_mib=peak_gpu,
    )


def run_trl(name: str, steps: int, warmup: int = 2, device: str = "cpu") -> dict:
    """TRL's GRPOTrainer on the identical model, tokenizer, prompts and hyperparameters (``bench`` extra);
    on CUDA in bf16 mixed precision, as grouprl runs there."""
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:
        raise UserError(f"--vs-trl needs TRL: pip install 'grouprl[bench]' ({err})") from None
    from grouprl.data.tasks import get_task
    from grouprl.rewards.arithmetic import correct_answer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)

    cuda = torch.device(device).type == "cuda" or (device == "auto" and torch.cuda.is_available())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(name, Path(tmp))
        rows = get_task("arithmetic").generate("train", 8 * (warmup + steps), 0)
        data = Dataset.from_list(rows)
        config = GRPOConfig(
            output_dir=str(Path(tmp) / "trl"), per_device_train_batch_size=64, num_generations=8,
            max_completion_length=CONFIGS[name]["max_new_tokens"], beta=0.04, num_iterations=1,
            temperature=1.0, top_p=1.0, top_k=0, learning_rate=1e-5, max_steps=warmup + steps,
            logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=not cuda, bf16=cuda,
            shuffle_dataset=False, dataloader_num_workers=0, seed=0,
        )
        timer = StepTimer()
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                              reward_funcs=[correct_answer], args=config, train_dataset=data,
                              processing_class=AutoTokenizer.from_pretrained(model_dir, padding_side="left"),
                              callbacks=[timer])
        trainer.train()
    return {"sec_per_step": statistics.median(timer.times[warmup:]), "peak_rss_mib": peak_rss_mib()}


def _subprocess(argv: list[str]) -> dict:
    """Run one side in a fresh process (its own peak RSS, no state left behind), read its JSON line."""
    out = subprocess.run([sys.executable, "-m", "grouprl", "bench", *argv, "--json"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_by_side(args) -> dict:
    """grouprl and TRL alternated, each in its own process, ``args.rounds`` times; medians of each side."""
    common = ["--config", args.config, "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--device", args.device]
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(_subprocess([*common, *args.overrides]))
        theirs.append(_subprocess([*common, "--trl-only"]))
    d = dict(ours[0])
    for key in ("sec_per_step", "tokens_per_s", "achieved_gflops", "gemm_gflops", "peak_rss_mib"):
        d[key] = statistics.median(o[key] for o in ours)
    d["fraction_of_gemm"] = d["achieved_gflops"] / d["gemm_gflops"]
    d["trl_sec_per_step"] = statistics.median(t["sec_per_step"] for t in theirs)
    d["trl_peak_rss_mib"] = statistics.median(t["peak_rss_mib"] for t in theirs)
    d["speedup_vs_trl"] = d["trl_sec_per_step"] / d["sec_per_step"]
    d["rounds"] = args.rounds
    return d


def main(args) -> int:
    if getattr(args, "profile", False) or getattr(args, "model", None):
        from grouprl import profile

        return profile.main(args)
    if args.trl_only:
        print(json.dumps(run_trl(args.config, args.steps, args.warmup, args.device)))
        return 0
    d = (side_by_side(args) if args.vs_trl
         else run(args.config, args.steps, args.warmup, tuple(args.overrides), args.device).as_dict())
    if not args.json:
        print(f"config {d['config']}: {d['params'] / 1e6:.2f} M params, {d['steps']} steps after warm-up")
        print(f"  sec/step (median)  {d['sec_per_step']:.3f}   phases: "
              + ", ".join(f"{k} {v:.3f}" for k, v in d["phases"].items()))
        print(f"  tokens/s {d['tokens_per_s']:.0f}   achieved {d['achieved_gflops']:.1f} GFLOP/s = "
              f"{100 * d['fraction_of_gemm']:.0f}% of GEMM {d['gemm_gflops']:.1f} GFLOP/s   peak RSS "
              f"{d['peak_rss_mib']:.0f} MiB")
        if "trl_sec_per_step" in d:
            print(f"  TRL GRPOTrainer {d['trl_sec_per_step']:.3f} s/step, "
                  f"peak RSS {d['trl_peak_rss_mib']:.0f} MiB: "
                  f"grouprl is {d['speedup_vs_trl']:.2f}x faster")
    print(json.dumps(d))
    return 0
