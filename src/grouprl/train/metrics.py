"""What a step reports over the global batch (rollout metrics, what reward functions logged) and the
``reward_fail_fast`` check; every value is reduced over ranks, so all ranks see the same numbers."""

from __future__ import annotations

import math
import resource

import torch

from grouprl.distributed import Dist
from grouprl.errors import RewardFailed
from grouprl.types import Scored


def step_metrics(batch: Scored, sampling_stats: dict, d: Dist) -> dict:
    """Rollout metrics of the global batch: sums and counts all-reduced over ranks, maxima max-reduced."""
    r = batch.rollout
    lengths = r.completion_mask.sum(-1).double()
    sums = {"n": float(len(lengths)), "accuracy": batch.accuracy.sum().item(), "len": lengths.sum().item(),
            "truncated": r.truncated.double().sum().item()}
    for name, values in batch.parts.items():
        none_failed = torch.zeros(len(values), dtype=torch.bool, device=values.device)
        failed = batch.report.failed.get(name, none_failed)
        # None (NaN) and fallbacks are not the function's values
        finite = values[~torch.isnan(values) & ~failed]
        sums.update({f"{name}/sum": finite.sum().item(), f"{name}/n": float(len(finite)),
                     f"{name}/errors": float(batch.errors.get(name, 0)),
                     f"{name}/timeouts": float(batch.timeouts.get(name, 0))})
    for name, values in batch.episodes.items():  # multi-turn episodes: turns, tool calls, env tokens ...
        sums[f"episodes/{name}"] = values.double().sum().item()
    sums = d.sum_floats(sums)
    peaks = d.all_reduce(torch.tensor([lengths.max().item() if len(lengths) else 0.0,
                                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024],
                                      device="cpu"), "max")
    out = {"accuracy": sums["accuracy"] / sums["n"], "completion/len_mean": sums["len"] / sums["n"],
           "batch/sequences": sums["n"], "memory/peak_rss_mib": peaks[1].item(),
           "completion/len_max": peaks[0].item(), "completion/truncated_frac": sums["truncated"] / sums["n"],
           "tokens": sums["len"], **sampling_stats}
    for name in batch.parts:
        n = sums[f"{name}/n"]
        out[f"reward/{name}/mean"] = sums[f"{name}/sum"] / n if n else math.nan
        out[f"reward/{name}/errors"] = sums[f"{name}/errors"]
        out[f"reward/{name}/timeouts"] = sums[f"{name}/timeouts"]
    if batch.episodes:
        n, e = sums["n"], {name: sums[f"episodes/{name}"] for name in batch.episodes}
        out.update({"env/turns_mean": e["turns"] / n, "env/tool_calls_mean": e["tool_calls"] / n,
                    "env/tool_errors_mean": e["tool_errors"] / n, "env/turn_limit_frac": e["turn_limit"] / n,
                    "env/token_frac": e["env_tokens"] / max(e["env_tokens"] + sums["len"], 1.0)})
    out.update(logged_metrics(batch.report.metrics, d))
    return out


def logged_metrics(logged: dict[str, list[float]], d: Dist) -> dict:
    """``reward_log/<name>``: the mean of the values reward functions passed to ``log_metric(name, value)``
    this step, over every call, refill round and rank (TRL's ``log_metric`` averages likewise)."""
    names = sorted(set().union(*d.gather_objects(sorted(logged))))  # a rank may log names others did not
    sums = d.sum_floats({key: value for name in names
                         for key, value in ((f"{name}/sum", math.fsum(logged.get(name, []))),
                                            (f"{name}/n", float(len(logged.get(name, [])))))})
    return {f"reward_log/{name}": sums[f"{name}/sum"] / sums[f"{name}/n"] if sums[f"{name}/n"] else math.nan
            for name in names}


def check_rewards(batch: Scored, step: int, d: Dist) -> None:
    """``reward_fail_fast``: stop before a step trains when one of its reward functions gave no value on any
    sample it scored (it raised, timed out, or returned nothing usable), so only the fallback would be left.

    The counts are summed over refill rounds and ranks, so every rank stops at the same step, together.
    """
    report = batch.report
    counts = d.sum_floats({"scored": float(report.scored),
                                **{f"failed/{name}": float(batch.errors[name] + batch.timeouts[name])
                                   for name in batch.errors}})
    dead = [name for name in batch.errors
            if counts["scored"] and counts[f"failed/{name}"] == counts["scored"]]
    if dead:
        name = dead[0]
        raise RewardFailed(f"reward {name} got reward_fallback on every sample of step {step} "
                           f"({int(counts['scored'])} samples); its first fault: "
                           f"{report.first_error.get(name, 'on another rank')}; the step was not trained. "
                           "Fix the function, or set reward_fail_fast=false to train on with the fallback")
