"""The online training loop: a straight line of numbered stages (docs/architecture.md, One step as data).

    1 sample prompts → 2 rollout → 3 rewards → 4 filter/refill → 5 advantages → 6 log-prob passes
    → 7 update (μ passes × mini-batches × micro-batches) → 8 metrics, eval, checkpoint

It never names an algorithm: what differs between GRPO, DAPO, GSPO … is a field of the ``AlgoSpec`` that the
``grouprl.algo`` functions read.

Under ``torchrun`` the same lines run on every rank (docs/distributed.md): every rank draws the same global
prompt list and takes its contiguous slice of whole groups; decisions (refill, stop, skip) come from
all-reduced values, so all ranks take them together; rank 0 alone writes the run directory, evaluates, prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from grouprl.config import Config, dump_config
from grouprl.distributed import CollectiveFailure, failure, is_collective_error, shard, shutdown
from grouprl.errors import TrainingDiverged
from grouprl.logging.card import model_card
from grouprl.logging.completions import write_completions
from grouprl.logging.sinks import ConsoleProgress, open_sinks, say
from grouprl.model.device import peak_memory_mib
from grouprl.model.memory import (
    activation_bytes_per_token,
    micro_batch_rows,
    plan_micro_batches,
    rollout_extents,
)
from grouprl.model.passes import frozen_logprobs
from grouprl.train import step as stages
from grouprl.train.checkpoint import checkpoint
from grouprl.train.evaluation import eval_all
from grouprl.train.metrics import check_rewards, step_metrics
from grouprl.train.resume import StopSignal, clear_run_files, resume_from
from grouprl.train.rundir import hold_run_dir
from grouprl.train.setup import Setup, build, prompt_texts, reward_state
from grouprl.types import SamplingParams, Scored, UpdateInputs, concat, select_groups


def say0(s: Setup, text: str) -> None:
    """Print on rank 0 only."""
    if s.dist.is_main:
        say(text)


def sample_batch(s: Setup, step: int) -> tuple[Scored, dict]:
    """Stages 1–4: prompts → rollout → rewards, refilling dropped groups when the spec has a group filter
    (``needs_refill``: DAPO's dynamic sampling). Returns this rank's groups (``group_ids``: their indices in
    the one-process order) and the sampling stats."""
    cfg, spec, G, B, d = s.cfg, s.spec, s.cfg.rollout.num_generations, s.cfg.train.prompts_per_step, s.dist
    batches, mine, kept, drawn, rounds = [], [], [], 0, 0  # mine, kept: group indices, one-process order
    state = reward_state(s, step - 1)
    while True:
        need = B - len(kept)
        rows = s.source.take(need)  # the same list on every rank: the cursor never depends on the world size
        lo, hi = shard(need, d)
        r = cfg.rollout
        sampling = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                  top_k=r.top_k, seed=cfg.train.seed * 100_003 + step * 101 + rounds,
                                  group_offset=drawn + lo)
        informative = torch.zeros(need, device="cpu")  # host bookkeeping, all-reduced
        if hi > lo:
            batch = stages.rollout_and_score(s.backend, s.tokenizer, s.rewards, rows[lo:hi],
                                             prompt_texts(s, rows[lo:hi]), G, sampling, state)
            batches.append(batch)
            mine += range(drawn + lo, drawn + hi)
            informative[[lo + g for g in stages.informative_groups(batch, G, spec)]] = 1
        if not spec.needs_refill:
            return replace(batch, group_ids=torch.arange(lo, hi, device="cpu")), {}
        kept += [drawn + g for g in torch.nonzero(d.all_reduce(informative)).flatten().tolist()]
        drawn += need
        if len(kept) >= B or rounds >= cfg.train.max_refill_rounds:
            break
        rounds += 1
    joined = concat(batches, s.tokenizer.pad_token_id)
    stats = {"sampling/groups_sampled": float(drawn),
             "sampling/groups_uninformative": float(drawn - len(kept)),
             "sampling/refill_rounds": float(rounds), "sampling/groups_short": float(max(B - len(kept), 0))}
    chosen = set(kept[:B]) if kept else set(mine)
    local = [i for i, g in enumerate(mine) if g in chosen]
    selected = select_groups(joined, local, G) if kept else joined
    group_ids = torch.tensor([mine[i] for i in local], dtype=torch.long, device="cpu")
    return replace(selected, group_ids=group_ids), stats


def update(s: Setup, batch: Scored, step: int = 0) -> tuple[Scored, dict]:
    """Stages 5–7: advantages, the log-prob passes that are needed, and μ × mini-batch optimizer steps;
    returns the batch with its advantages (for completions.jsonl) and the update's metrics."""
    cfg, G, d, spec = s.cfg, s.cfg.rollout.num_generations, s.dist, stages.current_spec(s)
    temp, chunk = cfg.rollout.temperature, cfg.model.logprob_chunk_size
    width = batch.rollout.prompt_ids.shape[1] + batch.rollout.completion_ids.shape[1]
    per_token = activation_bytes_per_token(s.policy, cfg.model.gradient_checkpointing)

    def micro_rows(n: int) -> int:  # sequences per forward/backward for a pass over n sequences
        return cfg.train.micro_batch_size or micro_batch_rows(n, width, per_token, s.activation_budget_mib)

    by_length = not cfg.train.micro_batch_size and cfg.train.micro_batch_order == "length"
    extents = rollout_extents(batch.rollout) if by_length else None

    def plan(rows: torch.Tensor) -> list[torch.Tensor] | None:  # train.micro_batch_order=length
        if extents is None:
            return None
        rows = rows.cpu()
        return plan_micro_batches(extents[0][rows], extents[1][rows], rows // G, per_token,
                                  s.activation_budget_mib)

    mbs = micro_rows(batch.rollout.completion_ids.shape[0])
    use_old, need_old = stages.needs_old_logp(cfg.train.num_iterations, cfg.train.mini_batches, spec)
    t0 = time.perf_counter()
    with s.full_weights(), s.autocast():
        old = frozen_logprobs(s.policy, batch.rollout, G, temp, mbs, chunk) if need_old else None
    t_old = time.perf_counter() - t0
    with s.autocast():
        ref = s.reference.logprobs(batch.rollout, G, temp, mbs, chunk) if s.reference is not None else None
    t_ref = time.perf_counter() - t0 - t_old
    gap, sampled = stages.SamplerGap(), batch.rollout.sampler_logprobs
    if old is not None and sampled is not None:
        gap.add(old, sampled, batch.rollout.completion_mask)
    adv, loss_mask = stages.advantages_stage(batch, G, spec, ref, old, d)
    loss_mask, corrected = stages.correction_stage(batch.rollout, old, loss_mask, spec, d)
    inputs = UpdateInputs(batch.rollout, adv.advantages, loss_mask, old if use_old else None, ref)

    # The policy stays in eval mode for the update too: dropout would make the on-policy ratio differ from 1.
    t0 = time.perf_counter()
    at = {"device": batch.rollout.completion_ids.device}  # row indices live beside the rows they index
    groups = torch.arange(len(batch.rows), **at)
    sums: dict[str, float] = {}
    updates = skipped = 0
    for it in range(cfg.train.num_iterations):
        for j, mini in enumerate(torch.tensor_split(groups, cfg.train.mini_batches)):
            rows = (mini[:, None] * G + torch.arange(G, **at)).flatten()
            counts = stages.global_counts(loss_mask[rows], d)
            if counts.num_tokens == 0:
                continue
            s.optimizer.zero_grad(set_to_none=True)
            key = (cfg.train.seed, step, it, j)
            sel = stages.selection_stage(old, inputs, rows, G, spec, batch, key, d)
            first = old is None and sampled is not None and it == j == 0  # pi_old is this pass's log-probs
            metrics = stages.accumulate_gradients(s.scorer, inputs, rows, G, spec, counts, temperature=temp,
                                                  micro_batch_size=micro_rows(len(rows)), chunk_size=chunk,
                                                  norm_length=cfg.rollout.max_new_tokens, d=d, selection=sel,
                                                  gap=gap if first else None,
                                                  plan=plan(rows))
            # DDP's all-reduce gives every rank the same gradients, so the same norm and skip decision.
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
    out.update({k: float(v) for k, v in adv.metrics.items()} | corrected | stages.adapt_entropy(s, out))
    if sampled is not None:
        out.update(gap.metrics(d))
    out.update({"update/steps": updates, "update/skipped_nonfinite": skipped,
                "lr": s.scheduler.get_last_lr()[0], "time/logprobs": t_old + t_ref,
                "time/old_logprobs": t_old, "time/reference": t_ref, "time/update": time.perf_counter() - t0})
    return replace(batch, advantages=adv.advantages), out


def one_step(s: Setup, step: int, sinks: list) -> dict:
    """Stages 1–8 of one step (without eval and checkpoint); returns the step's metrics."""
    t_step = time.perf_counter()
    with s.full_weights():
        batch, sampling_stats = sample_batch(s, step)  # 1–4
    if s.cfg.reward_fail_fast:
        check_rewards(batch, step, s.dist)
    t_rollout = time.perf_counter() - t_step
    batch, metrics = update(s, batch, step)  # 5–7
    metrics.update(step_metrics(batch, sampling_stats, s.dist))
    elapsed = time.perf_counter() - t_step
    seconds = batch.seconds
    metrics.update({"step": step, "time/rollout": t_rollout, "time/generate": seconds.get("generate", 0.0),
                    "time/reward": seconds.get("reward", 0.0), "time/step": elapsed,
                    "tokens_per_s": metrics.pop("tokens") / elapsed})
    metrics.update(peak_memory_mib(s.device))  # on CUDA: the step's peak, then reset for the next one
    for sink in sinks:  # 8 (rank 0 alone has sinks)
        sink.write(metrics)
    if s.dist.is_main:
        write_completions(s.run_dir / "completions.jsonl", step, batch, s.cfg.output.log_completions,
                          s.cfg.rollout.num_generations)
    return metrics


def train(cfg: Config, run_dir: Path, resume: str | None = None) -> dict:
    """Run steps up to ``cfg.train.steps``, resuming from a checkpoint when asked; returns the held-out
    evaluation before and after (``{"finished": True}`` when a resumed run had nothing left to do). The run
    directory is held (``train/rundir.py``) from before the first write to the end: one writer at a time."""
    # SIGINT/SIGTERM from here on (torchrun, a scheduler, Ctrl-C) stop the run at the next step boundary.
    with hold_run_dir(run_dir), StopSignal() as stop:
        s = build(cfg, run_dir)
        try:
            return _train(s, cfg, run_dir, resume, stop)
        except Exception as err:
            if s.dist.active and is_collective_error(err) and not isinstance(err, CollectiveFailure):
                raise failure(s.dist, "(DDP gradient all-reduce)", err) from err
            raise
        finally:
            s.close()
            shutdown(s.dist)


def _train(s: Setup, cfg: Config, run_dir: Path, resume: str | None, stop: StopSignal) -> dict:
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
    sinks = open_sinks(cfg, run_dir) if main else []
    try:
        before = eval_all(s, 0) if start == 0 else {}
        if before:
            say(f"held-out before training: {json.dumps(before)}")
        if _steps(s, cfg, start, sinks, stop):
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


def _steps(s: Setup, cfg: Config, start: int, sinks: list, stop: StopSignal) -> bool:
    """Steps ``start+1 .. cfg.train.steps`` with eval and checkpoints; True when stopped by a signal."""
    main = s.dist.is_main
    skipped_in_a_row = 0
    with ConsoleProgress(cfg.train.steps, cfg.output.progress and main) as progress:
        progress.update(start, {})
        if s.dist.any(stop.requested):  # signalled while loading or evaluating: no step to finish
            say0(s, f"stopped by signal before step {start + 1}; nothing new to save")
            return True
        for step in range(start + 1, cfg.train.steps + 1):
            metrics = one_step(s, step, sinks)
            progress.update(step, metrics)
            stopping = s.dist.any(stop.requested)  # torchrun signals every rank, but not at the same step
            # The same on every rank: the skip decision comes from the all-reduced gradient's norm.
            skipped_in_a_row = skipped_in_a_row + 1 if metrics["update/skipped_nonfinite"] else 0
            if skipped_in_a_row >= cfg.train.max_nonfinite_steps:
                checkpoint(s, step)
                raise TrainingDiverged(f"{skipped_in_a_row} steps in a row had a NaN/inf loss or gradient "
                                       f"(last at step {step}); weights were left untouched and saved; lower "
                                       "train.lr or check the rewards")
            if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                eval_all(s, step)
            due = cfg.output.save_every and step % cfg.output.save_every == 0
            if due or step == cfg.train.steps or stopping:
                checkpoint(s, step)
            if stopping:
                say0(s, f"stopped by signal after step {step}; checkpoint written; "
                        "continue with --resume auto")
                return True
    return False
