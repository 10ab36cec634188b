"""The online training loop: a straight line of numbered stages (docs/architecture.md, One step as data).

    1 sample prompts → 2 rollout → 3 rewards → 4 filter/refill → 5 advantages → 6 log-prob passes
    → 7 update (μ passes × mini-batches × micro-batches) → 8 metrics, eval, checkpoint

It never names an algorithm: what differs between GRPO, DAPO, GSPO … is a field of the ``AlgoSpec`` that the
``grouprl.algo`` functions read.

Under ``torchrun`` the same lines run on every rank (docs/distributed.md): every rank draws the same global
prompt list and takes its contiguous slice of whole groups; decisions (refill, stop, skip) come from
all-reduced values, so all ranks take them together; rank 0 alone writes the run directory, evaluates and
prints.
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from grouprl.config import Config, dump_config
from grouprl.config.load import config_to_dict
from grouprl.distributed import CollectiveFailure, failure, is_collective_error, shard, shutdown
from grouprl.errors import RewardFailed, TrainingDiverged
from grouprl.eval.evaluate import evaluate
from grouprl.logging.card import model_card
from grouprl.logging.sinks import ConsoleProgress, JsonlSink, TensorBoardSink, TrackioSink, WandbSink, say
from grouprl.model.memory import activation_bytes_per_token, micro_batch_rows
from grouprl.model.passes import frozen_logprobs
from grouprl.rewards import RewardState
from grouprl.train import step as stages
from grouprl.train.checkpoint import save_checkpoint
from grouprl.train.resume import StopSignal, clear_run_files, resume_from
from grouprl.train.rundir import hold_run_dir
from grouprl.train.setup import Setup, build, prompt_texts
from grouprl.train.state import rng_state
from grouprl.types import SamplingParams, Scored, UpdateInputs, concat, select_groups


def say0(s: Setup, text: str) -> None:
    """Print on rank 0 only."""
    if s.dist.is_main:
        say(text)


def reward_state(s: Setup, finished: int) -> RewardState:
    """The ``trainer_state`` reward functions get after ``finished`` training steps."""
    source = s.source
    return RewardState(global_step=finished, max_steps=s.cfg.train.steps,
                       epoch=source.epoch + source.pos / len(source.rows), is_world_process_zero=s.dist.is_main)


def run_eval(s: Setup, step: int) -> dict:
    if not s.eval_rows:
        return {}
    out = evaluate(s.backend, s.tokenizer, s.rewards, s.eval_rows, prompt_texts(s, s.eval_rows),
                   max_new_tokens=s.cfg.rollout.max_new_tokens, k=s.cfg.eval.num_samples,
                   temperature=s.cfg.eval.temperature, batch_size=s.cfg.eval.batch_size, seed=s.cfg.train.seed,
                   state=reward_state(s, step))
    JsonlSink(s.run_dir / "eval.jsonl").write({"step": step, **out})
    s.last_eval = {"step": step, **out}
    return out


def eval_all(s: Setup, step: int) -> dict:
    """Every rank calls it (under FSDP the weights are gathered for it); rank 0 evaluates."""
    if not s.eval_rows:
        return {}
    with s.full_weights():
        return run_eval(s, step) if s.dist.is_main else {}


def sample_batch(s: Setup, step: int) -> tuple[Scored, dict]:
    """Stages 1–4: prompts → rollout → rewards, refilling dropped groups when dynamic sampling is on.

    Returns this rank's groups (``group_ids``: their indices in the one-process order) and the sampling stats.
    """
    cfg, spec, G, B, d = s.cfg, s.spec, s.cfg.rollout.num_generations, s.cfg.train.prompts_per_step, s.dist
    batches, mine, kept, drawn, rounds = [], [], [], 0, 0  # mine, kept: group indices in the one-process order
    state = reward_state(s, step - 1)
    while True:
        need = B - len(kept)
        rows = s.source.take(need)  # the same list on every rank: the cursor never depends on the world size
        lo, hi = shard(need, d)
        sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                  top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                                  seed=cfg.train.seed * 100_003 + step * 101 + rounds, group_offset=drawn + lo)
        informative = torch.zeros(need)
        if hi > lo:
            batch = stages.rollout_and_score(s.backend, s.tokenizer, s.rewards, rows[lo:hi],
                                             prompt_texts(s, rows[lo:hi]), G, sampling, state)
            batches.append(batch)
            mine += range(drawn + lo, drawn + hi)
            informative[[lo + g for g in stages.informative_groups(batch, G)]] = 1
        if not spec.dynamic_sampling:
            return replace(batch, group_ids=torch.arange(lo, hi)), {}
        kept += [drawn + g for g in torch.nonzero(d.all_reduce(informative)).flatten().tolist()]
        drawn += need
        if len(kept) >= B or rounds >= cfg.train.max_refill_rounds:
            break
        rounds += 1
    joined = concat(batches, s.tokenizer.pad_token_id)
    stats = {"sampling/groups_sampled": float(drawn), "sampling/groups_uninformative": float(drawn - len(kept)),
             "sampling/refill_rounds": float(rounds), "sampling/groups_short": float(max(B - len(kept), 0))}
    chosen = set(kept[:B]) if kept else set(mine)
    local = [i for i, g in enumerate(mine) if g in chosen]
    selected = select_groups(joined, local, G) if kept else joined
    return replace(selected, group_ids=torch.tensor([mine[i] for i in local], dtype=torch.long)), stats


def needs_old_logp(s: Setup) -> tuple[bool, bool]:
    """``(off_policy, need_old)``: whether the update is off-policy (μ > 1 or several mini-batches: π_old is the
    sampling policy, frozen), and whether π_old's log-probs need a pass of their own: off-policy, or for a KL
    penalty in the reward (k1 of old vs ref). On-policy, π_old is the detached current log-probs."""
    off_policy = s.cfg.train.num_iterations > 1 or s.cfg.train.mini_batches > 1
    return off_policy, off_policy or (s.reference is not None and s.spec.kl_placement == "reward")


def update(s: Setup, batch: Scored) -> tuple[Scored, dict]:
    """Stages 5–7: advantages, the log-prob passes that are needed, and μ × mini-batch optimizer steps.

    Returns the batch with its advantages (for completions.jsonl) and the update's metrics."""
    cfg, spec, G, d = s.cfg, s.spec, s.cfg.rollout.num_generations, s.dist
    temp, chunk = cfg.rollout.temperature, cfg.model.logprob_chunk_size
    width = batch.rollout.prompt_ids.shape[1] + batch.rollout.completion_ids.shape[1]
    per_token = activation_bytes_per_token(s.policy, cfg.model.gradient_checkpointing)

    def micro_rows(n: int) -> int:  # sequences per forward/backward for a pass over n sequences
        return cfg.train.micro_batch_size or micro_batch_rows(n, width, per_token, cfg.train.activation_budget_mib)

    mbs = micro_rows(batch.rollout.completion_ids.shape[0])
    off_policy, need_old = needs_old_logp(s)
    t0 = time.perf_counter()
    with s.full_weights():
        old = frozen_logprobs(s.policy, batch.rollout, G, temp, mbs, chunk) if need_old else None
    t_old = time.perf_counter() - t0
    ref = s.reference.logprobs(batch.rollout, G, temp, mbs, chunk) if s.reference is not None else None
    t_ref = time.perf_counter() - t0 - t_old
    adv, loss_mask = stages.advantages_stage(batch, G, spec, ref, old, d)
    inputs = UpdateInputs(batch.rollout, adv.advantages, loss_mask, old if off_policy else None, ref)

    # The policy stays in eval mode for the update too: dropout would make the on-policy ratio differ from 1.
    t0 = time.perf_counter()
    groups = torch.arange(len(batch.rows))
    sums: dict[str, float] = {}
    updates = skipped = 0
    for _ in range(cfg.train.num_iterations):
        for mini in torch.tensor_split(groups, cfg.train.mini_batches):
            rows = (mini[:, None] * G + torch.arange(G)).flatten()
            counts = stages.global_counts(loss_mask[rows], d)
            if counts.num_tokens == 0:
                continue
            s.optimizer.zero_grad(set_to_none=True)
            metrics = stages.accumulate_gradients(s.scorer, inputs, rows, G, spec, counts, temperature=temp,
                                                  micro_batch_size=micro_rows(len(rows)), chunk_size=chunk,
                                                  norm_length=cfg.rollout.max_new_tokens, d=d)
            # The gradients are the same on every rank after DDP's all-reduce, so is this norm, and so is the
            # skip decision below: the ranks never disagree on whether an update happened.
            norm = stages.clip_gradients(s.policy, cfg.train.max_grad_norm)
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
    return replace(batch, advantages=adv.advantages), out


def step_metrics(batch: Scored, sampling_stats: dict, d) -> dict:
    """Rollout metrics of the global batch: sums and counts all-reduced over ranks, maxima max-reduced."""
    r = batch.rollout
    lengths = r.completion_mask.sum(-1).double()
    sums = {"n": float(len(lengths)), "accuracy": batch.accuracy.sum().item(), "len": lengths.sum().item(),
            "truncated": r.truncated.double().sum().item()}
    for name, values in batch.parts.items():
        finite = values[~torch.isnan(values)]
        sums.update({f"{name}/sum": finite.sum().item(), f"{name}/n": float(len(finite)),
                     f"{name}/errors": float(batch.errors.get(name, 0)),
                     f"{name}/timeouts": float(batch.timeouts.get(name, 0))})
    sums = d.sum_floats(sums)
    peaks = d.all_reduce(torch.tensor([lengths.max().item() if len(lengths) else 0.0,
                                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]), "max")
    out = {"accuracy": sums["accuracy"] / sums["n"], "completion/len_mean": sums["len"] / sums["n"],
           "batch/sequences": sums["n"], "memory/peak_rss_mib": peaks[1].item(), "completion/len_max": peaks[0].item(),
           "completion/truncated_frac": sums["truncated"] / sums["n"], "tokens": sums["len"], **sampling_stats}
    for name in batch.parts:
        n = sums[f"{name}/n"]
        out[f"reward/{name}/mean"] = sums[f"{name}/sum"] / n if n else math.nan
        out[f"reward/{name}/errors"] = sums[f"{name}/errors"]
        out[f"reward/{name}/timeouts"] = sums[f"{name}/timeouts"]
    out.update(logged_metrics(batch.report.metrics, d))
    return out


def logged_metrics(logged: dict[str, list[float]], d) -> dict:
    """``reward_log/<name>``: the mean of the values reward functions passed to ``log_metric(name, value)``
    this step, over every call, refill round and rank (TRL's ``log_metric`` averages likewise)."""
    names = sorted(set().union(*d.gather_objects(sorted(logged))))  # a rank may log names others did not
    sums = d.sum_floats({key: value for name in names
                         for key, value in ((f"{name}/sum", math.fsum(logged.get(name, []))),
                                            (f"{name}/n", float(len(logged.get(name, [])))))})
    return {f"reward_log/{name}": sums[f"{name}/sum"] / sums[f"{name}/n"] if sums[f"{name}/n"] else math.nan
            for name in names}


def check_rewards(s: Setup, batch: Scored, step: int) -> None:
    """``reward_fail_fast``: stop before a step trains when one of its reward functions gave no value on any
    sample it scored (it raised, timed out, or returned nothing usable), so only the fallback would be left.

    The counts are summed over refill rounds and ranks, so every rank stops at the same step, together.
    """
    report = batch.report
    counts = s.dist.sum_floats({"scored": float(report.scored),
                                **{f"failed/{name}": float(batch.errors[name] + batch.timeouts[name])
                                   for name in batch.errors}})
    dead = [name for name in batch.errors if counts["scored"] and counts[f"failed/{name}"] == counts["scored"]]
    if dead:
        name = dead[0]
        raise RewardFailed(f"reward {name} got reward_fallback on every sample of step {step} "
                           f"({int(counts['scored'])} samples); its first fault: "
                           f"{report.first_error.get(name, 'on another rank')}; the step was not trained. Fix the "
                           "function, or set reward_fail_fast=false to train on with the fallback")


def log_completions(s: Setup, step: int, batch: Scored) -> None:
    n = min(s.cfg.output.log_completions, len(batch.completions))
    if n == 0:
        return
    G = s.cfg.rollout.num_generations
    sink = JsonlSink(s.run_dir / "completions.jsonl")
    report = batch.report
    for i in range(n):
        failed = [name for name, mask in report.failed.items() if mask[i]]
        row = {"step": step, "prompt": batch.rows[i // G]["prompt"], "completion": batch.completions[i],
               "reward": batch.rewards[i].item(), "advantage": float(batch.advantages[i])}
        row.update({f"reward/{k}": None if k in failed else v[i].item() for k, v in batch.parts.items()})
        row["reward_errors"] = failed  # the functions whose value here is the fallback (written as null above)
        row.update({f"extra/{column}": values[i] for column, values in report.extra.items()})
        sink.write(row)


def one_step(s: Setup, step: int, sinks: list) -> dict:
    """Stages 1–8 of one step (without eval and checkpoint); returns the step's metrics."""
    t_step = time.perf_counter()
    with s.full_weights():
        batch, sampling_stats = sample_batch(s, step)  # 1–4
    if s.cfg.reward_fail_fast:
        check_rewards(s, batch, step)
    t_rollout = time.perf_counter() - t_step
    batch, metrics = update(s, batch)  # 5–7
    metrics.update(step_metrics(batch, sampling_stats, s.dist))
    elapsed = time.perf_counter() - t_step
    metrics.update({"step": step, "time/rollout": t_rollout, "time/generate": batch.seconds.get("generate", 0.0),
                    "time/reward": batch.seconds.get("reward", 0.0), "time/step": elapsed,
                    "tokens_per_s": metrics.pop("tokens") / elapsed})
    for sink in sinks:  # 8 (rank 0 alone has sinks)
        sink.write(metrics)
    if s.dist.is_main:
        log_completions(s, step, batch)
    return metrics


def trainer_state(s: Setup, step: int) -> dict:
    """Collective: every rank's RNG state is gathered (rank r restores its own on resume), and under FSDP the
    optimizer state."""
    return {"step": step, "optimizer": s.weights.optimizer_state(s.optimizer), "scheduler": s.scheduler.state_dict(),
            "data": s.source.state_dict(), "rng": s.dist.gather_objects(rng_state())}


def checkpoint(s: Setup, step: int) -> None:
    """Every rank calls it (the state gathers are collective); rank 0 alone writes."""
    state = trainer_state(s, step)
    s.weights.gather()
    if s.dist.is_main:
        save_checkpoint(s.run_dir, step, s.weights, s.tokenizer, state, s.cfg.output.keep_last,
                        card=model_card(s.cfg, step, s.last_eval))


def train(cfg: Config, run_dir: Path, resume: str | None = None) -> dict:
    """Run steps up to ``cfg.train.steps``, resuming from a checkpoint when asked; returns the held-out
    evaluation before and after (``{"finished": True}`` when a resumed run had nothing left to do). The run
    directory is held (``train/rundir.py``) from before the first write to the end: one writer at a time."""
    with hold_run_dir(run_dir):
        s = build(cfg, run_dir)
        try:
            return _train(s, cfg, run_dir, resume)
        except Exception as err:
            if s.dist.active and is_collective_error(err) and not isinstance(err, CollectiveFailure):
                raise failure(s.dist, "(DDP gradient all-reduce)", err) from err
            raise
        finally:
            s.rewards.close()
            shutdown(s.dist)


def _sinks(cfg: Config, run_dir: Path) -> list:
    """metrics.jsonl, then each tracker of output.report_to (output.tensorboard and wandb_mode add theirs)."""
    out = cfg.output
    trackers = set(out.report_to) | {name for name, on in (("tensorboard", out.tensorboard),
                                                          ("wandb", out.wandb_mode)) if on}
    sinks = [JsonlSink(run_dir / "metrics.jsonl")]
    if "tensorboard" in trackers:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if "wandb" in trackers:
        sinks.append(WandbSink(run_dir, out.wandb_mode or "online", config_to_dict(cfg)))
    if "trackio" in trackers:
        sinks.append(TrackioSink(run_dir, config_to_dict(cfg)))
    return sinks


def _train(s: Setup, cfg: Config, run_dir: Path, resume: str | None) -> dict:
    main = s.dist.is_main
    resumed = resume_from(s, resume)  # first: a resume that cannot be done is the one line printed
    say0(s, s.memory_note)
    start = 0
    if resumed is not None:
        found, start = resumed
        if start >= cfg.train.steps:
            say0(s, f"run {run_dir} already finished at step {start}; nothing to do")
            return {"before": {}, "after": {}, "finished": True}
        say0(s, f"resuming {run_dir} from {found.name}")
    elif main:
        clear_run_files(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        say(f"run directory: {run_dir}" + (f" ({s.dist.world} processes)" if s.dist.active else ""))
    sinks = _sinks(cfg, run_dir) if main else []
    try:
        before = eval_all(s, 0) if start == 0 else {}
        if before:
            say(f"held-out before training: {json.dumps(before)}")
        if _steps(s, cfg, start, sinks):
            return {"before": before, "after": {}, "interrupted": True}
        after = eval_all(s, cfg.train.steps)
        if after:
            say(f"held-out after training:  {json.dumps(after)}")
            final = run_dir / "checkpoints" / f"step-{cfg.train.steps}"
            if final.is_dir():  # the last checkpoint was written before this evaluation: its card gets it now
                (final / "README.md").write_text(model_card(cfg, cfg.train.steps, s.last_eval))
        return {"before": before, "after": after, "main": main}
    finally:
        for sink in sinks[1:]:  # TensorBoard, W&B: flush and close
            sink.close()


def _steps(s: Setup, cfg: Config, start: int, sinks: list) -> bool:
    """Steps ``start+1 .. cfg.train.steps`` with eval and checkpoints; True when stopped by a signal."""
    main = s.dist.is_main
    stop = StopSignal()
    skipped_in_a_row = 0
    with stop, ConsoleProgress(cfg.train.steps, cfg.output.progress and main) as progress:
        progress.update(start, {})
        for step in range(start + 1, cfg.train.steps + 1):
            metrics = one_step(s, step, sinks)
            progress.update(step, metrics)
            stopping = s.dist.any(stop.requested)  # torchrun signals every rank, but not at the same step
            # The same on every rank: the skip decision comes from the all-reduced gradient's norm.
            skipped_in_a_row = skipped_in_a_row + 1 if metrics["update/skipped_nonfinite"] else 0
            if skipped_in_a_row >= cfg.train.max_nonfinite_steps:
                checkpoint(s, step)
                raise TrainingDiverged(f"{skipped_in_a_row} steps in a row had a NaN/inf loss or gradient (last at "
                                       f"step {step}); weights were left untouched and saved; lower train.lr or "
                                       "check the rewards")
            if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                eval_all(s, step)
            due = cfg.output.save_every and step % cfg.output.save_every == 0
            if due or step == cfg.train.steps or stopping:
                checkpoint(s, step)
            if stopping:
                say0(s, f"stopped by signal after step {step}; checkpoint written; continue with --resume auto")
                return True
    return False
