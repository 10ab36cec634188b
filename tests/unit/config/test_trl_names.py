"""TRL's and open-r1's names: each is accepted at the top level of a YAML file and as an override, sets the
right grouprl field; the combined ones, conflicting spellings, did-you-mean and the ignored-keys warning."""

import json
import math

import pytest
import torch
import yaml

from grouprl.algo import group_advantages, preset
from grouprl.config import ConfigError, algo_spec, load_config
from grouprl.config import trl as trl_names


def read(cfg, where: str):
    """A dotted field of the config, or ``spec.<field>`` of the resolved algorithm."""
    node = algo_spec(cfg) if where.startswith("spec.") else cfg
    for part in where.removeprefix("spec.").split("."):
        node = getattr(node, part)
    return node


# (TRL name, value, where it lands, expected value there); every DIRECT and COMBINED name at least once.
CASES = [
    ("model_name_or_path", "some/model", "model.name_or_path", "some/model"),
    ("torch_dtype", "bfloat16", "model.dtype", "bfloat16"),
    ("dtype", "float16", "model.dtype", "float16"),
    ("trust_remote_code", True, "model.trust_remote_code", True),
    ("gradient_checkpointing", True, "model.gradient_checkpointing", True),
    ("lora_alpha", 32, "model.lora.alpha", 32.0),
    ("lora_dropout", 0.05, "model.lora.dropout", 0.05),
    ("lora_target_modules", ["q_proj"], "model.lora.target_modules", ["q_proj"]),
    ("dataset_name", "prompts.jsonl", "data.path", "prompts.jsonl"),
    ("dataset_config", "main", "data.dataset_config", "main"),
    ("dataset_train_split", "test", "data.split", "test"),
    ("dataset_prompt_column", "problem", "data.prompt_column", "problem"),
    ("chat_template", "{{ messages[0]['content'] }}", "data.chat_template", "{{ messages[0]['content'] }}"),
    ("chat_template_kwargs", {"enable_thinking": False}, "data.chat_template_kwargs",
     {"enable_thinking": False}),
    ("system_prompt", "Think first.", "data.system_prompt", "Think first."),
    ("data_seed", 7, "data.seed", 7),
    ("num_generations", 4, "rollout.num_generations", 4),
    ("max_completion_length", 16, "rollout.max_new_tokens", 16),
    ("temperature", 0.7, "rollout.temperature", 0.7),
    ("top_p", 0.9, "rollout.top_p", 0.9),
    ("top_k", 50, "rollout.top_k", 50),
    ("learning_rate", 1e-6, "train.lr", 1e-6),
    ("weight_decay", 0.1, "train.weight_decay", 0.1),
    ("max_grad_norm", 0.5, "train.max_grad_norm", 0.5),
    ("num_iterations", 2, "train.num_iterations", 2),
    ("seed", 42, "train.seed", 42),
    ("lr_scheduler_type", "cosine", "train.lr_scheduler", "cosine"),
    ("lr_scheduler_kwargs", {"num_cycles": 0.5}, "train.lr_scheduler_kwargs", {"num_cycles": 0.5}),
    ("warmup_ratio", 0.1, "train.warmup_steps", 20),  # 10 % of 200 optimizer steps
    ("ddp_timeout", 600, "train.collective_timeout", 600.0),
    ("beta", 0.001, "spec.beta", 0.001),
    ("loss_type", "dr_grpo", "spec.loss_type", "seq_mean_token_sum_norm"),
    ("loss_type", "bnpo", "spec.loss_type", "token_mean"),
    ("loss_type", "sapo", "spec.clip", "soft_gate"),
    ("loss_type", "cispo", "spec.clip", "is_weight_clip"),
    ("scale_rewards", "batch", "spec.advantage", "group_mean_batch_std"),
    ("scale_rewards", "none", "spec.advantage", "group_center"),
    ("importance_sampling_level", "sequence", "spec.importance_sampling_level", "sequence"),
    ("delta", 3.0, "spec.clip_ratio_c", 3.0),
    ("mask_truncated_completions", True, "spec.overlong_filter", True),
    ("sapo_temperature_pos", 2.0, "spec.tau_pos", 2.0),
    ("sapo_temperature_neg", 0.5, "spec.tau_neg", 0.5),
    ("output_dir", "runs/x", "output.run_dir", "runs/x"),
    ("save_total_limit", 3, "output.keep_last", 3),
    ("num_generations_eval", 4, "eval.num_samples", 4),
    ("report_to", "tensorboard", "output.report_to", ["tensorboard"]),
    ("report_to", ["none"], "output.report_to", []),
    ("per_device_train_batch_size", 16, "train.prompts_per_step", 2),  # 16 completions / G=8
    ("per_device_train_batch_size", 16, "train.micro_batch_size", 16),
    ("gradient_accumulation_steps", 4, "train.prompts_per_step", 4),  # TRL's default 8 per device x 4 / 8
    ("generation_batch_size", 64, "train.prompts_per_step", 8),  # 64 completions / G=8
    ("generation_batch_size", 64, "train.mini_batches", 8),  # 64 / 8 per device: 8 optimizer steps
    ("steps_per_generation", 2, "train.mini_batches", 2),
    ("max_steps", 50, "train.steps", 50),
    ("num_train_epochs", 2, "train.steps", 250),  # 2 x 4000 task prompts / 32 per step
    ("save_steps", 10, "output.save_every", 10),
    ("eval_steps", 5, "eval.every", 5),
    ("warmup_steps", 3, "train.warmup_steps", 3),
    ("epsilon", 0.3, "spec.epsilon_low", 0.3),
    ("epsilon_high", 0.28, "spec.epsilon_high", 0.28),
    ("adam_beta1", 0.8, "train.adam_betas", (0.8, 0.99)),
    ("adam_beta2", 0.999, "train.adam_betas", (0.9, 0.999)),
    ("reward_funcs", ["correct_answer"], "rewards", ["correct_answer"]),
    ("reward_weights", [2.0], "rewards", [{"name": "correct_answer", "weight": 2.0}]),
    ("use_peft", True, "model.lora.r", 16),
    ("lora_r", 8, "model.lora.r", 8),
    ("vllm_importance_sampling_correction", True, "spec.rollout_correction", "sequence_mask"),  # TRL's mode
    ("vllm_importance_sampling_correction", False, "spec.rollout_correction", "none"),
    ("vllm_importance_sampling_mode", "token_truncate", "spec.rollout_correction", "token_truncate"),
    ("vllm_importance_sampling_clip_max", 3.0, "spec.rollout_correction_max", 3.0),
    ("vllm_importance_sampling_cap", 2.5, "spec.rollout_correction_max", 2.5),
    ("vllm_importance_sampling_clip_min", 0.5, "spec.rollout_correction_min", 0.5),
]
# What some names need beside them to mean anything (use_peft for lora_r, a rewards list to weigh).
NEEDS = {"lora_r": {"use_peft": True}, "reward_weights": {"reward_funcs": ["correct_answer"]},
         "sapo_temperature_pos": {"loss_type": "sapo"}, "sapo_temperature_neg": {"loss_type": "sapo"},
         **{f"vllm_importance_sampling_{n}": {"vllm_importance_sampling_mode": "token_mask"}
            for n in ("clip_max", "cap", "clip_min")}}


def test_every_trl_name_has_a_case():
    assert {name for name, *_ in CASES} == set(trl_names.DIRECT) | set(trl_names.COMBINED)


@pytest.mark.parametrize("name,value,where,expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_trl_name_in_a_file_and_as_an_override(tmp_path, name, value, where, expected):
    values = {**NEEDS.get(name, {}), name: value}
    path = tmp_path / "trl.yaml"
    path.write_text(yaml.safe_dump(values))
    from_file = load_config(path)
    from_cli = load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    assert read(from_file, where) == expected
    assert read(from_cli, where) == expected
    assert from_file == from_cli


def test_the_generation_batch_is_completions_per_device_times_accumulation_times_world(monkeypatch):
    over = ["num_generations=4", "per_device_train_batch_size=6", "gradient_accumulation_steps=2"]
    cfg = load_config(None, over)
    assert (cfg.train.prompts_per_step, cfg.train.micro_batch_size) == (3, 6)  # 6 x 2 x 1 / 4
    with pytest.raises(ConfigError, match=r"= 10 completions per step, not a multiple of num_generations=4"):
        load_config(None, ["num_generations=4", "per_device_train_batch_size=5",
                           "gradient_accumulation_steps=2"])
    # 2 optimizer steps a rollout
    several = load_config(None, [*over, "steps_per_generation=4", "max_steps=10"])
    assert (several.train.prompts_per_step, several.train.mini_batches, several.train.steps) == (6, 2, 5)
    assert load_config(None, [*over, "generation_batch_size=24"]).train.mini_batches == 2
    with pytest.raises(ConfigError,
                       match="3 micro-steps per generation is not a multiple of gradient_accumulation"):
        load_config(None, ["num_generations=2", "per_device_train_batch_size=6",
                           "gradient_accumulation_steps=2", "steps_per_generation=3"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load_config(None, over).train.prompts_per_step == 6  # 6 x 2 x 2 / 4


def test_trl_steps_count_optimizer_steps_grouprl_steps_count_rollouts():
    cfg = load_config(None, ["max_steps=10", "num_iterations=2", "save_steps=4", "eval_steps=0.5"])
    assert (cfg.train.steps, cfg.output.save_every, cfg.eval.every) == (5, 2, 3)  # eval at half the run


def test_epochs_from_the_dataset_size(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n"
                            for i in range(10)))
    recipe = {"dataset_name": str(path), "max_steps": -1, "num_train_epochs": 1, "num_generations": 2,
              "per_device_train_batch_size": 4}
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(recipe))
    assert load_config(file).train.steps == 5  # 10 prompts / 2 per step
    # TRL's 3 epochs
    assert load_config(None, ["max_steps=-1", "train.prompts_per_step=32"]).train.steps == 375


def test_warmup_ratio_of_all_optimizer_steps_and_its_conflict(tmp_path):
    cfg = load_config(None, ["max_steps=40", "warmup_ratio=0.1", "train.mini_batches=2"])
    # 40 optimizer steps: 20 rollouts x 2; 10 % of 40
    assert (cfg.train.steps, cfg.train.warmup_steps) == (20, 4)
    # below 1: a ratio
    assert load_config(None, ["warmup_steps=0.25", "train.steps=8"]).train.warmup_steps == 2
    with pytest.raises(ConfigError, match=r"warmup_ratio=0.1 gives 20 warm-up steps of 200, but "
                                          r"train.warmup_steps=3 is given too; keep one"):
        load_config(None, ["warmup_ratio=0.1", "train.warmup_steps=3"])
    path = tmp_path / "w.yaml"
    path.write_text("warmup_ratio: 0.1\n")
    later = load_config(path, ["train.warmup_steps=3"])  # the command line wins over the file
    assert (later.train.warmup_steps, later.train.warmup_ratio) == (3, None)


def test_cispo_epsilon_high_is_trls_absolute_cap():
    default = algo_spec(load_config(None, ["loss_type=cispo"]))
    assert (default.clip, default.loss_type, default.epsilon_low, default.epsilon_high) == (
        "is_weight_clip", "token_mean", None, 4.0)  # TRL's recommended cap 5.0 = grouprl's 1 + 4.0
    spec = algo_spec(load_config(None, ["loss_type=cispo", "epsilon_high=3", "epsilon=0.2"]))
    assert spec.epsilon_high == 2.0
    assert algo_spec(load_config(None, ["algorithm=cispo", "epsilon_high=5"])).epsilon_high == 4.0
    with pytest.raises(ConfigError, match="epsilon_high=0.28 with loss_type=cispo is TRL's cap"):
        load_config(None, ["loss_type=cispo", "epsilon_high=0.28"])


def test_reward_funcs_and_weights():
    cfg = load_config(None, ["reward_funcs=[correct_answer, integer_format]", "reward_weights=[1.0, 0.5]"])
    assert cfg.rewards == [{"name": "correct_answer", "weight": 1.0},
                           {"name": "integer_format", "weight": 0.5}]
    weighted = load_config(None, ["rewards=[correct_answer]", "reward_weights=[2]"])
    assert weighted.rewards == [{"name": "correct_answer", "weight": 2}]
    with pytest.raises(ConfigError, match="reward_weights has 1 weights for 2 rewards"):
        load_config(None, ["reward_funcs=[correct_answer, integer_format]", "reward_weights=[1.0]"])
    with pytest.raises(ConfigError, match="reward_weights needs the list of rewards"):
        load_config(None, ["reward_weights=[1.0]"])


@pytest.mark.parametrize("overrides,message", [
    (["learning_rate=1e-5", "train.lr=2e-5"],
     "learning_rate=1e-05 and train.lr=2e-05 are both given, with different values; keep one"),
    (["torch_dtype=bfloat16", "dtype=float16"],
     "dtype='float16' and torch_dtype='bfloat16' are both given, with different values; keep one"),
    (["per_device_train_batch_size=16", "train.prompts_per_step=4"],
     "per_device_train_batch_size (giving train.prompts_per_step=2) and train.prompts_per_step=4 are both "
     "given"),
    (["reward_funcs=[correct_answer]", "rewards=[integer_format]"],
     "reward_funcs=['correct_answer'] and rewards="),
])
def test_a_trl_name_and_its_grouprl_key_disagreeing_is_an_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_agreeing_spellings_and_the_command_line_over_the_file(tmp_path):
    assert load_config(None, ["learning_rate=1e-5", "train.lr=1e-5"]).train.lr == 1e-5
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1.0e-5\ntrain:\n  steps: 3\n")
    assert load_config(path, ["train.lr=3e-5"]).train.lr == 3e-5
    path.write_text("train:\n  lr: 1.0e-5\n")
    assert load_config(path, ["learning_rate=4e-5"]).train.lr == 4e-5


@pytest.mark.parametrize("key,suggestion", [
    ("rollout.max_completion_length", "did you mean rollout.max_new_tokens (TRL: max_completion_length)?"),
    ("train.learning_rate", "did you mean train.lr (TRL: learning_rate)?"),
    ("learning_rat", "did you mean train.lr (TRL: learning_rate)?"),
    ("num_generation", "did you mean rollout.num_generations (TRL: num_generations)?"),
    ("train.prompt_per_step", "did you mean train.prompts_per_step (TRL: "),
    ("model.lora.rank", "did you mean model.lora.r (TRL: lora_r)?"),
    ("train.zzz", None),
])
def test_unknown_keys_suggest_both_spellings(key, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}=1"])
    message = str(err.value)
    assert message.startswith(f"unknown config key '{key}'; ")
    assert (suggestion in message) if suggestion else "known keys here:" in message


def test_meaningless_keys_are_accepted_with_one_warning_line(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("hub_model_id: me/model\npush_to_hub: true\nuse_vllm: true\n"
                    "vllm_gpu_memory_utilization: 0.7\nbf16: true\nlearning_rate: 1.0e-6\n")
    cfg = load_config(path, ["logging_steps=5"])
    # bf16 is mixed precision, not the weights' dtype
    assert cfg.train.lr == 1e-6 and cfg.model.dtype == "float32"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    for name in ("hub_model_id", "push_to_hub", "use_vllm", "vllm_gpu_memory_utilization", "bf16",
                 "logging_steps"):
        assert name in lines[0]
    load_config(None, ["learning_rate=1e-6"])
    assert capsys.readouterr().err == ""


def test_trl_knobs_grouprl_lacks_are_accepted_only_at_grouprls_behaviour(capsys):
    cfg = load_config(None, ["repetition_penalty=1.0", "optim=adamw_torch",
                             "multi_objective_aggregation=sum_then_normalize"])
    assert cfg == load_config() and capsys.readouterr().err == ""  # no warning: grouprl does exactly that
    with pytest.raises(ConfigError, match=r"repetition_penalty=1.1 \(TRL\) has no counterpart in grouprl, "
                                          r"which always runs as repetition_penalty=1.0; remove it"):
        load_config(None, ["repetition_penalty=1.1"])
    with pytest.raises(ConfigError, match="use_bias_correction_kl=True"):
        load_config(None, ["use_bias_correction_kl=true"])


def test_trl_defaults_preset_is_grpoconfigs_advantage_and_loss():
    spec = preset("trl_defaults")
    assert (spec.beta, spec.epsilon_low, spec.epsilon_high, spec.loss_type, spec.clip, spec.advantage) == (
        0.0, 0.2, 0.2, "token_mean", "ppo_clip", "group_zscore")
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 2.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    out = group_advantages(rewards, 4, torch.ones(8), spec).advantages
    grouped = rewards.view(2, 4)
    trl = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)  # TRL 1.16
    torch.testing.assert_close(out, trl.flatten())


def test_rounding_of_combined_steps_is_up():
    assert load_config(None, ["max_steps=7", "num_iterations=2"]).train.steps == math.ceil(7 / 2)
