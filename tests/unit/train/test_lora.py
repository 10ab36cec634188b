"""LoRA through PEFT: only the adapters train, the reference is the base model with the adapters off, the
checkpoint holds the adapter (and the merged model on request) and resumes exactly."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from grouprl.cli.main import main
from grouprl.config import load_config
from grouprl.model.assets import DEFAULT_MODEL_DIR
from grouprl.model.load import load_model
from grouprl.model.passes import frozen_logprobs
from grouprl.train import step as stages
from grouprl.train.loop import one_step
from grouprl.train.setup import build, prompt_texts
from grouprl.types import SamplingParams
from tolerance import assert_close, logprob_rounding, tol

ARGS = ["model.lora.r=4", "train.prompts_per_step=2", "rollout.num_generations=4", "data.num_eval=0",
        "data.num_train=32", "output.progress=false", "train.lr=1e-2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    s = build(load_config(None, [*ARGS, "algorithm=grpo"]), tmp_path_factory.mktemp("lora"))
    yield s
    s.rewards.close()


def _rollout(s):
    rows = s.source.take(2)
    return stages.rollout_and_score(s.backend, s.tokenizer, s.rewards, rows, prompt_texts(s, rows), 4,
                                    SamplingParams(max_new_tokens=6, seed=1)).rollout


def test_only_adapter_parameters_train(setup):
    names = {id(p): n for n, p in setup.policy.named_parameters()}
    in_optimizer = {names[id(p)] for group in setup.optimizer.param_groups for p in group["params"]}
    assert in_optimizer and all("lora_" in n for n in in_optimizer)
    assert {n for n, p in setup.policy.named_parameters() if p.requires_grad} == in_optimizer
    one_step(setup, 1, [])  # the real update path
    rollout = _rollout(setup)
    setup.optimizer.zero_grad(set_to_none=True)
    logp, _ = setup.scorer(rollout, torch.arange(8), 4, temperature=1.0, chunk_size=64)
    logp.sum().backward()
    with_grad = {n for n, p in setup.policy.named_parameters() if p.grad is not None}
    assert with_grad == in_optimizer, "a frozen base weight received a gradient"
    assert all(p.grad.abs().sum() > 0 for n, p in setup.policy.named_parameters() if "lora_B" in n)


def test_reference_is_the_base_model_with_adapters_off(setup):
    for n, p in setup.policy.named_parameters():  # make the adapters matter (PEFT starts B at 0)
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    rollout = _rollout(setup)
    base_model = load_model(DEFAULT_MODEL_DIR)
    ref = setup.reference.logprobs(rollout, 4, 1.0, 8, 64)
    base = frozen_logprobs(base_model, rollout, 4, 1.0, 8, 64)
    policy = frozen_logprobs(setup.policy, rollout, 4, 1.0, 8, 64)
    ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
    mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
    rounding = logprob_rounding(base_model, ids, mask)
    assert_close(ref, base, **rounding)  # through PEFT's layers, or plain ones
    changed = (policy - base).abs().max()
    assert changed > tol(torch.float32, **rounding), "the adapters changed nothing, so the test shows nothing"
    assert sum(p.numel() for p in setup.policy.parameters()) < 1.05 * sum(
        p.numel() for p in base_model.parameters()), "a second copy of the weights"


def test_unknown_target_module_exits_2_naming_the_present_ones(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", *ARGS, "model.lora.target_modules=[q_proj,query_key_value]",
                 f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.lora.target_modules: query_key_value not in the model; its linear layers are down_proj, " \
           "gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in err
    assert not run_dir.exists()


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/")) and k != "tokens_per_s"}
            for r in rows]


def test_lora_checkpoint_resumes_exactly_and_merges_on_request(tmp_path):
    args = [*ARGS, "train.steps=4", "output.save_every=2", "output.keep_last=3", "output.save_merged=true"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *args, f"output.run_dir={straight}"]) == 0
    assert main(["train", *args, "train.steps=2", f"output.run_dir={resumed}"]) == 0
    assert main(["train", "--resume", "auto", *args, f"output.run_dir={resumed}"]) == 0
    assert _rows(resumed) == _rows(straight)
    step = straight / "checkpoints" / "step-4"
    assert (step / "adapter_model.safetensors").is_file() and not (step / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(step / "merged")
    base = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    assert any(not torch.equal(a, b)
               for a, b in zip(merged.state_dict().values(), base.state_dict().values()))
    assert set(merged.state_dict()) == set(base.state_dict()), "merged/ must be a plain HF model"
