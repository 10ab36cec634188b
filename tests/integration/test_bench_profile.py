"""``grouprl bench --profile``: phases, op families and floors on the tiny shape; a model that is not a causal
LM is one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from grouprl.profile import FAMILIES, events_of, op_families


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grouprl", "bench", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_profile_gives_phases_families_and_floors():
    # beta 0: no reference pass; mu = 2: pi_old needs its own pass
    out = _bench("--model", "tiny", "--steps", "1", "--warmup", "0", "--json", "algo.beta=0",
                 "train.num_iterations=2")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(d["phases"]) == {"generate", "old", "update", "optimizer"}
    for name, p in d["phases"].items():
        assert set(p["families"]) == set(FAMILIES), name
        # every op's self time is in one family, and "other" is the rest of the wall time
        assert sum(p["families"].values()) == pytest.approx(p["seconds"], rel=0.05), name
        assert p["floor_s"] > 0 and p["fraction_of_floor"] == pytest.approx(p["floor_s"] / p["seconds"])
    assert d["phases"]["update"]["families"]["gemm"] > 0
    assert d["phases"]["optimizer"]["families"]["optimizer"] > 0
    # the update trains on every token twice (mu = 2) at 6 N per token; the old pass scores them once at 2 N
    assert d["phases"]["update"]["floor_s"] == pytest.approx(6 * d["phases"]["old"]["floor_s"])


@pytest.mark.parametrize("config", [{"model_type": "bert", "vocab_size": 100, "hidden_size": 8,
                                     "num_hidden_layers": 1, "num_attention_heads": 1,
                                     "intermediate_size": 8}, None])
def test_model_that_is_not_a_causal_lm_is_one_line_and_exit_2(tmp_path, config):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    out = _bench("--model", str(tmp_path), "--profile", "--steps", "1")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(tmp_path) in out.stderr


def test_op_families_sort_ops_by_kind():
    vocab, hidden = 97, 16
    x, w, head = torch.randn(8, hidden), torch.randn(hidden, hidden), torch.randn(vocab, hidden)
    q = torch.randn(1, 2, 8, 8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        with torch.profiler.record_function("phase::update"):
            h = torch.nn.functional.linear(x, w)
            logits = torch.nn.functional.linear(h, head)
            torch.logsumexp(logits, -1)
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
            torch.nn.functional.silu(h)
        with torch.profiler.record_function("phase::optimizer"):
            torch._foreach_add_([w], [w])
    fams = op_families(events_of(prof), vocab)
    assert {k for k in FAMILIES if fams["update"].get(k, 0) > 0} == {"gemm", "lm_head", "attention",
                                                                      "elementwise"}
    assert {k for k in FAMILIES if k in fams["optimizer"]} == {"optimizer"}
    assert "aten::logsumexp" in fams["update"]["top_ops"]
