"""``grouprl bench --json``: the last line is one JSON object other tools read (docs/contracts.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grouprl", "bench", *args], capture_output=True, text=True,
                          timeout=600)


def test_json_line_holds_the_contract_fields():
    out = _bench("--config", "tiny", "--steps", "2", "--warmup", "1", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("sec_per_step", "tokens_per_s", "peak_rss_mib", "gemm_gflops", "achieved_gflops"):
        assert isinstance(d[key], float) and math.isfinite(d[key]) and d[key] > 0, key
    assert d["config"] == "tiny" and d["steps"] == 2
    assert set(d["phases"]) == {"generate", "reward", "reference", "old_logprobs", "update", "other"}
    assert sum(d["phases"].values()) <= d["sec_per_step"] * 3  # medians of parts: same order as the whole
    assert d["phases"]["generate"] > 0 and d["phases"]["update"] > 0


def test_unknown_config_is_one_line_and_exit_2():
    out = _bench("--config", "huge", "--steps", "1")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "huge" in out.stderr
