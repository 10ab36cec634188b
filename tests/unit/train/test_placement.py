"""Mixed-device bugs caught without a GPU (``tests/device_guard.py``): no tensor factory in grouprl's source
omits its device, checked from the source and over a real one-step run of the embedded default (train step,
both rollout backends, evaluation); and a tensor planted without a device is caught by both checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from device_guard import SRC, FactoryGuard, factory_calls_without_device
from grouprl.config import load_config
from grouprl.train import step as stages
from grouprl.train.loop import train

SHORT = ["train.steps=1", "train.prompts_per_step=2", "rollout.num_generations=2", "data.num_eval=2",
         "eval.num_samples=2", "data.num_train=8", "output.progress=false", "output.plots=false",
         "algo.beta=0.04", "reward_isolation=false"]


def run_guarded(tmp_path: Path, *overrides: str) -> list[str]:
    cfg = load_config(None, [*SHORT, f"output.run_dir={tmp_path}", *overrides])
    with FactoryGuard(cfg.model.device if cfg.model.device != "auto" else "cpu") as guard:
        train(cfg, tmp_path)
    return guard.found


def test_every_factory_in_the_source_names_its_device():
    assert factory_calls_without_device() == []


@pytest.mark.parametrize("backend", ["fast", "hf"])
def test_a_step_and_an_evaluation_create_no_tensor_without_a_device(tmp_path, backend):
    # beta > 0: the reference pass; two iterations: the pi_old pass and a second update
    found = run_guarded(tmp_path, f"rollout.backend={backend}", "train.num_iterations=2")
    assert found == []


def planted(name: str, source: str, where: str = "train/step.py"):
    """A function compiled as if it were written in ``src/grouprl/<where>``."""
    namespace = {"torch": torch, "stages": stages, "original": getattr(stages, name)}
    exec(compile(source, str(SRC / where), "exec"), namespace)
    return namespace[name]


def test_a_planted_cpu_only_tensor_is_caught(tmp_path, monkeypatch):
    # a bug of the kind a GPU run meets: a per-sequence tensor made on the host beside the rollout's
    monkeypatch.setattr(stages, "global_counts", planted("global_counts", (
        "def global_counts(loss_mask, d):\n"
        "    padding = torch.zeros(loss_mask.shape[0], 1)  # on the CPU, whatever loss_mask's device\n"
        "    return original(loss_mask + padding, d)\n")))
    found = run_guarded(tmp_path)
    assert found and all("train/step.py" in f and "torch.zeros without device=" in f for f in found)


def test_the_static_check_catches_a_planted_factory(tmp_path):
    package = tmp_path / "grouprl"
    package.mkdir()
    (package / "ok.py").write_text("import torch\nx = torch.zeros(3, device='cpu')\n"
                                   "'''>>> torch.ones(2)'''\ny = torch.tensor([1], **{'device': 'cpu'})\n")
    (package / "bad.py").write_text("import torch\n\n\ndef f(n):\n    return torch.arange(n)\n")
    assert factory_calls_without_device(package) == ["grouprl/bad.py:5: torch.arange"]
