"""The GPU check (docs/gpu.md): one command, at most 8 minutes on one GPU, one JSON line on stdout.

    scripts/gpu_check.sh            # or: python scripts/gpu_check.py [--budget 470]

Stages, each a subprocess with its own time limit (a stage that does not fit the time left is skipped and
says so; a failed stage does not stop the others):

1. ``pytest -m gpu tests/gpu`` — the ``gpu``-marked tests;
2. ``grouprl bench --config smollm2-135m --device cuda`` with the ``fast`` and the ``hf`` rollout backend —
   64 rows (8 prompts x 8) x 256 new tokens on SmolLM2-135M's shape in bf16-mixed: rollout tokens/s of
   each, s/step, MFU against the bf16 GEMM rate measured in the same run, peak GPU memory;
3. TRL's GRPOTrainer on the same model and batch (``--trl-only``) when ``import trl`` works;
4. a 50-step run of the embedded default on the GPU and its held-out greedy pass@1 before and after.

It needs no network and installs nothing: the repository's ``src`` goes on ``PYTHONPATH`` and the python
that runs it must have torch and transformers (and pytest for stage 1). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("sec_per_step", "rollout_tokens_per_s", "tokens_per_s", "achieved_gflops", "gemm_gflops",
        "fraction_of_gemm", "peak_gpu_mib", "params", "phases")


class Stages:
    def __init__(self, budget: float, device: str, config: str, train_steps: int) -> None:
        self.deadline = time.monotonic() + budget
        self.device, self.train_steps = device, train_steps
        self.bench = ["--config", config, "--device", device, "--steps", "3", "--warmup", "1", "--json"]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def run(self, name: str, argv: list[str], limit: float) -> tuple[dict, str]:
        """``({"rc", "seconds"} or {"skipped"}, stdout)`` of one stage, within ``limit`` and the time left."""
        left = self.deadline - time.monotonic()
        if left < min(limit, 30):
            return {"skipped": f"{left:.0f} s left of the budget"}, ""
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            out = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                 timeout=min(limit, left))
        except subprocess.TimeoutExpired:
            return {"rc": "timeout", "seconds": round(time.monotonic() - t0, 1)}, ""
        if out.returncode:
            sys.stderr.write(out.stderr[-3000:])
        status = {"rc": out.returncode, "seconds": round(time.monotonic() - t0, 1)}
        if out.returncode:
            status["error"] = (out.stderr.strip().splitlines() or [""])[-1][:300]
        return status, out.stdout


def last_json(stdout: str) -> dict | None:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def tests(stages: Stages, tmp: Path) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"skipped": "pytest is not installed for this python"}
    report = tmp / "junit.xml"
    status, _ = stages.run("pytest -m gpu", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                              "-m", "gpu", "tests/gpu", f"--junitxml={report}"], 170)
    if report.is_file():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        bad = counts["failures"] + counts["errors"]
        status.update(counts, passed=counts["tests"] - bad - counts["skipped"])
        status["failed_tests"] = [case.get("name") for case in suite.iter("testcase")
                                  if case.find("failure") is not None or case.find("error") is not None]
    return status


def bench(stages: Stages, backend: str) -> dict:
    status, stdout = stages.run(f"bench {backend}", [sys.executable, "-m", "grouprl", "bench", *stages.bench,
                                                      f"rollout.backend={backend}"], 100)
    result = last_json(stdout) if status.get("rc") == 0 else None
    return {**status, **({k: result.get(k) for k in KEPT} if result else {})}


def trl(stages: Stages) -> dict:
    if importlib.util.find_spec("trl") is None:
        return {"skipped": "import trl failed: TRL is not installed for this python"}
    status, stdout = stages.run("TRL GRPOTrainer", [sys.executable, "-m", "grouprl", "bench", *stages.bench,
                                                    "--trl-only"], 110)
    result = last_json(stdout) if status.get("rc") == 0 else None
    return {**status, **(result or {})}


def default_run(stages: Stages, tmp: Path) -> dict:
    run_dir = tmp / "default"
    status, _ = stages.run(f"{stages.train_steps} steps of the embedded default", [
        sys.executable, "-m", "grouprl", "train", f"train.steps={stages.train_steps}",
        f"model.device={stages.device}", "eval.num_samples=0",
        "output.progress=false", "output.plots=false", f"output.run_dir={run_dir}"], 150)
    evals = run_dir / "eval.jsonl"
    if status.get("rc") == 0 and evals.is_file():
        rows = [json.loads(line) for line in evals.read_text().splitlines()]
        before, after = rows[0]["eval/pass@1"], rows[-1]["eval/pass@1"]
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        status.update(pass1_before=before, pass1_after=after, gain_points=round(100 * (after - before), 1),
                      sec_per_step=sum(m["time/step"] for m in metrics) / len(metrics),
                      peak_gpu_mib=max(m.get("memory/peak_gpu_mib", 0.0) for m in metrics),
                      logprob_diff_mean=metrics[-1].get("rollout/logprob_diff_mean"))
    return status


def environment() -> dict:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": importlib.util.find_spec("peft") is not None,
            "flash_attn": importlib.util.find_spec("flash_attn") is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all stages together")
    # a dry run of the plumbing on a machine without a GPU: --device cpu --config tiny --train-steps 2
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="smollm2-135m", help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    t0 = time.monotonic()
    out: dict = {"gpu_check": environment()}
    if out["gpu_check"]["gpu"] is None and args.device != "cpu":
        out["error"] = "CUDA is not available to this python"
        print(json.dumps(out))
        return 1
    stages = Stages(args.budget, args.device, args.config, args.train_steps)
    with tempfile.TemporaryDirectory() as tmp:
        out["tests"] = tests(stages, Path(tmp))
        out["bench_fast"] = bench(stages, "fast")
        out["bench_hf"] = bench(stages, "hf")
        out["trl"] = trl(stages)
        out["default_run"] = default_run(stages, Path(tmp))
    fast, hf, theirs = out["bench_fast"], out["bench_hf"], out["trl"]
    if fast.get("rollout_tokens_per_s") and hf.get("rollout_tokens_per_s"):
        out["fast_over_hf_rollout"] = round(fast["rollout_tokens_per_s"] / hf["rollout_tokens_per_s"], 2)
    if fast.get("sec_per_step") and theirs.get("sec_per_step"):
        out["step_speedup_vs_trl"] = round(theirs["sec_per_step"] / fast["sec_per_step"], 2)
    stages_ok = [s.get("rc") == 0 for s in (out["tests"], fast, hf, out["default_run"])]
    ran = args.device == "cpu" or out["tests"].get("passed", 0) > 0  # on a GPU the tests must run, not skip
    out["green"] = (all(stages_ok) and ran and not out["tests"].get("failures")
                    and not out["tests"].get("errors"))
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out))
    return 0 if out["green"] else 1


if __name__ == "__main__":
    sys.exit(main())
