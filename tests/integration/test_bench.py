"""``grouprl bench --json``: the last line is one JSON object other tools read (docs/contracts.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch


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


def test_the_smollm2_shape_is_smollm2_135m():
    from transformers import LlamaForCausalLM

    from grouprl.bench import model_config

    config = model_config("smollm2-135m", vocab_size=100)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = LlamaForCausalLM(config)
    # embeddings 49152 x 576 (tied) + 30 layers x (q, o 576^2; k, v 576 x 192; gate, up, down 576 x 1536;
    # two norms) + the final norm: SmolLM2-135M's 134,515,008 parameters
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)


def test_cuda_without_cuda_is_one_line_and_exit_2():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = _bench("--config", "tiny", "--steps", "1", "--warmup", "0", "--device", "cuda")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "model.device=cuda" in out.stderr
