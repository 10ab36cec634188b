"""torchrun on this CPU machine (gloo): 2 processes reproduce 1 process, two "nodes" rendezvous, a killed rank
ends the job, and a world size that cannot hold the batch is refused."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grouprl.cli.main import main
from tolerance import adamw_weight_gap, assert_runs_close

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ARGS = ["train.prompts_per_step=4", "rollout.num_generations=4", "data.num_eval=0", "data.num_train=64",
        "output.progress=false", "train.lr=1e-3", "train.threads=1", "train.micro_batch_size=3"]
# the sampler-vs-trainer gap is itself a rounding difference: another batching gives another one
VOLATILE = ("time/", "memory/", "tokens_per_s", "rollout/logprob_diff", "rollout/kl_sampler")
MICRO_BATCHES_AND_RANKS = 16 // 4 + 2  # a step's gradient sums these terms, in another order with 2 processes


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _torchrun(*launcher: str, args: list[str], **kwargs) -> subprocess.Popen:
    cmd = [TORCHRUN, *launcher, "-m", "grouprl", "train", *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra", [
    ["algorithm=grpo"],  # KL to the reference, seq-mean-token-mean
    ["algorithm=dapo", "algo.overlong_max_len=8", "algo.overlong_buffer_len=2"],  # refill rounds, token mean
    ["algorithm=lite_ppo"],  # batch-level std
    ["algorithm=grpo", "algo.rollout_correction=token_mask"],  # the pi_old pass, ratio sums and maxima
])
def test_two_processes_reproduce_one(tmp_path, extra):
    """Same seed and global batch: loss, grad norm, rewards … of the first 5 steps agree to rounding.

    The default rollout backend seeds each group from (seed, global group index), so both runs sample the
    same completions. One group per micro-batch, so both runs compute the same per-micro-batch gradients
    and differ only in the order they are summed (dynamic sampling leaves the ranks uneven). lr is 1e-4:
    with refills at 1e-3, or with micro-batches that straddle groups, that float32 rounding is amplified
    (near-certain tokens, AdamW) to 1e-5–1e-4 by step 4 (measured; benchmarks/RESULTS.md). The tolerance
    starts at the rounding of the reordered sums, 2e-6 at step 1 (a gradient summed or averaged wrongly
    exceeds it), and grows with AdamW's drift to 7e-4 by step 5."""
    args = [*ARGS, "train.steps=5", "train.lr=1e-4", "train.micro_batch_size=4", *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    proc = _torchrun("--nproc_per_node", "2", "--standalone", args=[*args, f"output.run_dir={two}"])
    assert main(["train", *args, f"output.run_dir={one}"]) == 0
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    a, b = _rows(one), _rows(two)
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5] and set(a[0]) == set(b[0])
    # The sampler-trainer ratio is 1 + float32 rounding, and that rounding depends on the batch shapes each
    # process runs (measured: max 1.0000048 vs 1.0000008 at step 1): the same to 1e-4, reduced over both ranks
    # (a sum instead of a mean or a maximum would be about 2).
    for key in ("rollout_corr/ratio_mean", "rollout_corr/ratio_max"):
        assert all(abs(ra.pop(key, 1.0) - rb.pop(key, 1.0)) < 1e-4 for ra, rb in zip(a, b)), key
    _assert_rows_close(a, b)
    assert sum(r["update/steps"] for r in a) >= 3, "too few updates for the comparison to mean anything"
    assert len({round(r["grad_norm"], 6) for r in a}) > 1


def _assert_rows_close(a: list[dict], b: list[dict], n: int = MICRO_BATCHES_AND_RANKS) -> None:
    assert_runs_close(a, b, n=n, keys=[k for k in a[0] if not k.startswith(VOLATILE)])


def test_two_process_lora_run_resumes_like_one_straight_process(tmp_path):
    """LoRA under DDP, stopped after step 2 and resumed by both ranks from the same checkpoint, gives the rows
    of one process that ran 4 steps straight."""
    args = [*ARGS, "train.lr=1e-4", "train.micro_batch_size=4", "model.lora.r=4", "output.save_every=2",
            "algorithm=grpo"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = _torchrun("--nproc_per_node", "2", "--standalone", args=[*args, "train.steps=2",
                                                                     f"output.run_dir={resumed}"])
    assert main(["train", *args, "train.steps=4", f"output.run_dir={straight}"]) == 0
    out, _ = first.communicate(timeout=240)
    assert first.returncode == 0, out[-3000:]
    second = _torchrun("--nproc_per_node", "2", "--standalone",
                       args=["--resume", "auto", *args, "train.steps=4", f"output.run_dir={resumed}"])
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out[-3000:]
    assert "resuming" in out and (resumed / "checkpoints" / "step-4" / "adapter_model.safetensors").is_file()
    _assert_rows_close(_rows(straight), _rows(resumed))


def test_fsdp2_run_resumed_equals_one_process_and_saves_one_hf_directory(tmp_path):
    """FSDP2 (fully_shard) on 2 processes, stopped after step 2 and resumed: the rows of one process that ran
    4 steps straight, and a checkpoint that is one plain HF directory with the same tensors (to AdamW
    noise)."""
    args = [*ARGS, "train.lr=1e-4", "train.micro_batch_size=4", "output.save_every=2", "algorithm=grpo"]
    straight, sharded = tmp_path / "straight", tmp_path / "sharded"
    first = _torchrun("--nproc_per_node", "2", "--standalone",
                      args=[*args, "train.fsdp=true", "train.steps=2", f"output.run_dir={sharded}"])
    assert main(["train", *args, "train.steps=4", f"output.run_dir={straight}"]) == 0
    out, _ = first.communicate(timeout=240)
    assert first.returncode == 0, out[-3000:]
    second = _torchrun("--nproc_per_node", "2", "--standalone",
                       args=["--resume", "auto", *args, "train.fsdp=true", "train.steps=4",
                             f"output.run_dir={sharded}"])
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out[-3000:]
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ours, theirs = (load_file(d / "checkpoints" / "step-4" / "model.safetensors")
                    for d in (sharded, straight))
    assert set(ours) == set(theirs) and all(ours[k].shape == theirs[k].shape for k in ours)
    rows = _rows(straight)
    # FSDP also sums the clipping norm's squares shard by shard, in another order: one more reduction on the
    # path, as long as the largest tensor plus one term per tensor
    norm = max(t.numel() for t in ours.values()) + len(ours)
    _assert_rows_close(rows, _rows(sharded), MICRO_BATCHES_AND_RANKS + norm)
    gap = adamw_weight_gap([r["lr"] for r in rows])  # 4.7e-4; a weight whose gradient is at rounding level
    # can step the other way: 1.7e-4
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= gap
    AutoModelForCausalLM.from_pretrained(sharded / "checkpoints" / "step-4")


@pytest.mark.parametrize("args,message", [
    (["train.fsdp=true"], "train.fsdp=true shards over processes, but this run has WORLD_SIZE=1"),
    (["train.fsdp=true", "model.lora.r=4"],
     "train.fsdp=true and model.lora.r > 0 are not supported together"),
])
def test_fsdp_on_a_setup_that_cannot_run_it_exits_2(tmp_path, capsys, monkeypatch, args, message):
    if "model.lora.r=4" in args:
        monkeypatch.setenv("WORLD_SIZE", "2")  # refused before the process group would be joined
    run_dir = tmp_path / "run"
    code = main(["train", *ARGS, *args, "train.steps=1", f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not run_dir.exists()


def test_two_nodes_rendezvous_and_train(tmp_path):
    """Two torchrun invocations, one process each, rendezvous on 127.0.0.1 (c10d), train 3 steps together."""
    run_dir = tmp_path / "run"
    port = _free_port()
    args = [*ARGS, "train.steps=3", f"output.run_dir={run_dir}"]
    nodes = [_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                       "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                       "--rdzv_id", "test-two-nodes", args=args)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert [r["step"] for r in _rows(run_dir)] == [1, 2, 3]
    assert "(2 processes)" in outputs[0]
    assert (run_dir / "checkpoints" / "step-3" / "model.safetensors").is_file()


def _rank_pid(parent: int, rank: int) -> int:
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no rank {rank} under torchrun {parent}")


def test_killing_one_rank_ends_the_job_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    timeout = 20
    proc = _torchrun("--nproc_per_node", "2", "--standalone",
                     args=[*ARGS, "train.steps=500", f"train.collective_timeout={timeout}",
                           f"output.run_dir={run_dir}"])
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the kill"
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    try:  # liveness, not speed: the survivor gives up on the collective (a closed peer, or the 20 s timeout)
        out, _ = proc.communicate(timeout=10 * timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    # the survivor's one line, naming itself: its collective failed first, or torchrun's SIGTERM came first
    assert ("grouprl train: error: rank 0: collective" in out
            or "grouprl train: error: rank 0: stopped by SIGTERM from the launcher" in out), out[-3000:]
    assert "rank      : 1" in out and "SIGKILL" in out  # torchrun's summary names the rank that died


def test_sigterm_to_a_ranks_process_group_stops_the_job_at_a_checkpoint(tmp_path):
    """torchrun stops its workers, and schedulers cancel jobs, with SIGTERM to each worker's process group,
    which holds that rank's reward worker too: the reward worker outlives it, the ranks agree to stop after
    the same step, that step is checkpointed, and the job exits 0."""
    run_dir = tmp_path / "run"
    proc = _torchrun("--nproc_per_node", "2", "--standalone",
                     args=[*ARGS, "train.steps=500", f"output.run_dir={run_dir}"])
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the signal"
    os.killpg(_rank_pid(proc.pid, 0), signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("stopped by signal after step "))
    step = int(line.split()[5].rstrip(";"))
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step-{step}"]
    assert len(_rows(run_dir)) == step


def test_world_size_that_cannot_hold_the_batch_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    run_dir = tmp_path / "run"
    code = main(["train", *ARGS, "train.steps=1", f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "train.prompts_per_step=4 cannot be split into whole groups over 3 processes" in err
    assert "multiple of 3 (e.g. 6)" in err and "run 1, 2, 4 processes" in err
    assert len(err.splitlines()) == 1 and not run_dir.exists()


PER_RANK_REWARD = '''
def per_rank(prompts, completions, trainer_state, log_metric, **kwargs):
    log_metric("rank0" if trainer_state.is_world_process_zero else "rank1", 1.0)  # names differ by rank
    log_metric("both", 2.0 if trainer_state.is_world_process_zero else 4.0)
    if trainer_state.global_step >= 1:
        raise RuntimeError("boom")
    return [float(len(c)) for c in completions]
'''


def test_logged_metrics_and_a_fail_fast_stop_span_the_ranks(tmp_path):
    """log_metric names one rank alone logs still reach metrics.jsonl (means over both ranks), and a reward
    that fails everywhere at step 2 stops both ranks there, each with the one line."""
    (tmp_path / "r.py").write_text(PER_RANK_REWARD)
    run_dir = tmp_path / "run"
    proc = _torchrun("--nproc_per_node", "2", "--standalone",
                     args=[*ARGS, "train.steps=3", f"rewards=[{tmp_path}/r.py:per_rank]",
                           f"output.run_dir={run_dir}"])
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode != 0
    assert out.count("grouprl train: error: reward per_rank got reward_fallback on every sample of step 2 "
                     "(16 samples); its first fault: failed (RuntimeError: boom)") == 2, out[-3000:]
    [row] = _rows(run_dir)
    assert (row["step"], row["reward_log/rank0"], row["reward_log/rank1"],
            row["reward_log/both"]) == (1, 1.0, 1.0, 3.0)
