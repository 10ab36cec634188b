"""The online training loop: a straight line of numbered stages (DESIGN.md §1).

    1 sample prompts → 2 rollout → 3 rewards → 4 filter/refill → 5 advantages → 6 log-prob passes
    → 7 update (μ passes × mini-batches × micro-batches) → 8 metrics, eval, checkpoint

It never names an algorithm: what differs between GRPO, DAPO, GSPO … is a field of the ``AlgoSpec`` that the
``grouprl.algo`` functions read.
"""

from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path

import torch

from grouprl.config import Config, algo_spec, dump_config
from grouprl.config.load import config_to_dict
from grouprl.eval.evaluate import evaluate
from grouprl.logging.sinks import ConsoleProgress, JsonlSink, TensorBoardSink, WandbSink, say
from grouprl.train import step as stages
from grouprl.train.checkpoint import rng_state, save_checkpoint
from grouprl.train.resume import StopSignal, TrainingDiverged, clear_run_files, find_resume_point, restore
from grouprl.train.setup import Setup, build, prompt_texts
from grouprl.types import SamplingParams


def run_eval(s: Setup, step: int) -> dict:
    if not s.eval_rows:
        return {}
    out = evaluate(s.backend, s.tokenizer, s.rewards, s.eval_rows, prompt_texts(s, s.eval_rows),
                   max_new_tokens=s.cfg.rollout.max_new_tokens, k=s.cfg.eval.num_samples,
                   temperature=s.cfg.eval.temperature, batch_size=s.cfg.eval.batch_size, seed=s.cfg.train.seed)
    JsonlSink(s.run_dir / "eval.jsonl").write({"step": step, **out})
    return out


def sample_batch(s: Setup, step: int) -> tuple[stages.Scored, dict]:
    """Stages 1–4: prompts → rollout → rewards, refilling dropped groups when dynamic sampling is on."""
    cfg, spec, G, B = s.cfg, algo_spec(s.cfg), s.cfg.rollout.num_generations, s.cfg.train.prompts_per_step
    batches, kept, rounds = [], [], 0
    while True:
        rows = s.source.take(B - len(kept))
        sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                  top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                                  seed=cfg.train.seed * 100_003 + step * 101 + rounds)
        batch = stages.rollout_and_score(s.backend, s.tokenizer, s.rewards, rows, prompt_texts(s, rows), G, sampling)
        offset = sum(len(b.rows) for b in batches)
        batches.append(batch)
        if not spec.dynamic_sampling:
            return batch, {}
        kept += [offset + g for g in stages.informative_groups(batch, G)]
        if len(kept) >= B or rounds >= cfg.train.max_refill_rounds:
            break
        rounds += 1
    joined = stages.concat(batches, s.tokenizer.pad_token_id)
    stats = {"sampling/groups_sampled": float(len(joined.rows)), "sampling/groups_uninformative":
             float(len(joined.rows) - len(kept)), "sampling/refill_rounds": float(rounds),
             "sampling/groups_short": float(max(B - len(kept), 0))}
    return (stages.select_groups(joined, kept[:B], G) if kept else joined), stats


def update(s: Setup, batch: stages.Scored) -> dict:
    """Stages 5–7: advantages, the log-prob passes that are needed, and μ × mini-batch optimizer steps."""
    cfg, spec, G = s.cfg, algo_spec(s.cfg), s.cfg.rollout.num_generations
    temp, mbs, chunk = cfg.rollout.temperature, cfg.train.micro_batch_size, cfg.model.logprob_chunk_size
    off_policy = cfg.train.num_iterations > 1 or cfg.train.mini_batches > 1
    # π_old is needed when the update is off-policy, or for a KL penalty in the reward (k1 of old vs ref).
    need_old = off_policy or (s.reference is not None and spec.kl_placement == "reward")
    t0 = time.perf_counter()
    old = stages.frozen_logprobs(s.policy, batch.rollout, G, temp, mbs, chunk) if need_old else None
    t_old = time.perf_counter() - t0
    ref = stages.frozen_logprobs(s.reference, batch.rollout, G, temp, mbs, chunk) if s.reference is not None else None
    t_ref = time.perf_counter() - t0 - t_old
    adv, loss_mask = stages.advantages_stage(batch, G, spec, ref, old)
    inputs = stages.UpdateInputs(batch.rollout, adv.advantages, loss_mask, old if off_policy else None, ref)

    # The policy stays in eval mode for the update too: dropout would make the on-policy ratio differ from 1.
    t0 = time.perf_counter()
    groups = torch.arange(len(batch.rows))
    sums: dict[str, float] = {}
    updates = skipped = 0
    for _ in range(cfg.train.num_iterations):
        for mini in torch.tensor_split(groups, cfg.train.mini_batches):
            rows = (mini[:, None] * G + torch.arange(G)).flatten()
            if loss_mask[rows].sum() == 0:
                continue
            s.optimizer.zero_grad(set_to_none=True)
            metrics = stages.accumulate_gradients(s.policy, inputs, rows, G, spec, temperature=temp,
                                                  micro_batch_size=mbs, chunk_size=chunk,
                                                  norm_length=cfg.rollout.max_new_tokens)
            norm = torch.nn.utils.clip_grad_norm_(s.policy.parameters(),
                                                  cfg.train.max_grad_norm or float("inf"))
            if not torch.isfinite(norm):
                skipped += 1  # a NaN/inf gradient never reaches the weights
                continue
            s.optimizer.step()
            s.scheduler.step()
            updates += 1
            metrics["grad_norm"] = norm
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
    out = {k: v / max(updates, 1) for k, v in sums.items()}
    out.update({k: float(v) for k, v in adv.metrics.items()})
    out.update({"update/steps": updates, "update/skipped_nonfinite": skipped, "lr": s.scheduler.get_last_lr()[0],
                "time/logprobs": t_old + t_ref, "time/old_logprobs": t_old, "time/reference": t_ref,
                "time/update": time.perf_counter() - t0})
    batch.advantages = adv.advantages
    return out


def step_metrics(batch: stages.Scored, sampling_stats: dict) -> dict:
    r = batch.rollout
    lengths = r.completion_mask.sum(-1).double()
    out = {"accuracy": batch.accuracy.mean().item(), "completion/len_mean": lengths.mean().item(),
           "batch/sequences": float(len(lengths)),
           "memory/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "completion/len_max": lengths.max().item(), "completion/truncated_frac": r.truncated.double().mean().item(),
           **sampling_stats}
    for name, values in batch.parts.items():
        finite = values[~torch.isnan(values)]
        out[f"reward/{name}/mean"] = finite.mean().item() if len(finite) else math.nan
        out[f"reward/{name}/errors"] = float(batch.errors.get(name, 0))
        out[f"reward/{name}/timeouts"] = float(batch.timeouts.get(name, 0))
    return out


def log_completions(s: Setup, step: int, batch: stages.Scored) -> None:
    n = min(s.cfg.output.log_completions, len(batch.completions))
    if n == 0:
        return
    G = s.cfg.rollout.num_generations
    sink = JsonlSink(s.run_dir / "completions.jsonl")
    for i in range(n):
        row = {"step": step, "prompt": batch.rows[i // G]["prompt"], "completion": batch.completions[i],
               "reward": batch.rewards[i].item(), "advantage": float(batch.advantages[i])}
        row.update({f"reward/{k}": v[i].item() for k, v in batch.parts.items()})
        sink.write(row)


def one_step(s: Setup, step: int, sinks: list) -> dict:
    """Stages 1–8 of one step (without eval and checkpoint); returns the step's metrics."""
    t_step = time.perf_counter()
    batch, sampling_stats = sample_batch(s, step)  # 1–4
    t_rollout = time.perf_counter() - t_step
    metrics = update(s, batch)  # 5–7
    metrics.update(step_metrics(batch, sampling_stats))
    elapsed = time.perf_counter() - t_step
    metrics.update({"step": step, "time/rollout": t_rollout, "time/generate": batch.seconds.get("generate", 0.0),
                    "time/reward": batch.seconds.get("reward", 0.0), "time/step": elapsed,
                    "tokens_per_s": int(batch.rollout.completion_mask.sum()) / elapsed})
    for sink in sinks:  # 8
        sink.write(metrics)
    log_completions(s, step, batch)
    return metrics


def trainer_state(s: Setup, step: int) -> dict:
    return {"step": step, "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
            "rng": rng_state(), "data": s.source.state_dict()}


def train(cfg: Config, run_dir: Path, resume: str | None = None) -> dict:
    """Run steps up to ``cfg.train.steps``, resuming from a checkpoint when asked; returns the held-out
    evaluation before and after (``{"finished": True}`` when a resumed run had nothing left to do)."""
    s = build(cfg, run_dir)
    try:
        return _train(s, cfg, run_dir, resume)
    finally:
        s.rewards.close()


def _train(s: Setup, cfg: Config, run_dir: Path, resume: str | None) -> dict:
    checkpoint = find_resume_point(run_dir, resume)
    start = 0
    if checkpoint is not None:
        start = restore(s, checkpoint)
        if start >= cfg.train.steps:
            say(f"run {run_dir} already finished at step {start}; nothing to do")
            return {"before": {}, "after": {}, "finished": True}
        say(f"resuming {run_dir} from {checkpoint.name}")
    else:
        clear_run_files(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        say(f"run directory: {run_dir}")
    sinks = [JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.output.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if cfg.output.wandb_mode:
        sinks.append(WandbSink(run_dir, cfg.output.wandb_mode, config_to_dict(cfg)))
    before = run_eval(s, 0) if s.eval_rows and start == 0 else {}
    if before:
        say(f"held-out before training: {json.dumps(before)}")
    try:
        stop = StopSignal()
        skipped_in_a_row = 0
        with stop, ConsoleProgress(cfg.train.steps, cfg.output.progress) as progress:
            progress.update(start, {})
            for step in range(start + 1, cfg.train.steps + 1):
                metrics = one_step(s, step, sinks)
                progress.update(step, metrics)
                skipped_in_a_row = skipped_in_a_row + 1 if metrics["update/skipped_nonfinite"] else 0
                if skipped_in_a_row >= cfg.train.max_nonfinite_steps:
                    save_checkpoint(run_dir, step, s.policy, s.tokenizer, trainer_state(s, step), cfg.output.keep_last)
                    raise TrainingDiverged(f"{skipped_in_a_row} steps in a row had a NaN/inf loss or gradient (last at "
                                           f"step {step}); weights were left untouched and saved; lower train.lr or "
                                           "check the rewards")
                if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                    run_eval(s, step)
                due = cfg.output.save_every and step % cfg.output.save_every == 0
                if due or step == cfg.train.steps or stop.requested:
                    save_checkpoint(run_dir, step, s.policy, s.tokenizer, trainer_state(s, step), cfg.output.keep_last)
                if stop.requested:
                    say(f"stopped by signal after step {step}; checkpoint written; continue with --resume auto")
                    return {"before": before, "after": {}, "interrupted": True}
        after = run_eval(s, cfg.train.steps) if s.eval_rows else {}
        if after:
            say(f"held-out after training:  {json.dumps(after)}")
        return {"before": before, "after": after}
    finally:
        for sink in sinks[1:]:  # TensorBoard, W&B: flush and close
            sink.close()
