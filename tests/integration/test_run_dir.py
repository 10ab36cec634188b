"""The run directory is safe to share and to resume: one writer at a time, checkpoints that never run code
(an old pickle is not opened), a damaged newest checkpoint skipped in favour of the one before, and
``output.run_dir`` naming a file refused in one line."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from grouprl.cli.main import main

FAST = ["train.steps=4", "train.prompts_per_step=2", "rollout.num_generations=2", "data.num_eval=0",
        "data.num_train=32", "output.progress=false", "output.plots=false", "train.lr=1e-3",
        "output.save_every=2", "output.keep_last=3", "algorithm=grpo", "eval.every=0"]


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the values that differ between identical runs (times, memory)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items()
                    if not k.startswith(("time/", "memory/")) and k != "tokens_per_s"})
    return out


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints step-2 and step-4."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *FAST, f"output.run_dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture
def run(straight, tmp_path) -> Path:
    """A copy of the straight run to damage."""
    return Path(shutil.copytree(straight, tmp_path / "run"))


class Plant:
    """Unpickling this creates a file: what a hostile trainer_state.pt would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _pickle_only(checkpoint: Path, marker: Path) -> None:
    """Turn ``checkpoint`` into one of the old format, whose trainer state is a (hostile) pickle."""
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (checkpoint / name).unlink()
    (checkpoint / "trainer_state.pt").write_bytes(pickle.dumps({"step": 4, "optimizer": Plant(marker)}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _reshape_embeddings(path: Path) -> None:
    weights = load_file(path)
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"][:, :8].contiguous()
    save_file(weights, path)


DAMAGE = {
    "truncated model.safetensors": (lambda c, m: _truncate(c / "model.safetensors"),
                                    "model.safetensors does not load"),
    "missing model.safetensors": (lambda c, m: (c / "model.safetensors").unlink(),
                                  "model.safetensors is missing"),
    "weights of another shape": (lambda c, m: _reshape_embeddings(c / "model.safetensors"),
                                 "model.embed_tokens.weight is [100, 8] torch.float32, "
                                 "the model's is [100, 128]"),
    "trainer_state.json not JSON": (lambda c, m: (c / "trainer_state.json").write_text('{"step": 4, "opti'),
                                    "trainer_state.json is not valid JSON"),
    "trainer_state.safetensors garbage":
        (lambda c, m: (c / "trainer_state.safetensors").write_bytes(b"\x80" * 99),
         "trainer_state.safetensors does not load"),
    "an old pickle only": (_pickle_only, "it is not loaded, because unpickling a file can run any code"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(run, straight, tmp_path, capsys, damage):
    """--resume auto says in one line which checkpoint it skipped and why, resumes from step-2, and the
    steps it re-runs equal the straight run's."""
    marker = tmp_path / "pwned"
    spoil, reason = DAMAGE[damage]
    spoil(run / "checkpoints" / "step-4", marker)
    capsys.readouterr()
    assert main(["train", "--resume", "auto", *FAST, f"output.run_dir={run}"]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "step-4" in skipped[0] and reason in skipped[0], err
    assert f"resuming {run} from step-2" in err and "Traceback" not in err
    assert rows(run) == rows(straight)
    assert not marker.exists()


def test_a_pickle_beside_the_new_files_is_never_opened(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for checkpoint in ("step-2", "step-4"):
        (run / "checkpoints" / checkpoint / "trainer_state.pt").write_bytes(pickle.dumps(Plant(marker)))
    assert main(["train", "--resume", "auto", *FAST, "train.steps=5", f"output.run_dir={run}"]) == 0
    assert f"resuming {run} from step-4" in capsys.readouterr().err
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5]
    assert not marker.exists()


def test_no_checkpoint_that_loads_is_one_line_and_exit_2(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for checkpoint in ("step-2", "step-4"):
        _pickle_only(run / "checkpoints" / checkpoint, marker)
    capsys.readouterr()
    before = (run / "metrics.jsonl").read_text()
    assert main(["train", "--resume", "auto", *FAST, f"output.run_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--resume auto: no checkpoint of {run} loads (step-4: " in err and "step-2: " in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing was truncated or re-run
    assert not marker.exists()

    assert main(["train", "--resume", str(run / "checkpoints" / "step-2"), *FAST,
                 f"output.run_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unpickling a file can run any code" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_run_dir_that_is_a_file_is_one_line(tmp_path, capsys, where):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    run_dir = file if where == "file" else file / "run"
    assert main(["train", *FAST, f"output.run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "Errno" not in err, err
    message = "is a file, not a directory" if where == "file" else "cannot create it (Not a directory)"
    assert f"output.run_dir {run_dir}: {message}; choose another output.run_dir" in err
    assert file.read_text() == "keep me"


HOLDER = """
import sys
from pathlib import Path
from grouprl.train.rundir import hold_run_dir
with hold_run_dir(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held(run_dir: Path):
    """Another process holds ``run_dir`` for the duration; yields its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_a_held_run_directory_is_in_use_whatever_else_holds(run, tmp_path, capsys):
    """A live run's directory is "in use by pid N" before it is "already holds a run", with or without
    --resume, and for a compare arm; the directory is left as it was."""
    before = (run / "metrics.jsonl").read_text()
    with held(run) as pid:
        for resume in ([], ["--resume", "auto"]):
            capsys.readouterr()
            assert main(["train", *resume, *FAST, f"output.run_dir={run}"]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert f"run directory {run} is in use by pid {pid}" in err and "already holds" not in err
    assert (run / "metrics.jsonl").read_text() == before

    out = tmp_path / "compare"
    with held(out / "grpo-seed0") as pid:
        assert main(["compare", "--algorithms", "grpo", "--seeds", "1", "--budget-steps", "1",
                     "--out", str(out), *FAST[1:]]) == 2
        assert (f"run directory {out / 'grpo-seed0'} is in use by pid {pid}"
                in capsys.readouterr().err.splitlines()[-1])


GATE = '''
import os
import time

HOLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hold")
calls = 0


def gate(prompts, completions, **kwargs):
    """From its second call (step 2) on, waits while the file ``hold`` exists (at most five minutes)."""
    global calls
    calls += 1
    deadline = time.time() + 300
    while calls > 1 and os.path.exists(HOLD) and time.time() < deadline:
        time.sleep(0.05)
    return [0.0] * len(completions)
'''


def _start(args: list[str], run_dir: Path) -> subprocess.Popen:
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - the process writes it until it ends
    cmd = [sys.executable, "-m", "grouprl", "train", *args, f"output.run_dir={run_dir}"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` ends first or the time runs out."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "timed out; log:\n" + log.read_text()[-3000:]
        time.sleep(0.1)


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_live_run_keeps_its_directory_and_a_killed_one_frees_it(tmp_path, capsys):
    """While a real run waits inside step 2, a second train on its directory exits 2 naming it and the pid,
    and the run finishes with every step logged once. After kill -9 of a run, --resume auto proceeds."""
    (tmp_path / "gate.py").write_text(GATE)
    hold = tmp_path / "hold"
    args = [*FAST, "train.steps=3", "output.save_every=1", "reward_timeout=600",
            f"rewards=[correct_answer, {tmp_path}/gate.py:gate]"]

    live = tmp_path / "live"
    hold.touch()
    first = _start(args, live)
    _wait_for(lambda: _steps(live) == [1], first, live.with_suffix(".log"))
    for resume in ([], ["--resume", "auto"]):
        capsys.readouterr()
        assert main(["train", *resume, *args, f"output.run_dir={live}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"run directory {live} is in use by pid {first.pid}" in err, err
    hold.unlink()
    assert first.wait(timeout=300) == 0, live.with_suffix(".log").read_text()[-3000:]
    assert _steps(live) == [1, 2, 3]

    killed = tmp_path / "killed"
    hold.touch()
    second = _start(args, killed)
    _wait_for(lambda: (killed / "checkpoints" / "step-1").is_dir(), second, killed.with_suffix(".log"))
    second.kill()
    second.wait()
    hold.unlink()
    capsys.readouterr()
    assert main(["train", "--resume", "auto", *args, f"output.run_dir={killed}"]) == 0
    assert f"resuming {killed} from step-1" in capsys.readouterr().err
    assert _steps(killed) == [1, 2, 3]
