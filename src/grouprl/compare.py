"""``grouprl compare``: several algorithms on the same task, prompts, seeds and step budget; one report.

Every arm (algorithm × seed) is an ordinary run directory ``<out>/<algorithm>-seed<k>``. Arms run one after
another; re-running the same command skips finished arms and resumes an interrupted one from its last
checkpoint. The report (``<out>/report.md`` and PNGs) shows held-out greedy pass@1 against step and against
wall time (mean over seeds, with the min–max band), the training curves, a final table and the preset rows.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from grouprl.algo import PRESETS  # noqa: E402
from grouprl.logging.report import read_jsonl  # noqa: E402

CURVES = ["completion/len_mean", "kl/mean", "entropy", "clip/high_frac", "frac_reward_zero_std",
          "reward/mean"]


def arm_dir(out: Path, algorithm: str, seed: int) -> Path:
    return out / f"{algorithm}-seed{seed}"


def arm_finished(run_dir: Path, steps: int) -> bool:
    evals = read_jsonl(run_dir / "eval.jsonl")
    return (run_dir / "checkpoints" / f"step-{steps}").is_dir() and any(e.get("step") == steps for e in evals)


def arm_overrides(algorithm: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """The overrides an arm of ``algorithm`` takes, and the ``algo.*`` ones it does not: an override given for
    every arm (``algo.overlong_max_len=8`` for DAPO's shaping) is not applied to an algorithm whose pieces do
    not read that field, where a single run would refuse it."""
    from grouprl.algo import AlgoSpec, preset
    from grouprl.algo.presets import CHOOSING_KEYS
    from grouprl.config import parse_override

    fields = {f.name for f in dataclasses.fields(AlgoSpec)}
    given = {key: value for text in overrides for key, value in parse_override(text).get("algo", {}).items()}
    spec = preset(algorithm, **{k: v for k, v in given.items() if k in CHOOSING_KEYS})
    unread = {k for k in given if k in fields and k not in CHOOSING_KEYS and not spec.reads(k)}
    kept = [text for text in overrides
            if not (text.startswith("algo.") and text.split("=", 1)[0][5:] in unread)]
    return kept, [text for text in overrides if text not in kept]


def run_arms(algorithms: list[str], seeds: int, steps: int, out: Path, config: str | None,
             overrides: list[str], say=print) -> None:
    from grouprl.config import load_config
    from grouprl.train.loop import train

    for algorithm in algorithms:
        arm_args, dropped = arm_overrides(algorithm, overrides)
        if dropped:
            say(f"compare: {algorithm} reads none of {', '.join(dropped)}; not applied to its arms")
        for seed in range(seeds):
            run_dir = arm_dir(out, algorithm, seed)
            if arm_finished(run_dir, steps):
                say(f"compare: {run_dir.name} already finished, reused")
                continue
            cfg = load_config(config, [*arm_args, f"algorithm={algorithm}", f"train.seed={seed}",
                                       f"train.steps={steps}", f"output.run_dir={run_dir}",
                                       "output.progress=false"])
            say(f"compare: running {run_dir.name}")
            resume = "auto" if (run_dir / "metrics.jsonl").exists() else None
            train(cfg, run_dir, resume=resume)


def _mean_band(series: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    n = min(len(s) for s in series)
    cols = [[s[i] for s in series] for i in range(n)]
    return [statistics.fmean(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def _plot(out: Path, name: str, arms: dict[str, list[tuple[list[float], list[float]]]], xlabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for algorithm, runs in arms.items():
        xs, _, _ = _mean_band([r[0] for r in runs])
        mean, low, high = _mean_band([r[1] for r in runs])
        n = min(len(xs), len(mean))
        ax.plot(xs[:n], mean[:n], label=algorithm, linewidth=2)
        ax.fill_between(xs[:n], low[:n], high[:n], alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _smooth(values: list[float], window: int = 10) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1): i + 1]) for i in range(len(values))]


def write_report(algorithms: list[str], seeds: int, steps: int, out: Path, command: str) -> Path:
    by_arm = {a: [(read_jsonl(arm_dir(out, a, s) / "metrics.jsonl"),
                   read_jsonl(arm_dir(out, a, s) / "eval.jsonl")) for s in range(seeds)] for a in algorithms}
    plots = [
        _plot(out, "held-out pass@1 vs step",
              {a: [([e["step"] for e in ev], [e["eval/pass@1"] for e in ev]) for _, ev in runs]
               for a, runs in by_arm.items()}, "step"),
        _plot(out, "held-out pass@1 vs wall time",
              {a: [(_eval_times(m, ev), [e["eval/pass@1"] for e in ev]) for m, ev in runs]
               for a, runs in by_arm.items()}, "seconds of training"),
    ]
    k_key = next((k for k in by_arm[algorithms[0]][0][1][0]
                  if k.startswith("eval/pass@") and k != "eval/pass@1"), None)
    if k_key:
        curves = {a: [([e["step"] for e in ev], [e[k_key] for e in ev]) for _, ev in runs]
                  for a, runs in by_arm.items()}
        plots.append(_plot(out, f"held-out {k_key[5:]} vs step", curves, "step"))
    for key in CURVES:
        plots.append(_plot(out, key, {a: [([r["step"] for r in m], _smooth([r.get(key) or 0.0 for r in m]))
                                          for m, _ in runs] for a, runs in by_arm.items()}, "step"))
    lines = [f"# grouprl compare: {', '.join(algorithms)}", "", f"Command: `{command}`", "",
             f"{seeds} seed(s) per algorithm, {steps} steps each, same prompts and budget; "
             "held-out greedy pass@1.",
             "Tokens are summed over seeds. Arms run one after another in one process, so the peak RSS "
             "column is that process's peak so far (the arms share it), not a per-arm figure.",
             "", "| algorithm | pass@1 start | pass@1 end (mean ± 95% CI) | per seed | pass@k end | "
             "tokens generated | wall time per seed (s) | process peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for algorithm, runs in by_arm.items():
        finals = [ev[-1]["eval/pass@1"] for _, ev in runs]
        n_prompts = runs[0][1][-1]["eval/num_prompts"]
        mean = statistics.fmean(finals)
        # binomial standard error over all seeds' prompts, plus the spread between seeds
        se = math.sqrt(max(mean * (1 - mean), 1e-12) / (n_prompts * len(finals)))
        if len(finals) > 1:
            se = math.sqrt(se**2 + statistics.variance(finals) / len(finals))
        tokens = sum(r["completion/len_mean"] * r.get("batch/sequences", 0) for m, _ in runs for r in m)
        wall = statistics.fmean(sum(r["time/step"] for r in m) for m, _ in runs)
        rss = max((r.get("memory/peak_rss_mib") or 0) for m, _ in runs for r in m)
        pass_k = f"{statistics.fmean(ev[-1][k_key] for _, ev in runs):.3f} ({k_key[5:]})" if k_key else "-"
        lines.append(f"| {algorithm} | {runs[0][1][0]['eval/pass@1']:.3f} | {mean:.3f} ± {1.96 * se:.3f} | "
                     f"{', '.join(f'{f:.3f}' for f in finals)} | {pass_k} | {tokens:,.0f} | {wall:.0f} | "
                     f"{rss:.0f} |")
    lines += ["", "## What differed: the preset rows", "", "| algorithm | " + " | ".join(_ROW) + " |",
              "|---" * (len(_ROW) + 1) + "|"]
    for algorithm in algorithms:
        spec = dataclasses.asdict(PRESETS[algorithm])
        lines.append(f"| {algorithm} | " + " | ".join(_cell(spec[k]) for k in _ROW) + " |")
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


_ROW = ["advantage", "importance_sampling_level", "clip", "epsilon_low", "epsilon_high", "loss_type",
        "filters", "shaping", "retain_k", "beta"]


def _cell(value: object) -> str:
    """A preset field in a table cell: a list of pieces comma-separated, ``-`` when empty."""
    return (", ".join(value) or "-") if isinstance(value, tuple) else str(value)


def _eval_times(metrics: list[dict], evals: list[dict]) -> list[float]:
    """Cumulative training seconds at each evaluation's step."""
    elapsed, total = {0: 0.0}, 0.0
    for row in metrics:
        total += row["time/step"]
        elapsed[row["step"]] = total
    return [elapsed.get(e["step"], total) for e in evals]
