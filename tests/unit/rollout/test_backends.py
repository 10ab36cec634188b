"""The rollout contract, for every backend (hf, fast): group layout, EOS/mask/truncation semantics, sampler
log-probs equal to a teacher-forced pass, greedy and seeded sampling, weights, bad requests."""

from __future__ import annotations

import pytest
import torch

from grouprl.model.load import load_model
from grouprl.model.logprobs import sequence_logprobs
from grouprl.rollout import FastRollout, HFRollout, RolloutBackend
from grouprl.rollout.hf import completion_mask_from_eos, left_pad
from grouprl.types import SamplingParams
from tolerance import assert_close, logprob_rounding

EOS, PAD, G = 2, 0, 4
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]  # B = 3 prompts of different lengths


def _model_with_eos_bias(model_dir, eos_bias: float):
    """The tiny Llama with a bias on the EOS logit: +50 forces EOS, -50 forbids it, 2 ends rows at mixed
    lengths."""
    model = load_model(model_dir)
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[EOS] = eos_bias
    model.set_output_embeddings(biased)
    return model


@pytest.fixture(scope="module", params=[HFRollout, FastRollout], ids=["hf", "fast"])
def backend(request):
    """The backend class under test."""
    return request.param


@pytest.fixture(scope="module")
def mixed_rollout(tiny_llama_dir, char_tokenizer, backend):
    return backend(_model_with_eos_bias(tiny_llama_dir, 2.0), char_tokenizer)


def _joined(rollout):
    ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)  # [N, P+T]
    mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)  # [N, P+T]
    return ids, mask


def _assert_matches_teacher_forced(rollout, model, temperature):
    """The sampler's log-probs come from the backend's own (cached, incremental) forward, the teacher's from
    one full forward: the whole path rounds differently."""
    ids, mask = _joined(rollout)
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, ids, mask, rollout.completion_ids.shape[1],
                                    temperature=temperature)
    assert_close(rollout.sampler_logprobs, logp, **logprob_rounding(model, ids, mask, temperature))


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_completion_mask_counts_the_first_eos():
    ids = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 2, 2]])  # the last row: pad id == eos id
    mask, truncated = completion_mask_from_eos(ids, torch.tensor([2]))
    assert mask.long().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_group_layout_and_types(mixed_rollout):
    assert isinstance(mixed_rollout, RolloutBackend)
    out = mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=6, seed=0))
    n = len(PROMPTS) * G
    assert out.prompt_ids.shape == (n, 5) and out.prompt_mask.shape == (n, 5)
    assert out.completion_ids.shape[0] == n and out.completion_ids.shape[1] <= 6
    assert out.completion_mask.shape == out.sampler_logprobs.shape == out.completion_ids.shape
    assert out.truncated.dtype == torch.bool and out.completion_mask.dtype == torch.long
    for g, prompt in enumerate(PROMPTS):  # rows g*G .. g*G+G-1 hold prompt g, left-padded
        rows = out.prompt_ids[g * G : (g + 1) * G]
        assert (rows[:, 5 - len(prompt) :] == torch.tensor(prompt)).all() and (
            rows[:, : 5 - len(prompt)] == PAD
        ).all()
        assert (out.prompt_mask[g * G : (g + 1) * G].sum(1) == len(prompt)).all()


def test_forced_eos_ends_every_row_after_one_token(tiny_llama_dir, char_tokenizer, backend):
    rollout = backend(_model_with_eos_bias(tiny_llama_dir, 50.0), char_tokenizer)
    out = rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=8, seed=0))
    assert (out.completion_ids == EOS).all() and out.completion_ids.shape == (len(PROMPTS) * G, 1)
    assert (out.completion_mask == 1).all()  # the EOS is a sampled token
    assert not out.truncated.any()
    # log p(EOS) = logit - log-sum-exp, ~ -e^-50: the normaliser's rounding at the +50 logit's scale (the
    # logits' own rounding cancels: d log p / d logits = 1 - p ~ 0)
    scale = logprob_rounding(rollout.model, *_joined(out))["scale"]
    n = rollout.model.config.vocab_size + 1
    assert_close(out.sampler_logprobs, torch.zeros_like(out.sampler_logprobs), n=n, scale=scale)


def test_no_eos_truncates_every_row(tiny_llama_dir, char_tokenizer, backend):
    rollout = backend(_model_with_eos_bias(tiny_llama_dir, -50.0), char_tokenizer)
    out = rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=7, seed=0))
    assert out.completion_ids.shape == (len(PROMPTS) * G, 7)
    assert (out.completion_mask == 1).all() and out.truncated.all()


def test_mixed_lengths_mask_semantics(mixed_rollout):
    out = mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=8, seed=1))
    lengths = out.completion_mask.sum(1)
    assert len(set(lengths.tolist())) > 1 and not out.truncated.all()  # the case is really mixed
    for ids, mask, length, truncated in zip(out.completion_ids, out.completion_mask, lengths, out.truncated):
        assert (mask[:length] == 1).all() and (mask[length:] == 0).all()  # 1s then 0s
        assert (ids[length:] == PAD).all()
        assert truncated == (EOS not in ids[:length].tolist())
        if not truncated:  # the row ends with its first EOS, which is counted
            assert ids[length - 1] == EOS and EOS not in ids[: length - 1].tolist()


def test_sampler_logprobs_match_teacher_forced(mixed_rollout):
    sampling = SamplingParams(max_new_tokens=8, temperature=0.7, top_p=0.9, top_k=20, seed=2)
    out = mixed_rollout.generate(PROMPTS, G, sampling)
    _assert_matches_teacher_forced(out, mixed_rollout.model, 0.7)
    assert (out.sampler_logprobs[out.completion_mask == 0] == 0).all()


def test_sampler_logprobs_match_teacher_forced_qwen2(tiny_qwen2_dir, char_tokenizer, backend):
    model = load_model(tiny_qwen2_dir)  # grouped-query attention, tied embeddings
    out = backend(model, char_tokenizer).generate(
        PROMPTS, 2, SamplingParams(max_new_tokens=6, temperature=0.7, seed=0)
    )
    _assert_matches_teacher_forced(out, model, 0.7)


def test_greedy_is_deterministic_and_uses_temperature_one(mixed_rollout):
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    first, second = (mixed_rollout.generate(PROMPTS, G, greedy) for _ in range(2))
    assert torch.equal(first.completion_ids, second.completion_ids)
    groups = first.completion_ids.view(len(PROMPTS), G, -1)
    assert (groups == groups[:, :1]).all()  # every member of a group is the same argmax path
    _assert_matches_teacher_forced(first, mixed_rollout.model, 1.0)


def test_seed_reproduces_samples_and_leaves_global_rng_alone(mixed_rollout):
    rng_before = torch.get_rng_state()
    a, b, c = (
        mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=6, seed=seed)) for seed in (7, 7, 8)
    )
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_generate_restores_train_mode_and_generation_config(mixed_rollout):
    model = mixed_rollout.model
    config = model.generation_config
    model.train()
    try:
        mixed_rollout.generate(PROMPTS[:1], 2, SamplingParams(max_new_tokens=2, seed=0))
        assert model.training and model.generation_config is config
    finally:
        model.eval()


def test_load_weights(tiny_llama_dir, char_tokenizer, backend):
    model = load_model(tiny_llama_dir)
    rollout = backend(model, char_tokenizer)
    rollout.load_weights(model)  # shared module: nothing to do
    policy = load_model(tiny_llama_dir)
    with torch.no_grad():
        policy.lm_head.weight.add_(1.0)
    rollout.load_weights(policy)
    assert torch.equal(model.lm_head.weight, policy.lm_head.weight)


@pytest.mark.parametrize(
    ("prompts", "sampling"),
    [
        ([[5], []], SamplingParams()),
        ([[5]], SamplingParams(max_new_tokens=0)),
        ([[5]], SamplingParams(temperature=-1.0)),
        ([[5]], SamplingParams(top_p=0.0)),
    ],
)
def test_invalid_requests(mixed_rollout, prompts, sampling):
    with pytest.raises(ValueError):
        mixed_rollout.generate(prompts, 2, sampling)


def test_calls_for_different_parts_of_a_batch_draw_different_samples(mixed_rollout):
    """Ranks (or refill rounds) pass the same seed and their group_offset: their streams must differ."""
    first = mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=6, seed=3, group_offset=0))
    other = mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=6, seed=3, group_offset=3))
    again = mixed_rollout.generate(PROMPTS, G, SamplingParams(max_new_tokens=6, seed=3, group_offset=3))
    assert not torch.equal(first.completion_ids, other.completion_ids)
    assert torch.equal(other.completion_ids, again.completion_ids)
