"""What a run leaves behind can be read back: TensorBoard holds metrics.jsonl's values; report and show work
from the run directory alone."""

import json

import pytest
import torch

from grouprl.cli.main import main
from tolerance import assert_close

FAST = ["train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=8",
        "eval.num_samples=0", "data.num_train=64", "output.progress=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("outputs") / "run"
    assert main(["train", *FAST, "output.tensorboard=true", f"output.run_dir={path}"]) == 0
    return path


def test_tensorboard_holds_the_jsonl_values(run_dir):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward/mean", "loss/policy", "kl/mean", "entropy", "grad_norm", "completion/len_mean"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2]
        # TensorBoard stores float32: one rounding of each value
        assert_close([e.value for e in events], [r[key] for r in rows], n=1, dtype=torch.float32, msg=key)


def test_report_regenerates_plots(run_dir):
    for png in (run_dir / "plots").glob("*.png"):
        png.unlink()
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (len(list((run_dir / "plots").glob("*.png"))) == 6
            and "## Training" in (run_dir / "report.md").read_text())


def test_show_prints_completions(run_dir, capsys):
    assert main(["show", str(run_dir), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 1" in out and "advantage" in out
    assert main(["show", str(run_dir), "--step", "99"]) == 2


def test_wandb_offline_writes_its_run_directory(tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / "wb"
    assert main(["train", *FAST, "output.wandb_mode=offline", f"output.run_dir={run}"]) == 0
    assert any((run / "wandb").glob("offline-run-*"))
