"""Plots (``plots/*.png``) and a short ``report.md`` from a run directory's JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("reward", ["reward/mean"]),
    ("accuracy", ["accuracy"]),
    ("kl", ["kl/mean"]),
    ("entropy", ["entropy"]),
    ("length", ["completion/len_mean"]),
    ("clip", ["clip/low_frac", "clip/high_frac"]),
]


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


def write_plots(run_dir: Path) -> list[Path]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = read_jsonl(run_dir / "eval.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for name, keys in PANELS:
        series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in keys}
        if not any(series.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, points in series.items():
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, alpha=0.3, linewidth=1)
                ax.plot(steps, _smooth(list(values), 10), label=key, linewidth=2)
        if name == "accuracy" and evals:
            ax.plot([e["step"] for e in evals], [e["eval/pass@1"] for e in evals], "o-",
                    label="held-out pass@1")
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    plots = write_plots(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = read_jsonl(run_dir / "eval.jsonl")
    lines = [f"# Run report: {run_dir.name}", ""]
    if evals:
        lines += ["## Held-out evaluation", "",
                  "| step | " + " | ".join(k for k in evals[0] if k != "step") + " |",
                  "|---" * len(evals[0]) + "|"]
        lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in e.values()) + " |"
                  for e in evals]
        lines.append("")
    if rows:
        total = sum(r.get("time/step", 0) for r in rows)
        last = rows[-10:]
        mean = lambda k: sum(r.get(k) or 0 for r in last) / len(last)  # noqa: E731
        lines += ["## Training", "", f"- steps: {len(rows)}, wall time in steps: {total:.1f} s "
                  f"({total / len(rows):.2f} s/step)",
                  f"- last 10 steps: reward {mean('reward/mean'):.3f}, accuracy {mean('accuracy'):.3f}, "
                  f"KL {mean('kl/mean'):.4f}, length {mean('completion/len_mean'):.2f}", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
