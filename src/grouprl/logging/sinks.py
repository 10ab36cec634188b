"""Where metrics go: ``metrics.jsonl`` (one line per step, always), the trackers of ``output.report_to``
(TensorBoard, Weights & Biases, Trackio) and a live console progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from grouprl.config import Config
from grouprl.config.load import config_to_dict
from grouprl.errors import ConfigError


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")


class TensorBoardSink:
    """TensorBoard event files under ``<run>/tensorboard`` with the same metric names as metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - depends on the optional extra
            raise ConfigError("output.tensorboard=true needs tensorboard: "
                              "pip install 'grouprl[tensorboard]'") from None
        self.writer = SummaryWriter(str(path))

    def write(self, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            value = _jsonable(value)
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Weights & Biases (the ``wandb`` extra); ``output.wandb_mode=offline`` needs no network and writes
    under ``<run>/wandb``."""

    def __init__(self, run_dir: Path, mode: str, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("output.wandb_mode needs wandb: pip install 'grouprl[wandb]'") from None
        self.run = wandb.init(project="grouprl", name=run_dir.name, dir=str(run_dir), mode=mode,
                              config=config)

    def write(self, row: dict) -> None:
        values = {k: _jsonable(v) for k, v in row.items() if k != "step"}
        self.run.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


class TrackioSink:
    """Trackio (``pip install trackio``), Hugging Face's local-first tracker: a project named grouprl, one run
    per run directory."""

    def __init__(self, run_dir: Path, config: dict) -> None:
        try:
            import trackio
        except ImportError:
            raise ConfigError("output.report_to=[trackio] needs trackio: pip install trackio") from None
        self.trackio = trackio
        trackio.init(project="grouprl", name=run_dir.name, config=config)

    def write(self, row: dict) -> None:
        values = {k: _jsonable(v) for k, v in row.items() if k != "step"}
        self.trackio.log({k: v for k, v in values.items() if isinstance(v, (int, float))},
                         step=int(row["step"]))

    def close(self) -> None:
        self.trackio.finish()


class ConsoleProgress:
    """A rich progress bar showing step, reward, accuracy, KL, completion length, s/step and ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled and total > 0
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            disable=not self.enabled, transient=False, console=None,
        )
        self.task = self.progress.add_task("train", total=total, stats="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict) -> None:
        get = lambda k: float(metrics.get(k) or 0.0)  # noqa: E731
        stats = (f"reward {get('reward/mean'):.3f} acc {get('accuracy'):.3f} kl {get('kl/mean'):.4f} "
                 f"len {get('completion/len_mean'):.1f} {get('time/step'):.2f}s/step")
        self.progress.update(self.task, completed=step, stats=stats)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def open_sinks(cfg: Config, run_dir: Path) -> list:
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
