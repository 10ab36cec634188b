"""A sequence-classification reward model scores (prompt, completion) the same in the worker as in-process."""

import pytest
import torch
from transformers import AutoConfig, LlamaConfig, LlamaForSequenceClassification

from grouprl.errors import ConfigError
from grouprl.rewards import RewardError, RewardRunner, resolve_rewards
from tolerance import assert_close, forward_path_length


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, char_tokenizer):
    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(char_tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, num_labels=1,
                         pad_token_id=char_tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


def test_reward_model_scores_in_the_worker(reward_model_dir):
    rewards = resolve_rewards([{"name": "reward_model", "path": str(reward_model_dir), "weight": 2.0}], [])
    args = (["1+1=", "2+2="], ["2", "5 apples"], None, {})
    in_process = RewardRunner(rewards, isolate=False).score(*args)
    worker = RewardRunner(rewards, timeout=30)
    try:
        isolated = worker.score(*args)
    finally:
        worker.close()
    # The worker runs the float32 model on one thread: another blocking, so the forward rounds differently.
    # No log-softmax here; the score head sums normalised hidden states, terms of order one
    scores = in_process.parts["reward_model"]
    config = AutoConfig.from_pretrained(reward_model_dir)
    n = forward_path_length(config, max(len(p + c) for p, c in zip(*args[:2]))) - config.vocab_size
    scale = max(1.0, scores.abs().max().item())
    assert_close(isolated.parts["reward_model"], scores, n=n, scale=scale, dtype=torch.float32)
    assert_close(isolated.total, 2 * scores, n=n, scale=2 * scale, dtype=torch.float32)
    assert isolated.errors == {"reward_model": 0}


def test_reward_model_needs_a_path():
    with pytest.raises(RewardError, match="reward_model needs a path"):
        resolve_rewards([{"name": "reward_model"}], [])


def test_reward_model_reads_chat_rows_as_messages(reward_model_dir):
    """TRL feeds a reward model the prompt's messages then the completion's; without a chat template of its
    own, the char tokenizer here gets their contents joined, which is the text row's prompt + completion."""
    [reward] = resolve_rewards([{"name": "reward_model", "path": str(reward_model_dir)}], [])
    runner = RewardRunner([reward], isolate=False)
    chat = runner.score([[{"role": "user", "content": "1+1="}]], [[{"role": "assistant", "content": "2"}]],
                        None, {})
    text = runner.score(["1+1="], ["2"], None, {})
    assert chat.parts["reward_model"].tolist() == pytest.approx(text.parts["reward_model"].tolist(), abs=1e-6)
    assert chat.errors == {"reward_model": 0}


def test_reward_model_has_its_own_device(reward_model_dir, monkeypatch):
    [reward] = resolve_rewards([{"name": "reward_model", "path": str(reward_model_dir), "device": "cpu"}], [])
    assert reward.fn.device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"rewards\[0\].device=cuda but CUDA is not available"):
        resolve_rewards([{"name": "reward_model", "path": str(reward_model_dir), "device": "cuda"}], [])


def test_a_gpu_reward_model_in_the_forked_worker_is_refused(reward_model_dir, monkeypatch, tmp_path):
    """A forked worker cannot use CUDA: the run stops before any model loads, in one line."""
    from grouprl.config import load_config
    from grouprl.rewards import model as reward_models
    from grouprl.train.setup import build

    monkeypatch.setattr(reward_models.RewardModel, "__init__", lambda self, path, device: setattr(
        self, "device", torch.device("cuda", 0)))  # a stand-in placed on a GPU, built without one
    monkeypatch.setattr("grouprl.model.device.resolve_device", lambda spec, key="": torch.device(spec))
    cfg = load_config(None, [f"rewards=[{{name: reward_model, path: {reward_model_dir}, device: cuda}}]"])
    with pytest.raises(ConfigError, match="reward_isolation=false"):
        build(cfg, tmp_path)
