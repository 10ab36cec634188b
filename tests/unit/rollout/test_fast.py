"""The fast backend against the reference: same greedy tokens, same sampling distribution (chi-square tests at
a fixed significance level), samples independent of how the batch is split, and the sampler's filtering equal
to transformers' own top-k / top-p warpers."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from grouprl.model.assets import resolve_model_path
from grouprl.model.load import load_model, load_tokenizer
from grouprl.rollout import FastRollout, HFRollout, build_backend
from grouprl.rollout.sampler import filtered_probs, group_uniforms, sample_tokens
from grouprl.types import SamplingParams
from tolerance import ALPHA, assert_close, logprob_rounding, logprob_scale

# Every chi-square test here rejects below ALPHA (tests/tolerance.py); their seeds are fixed, so they repeat.


def chi_square_p(table: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of homogeneity of the rows of a ``[R, K]`` count table.

    Columns with a small expected count are pooled into one so the approximation holds.
    """
    table = table.double()
    table = table[:, table.sum(0) > 0]  # outcomes neither sample produced carry no information
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    small = (expected < 5).any(0)
    if small.any():
        table = torch.cat([table[:, ~small], table[:, small].sum(1, keepdim=True)], dim=1)
        expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))


def goodness_of_fit_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square goodness-of-fit test of ``counts`` ``[K]`` to ``probs`` ``[K]``."""
    expected = probs.double() * counts.sum()
    small = expected < 5
    counts = torch.cat([counts[~small].double(), counts[small].double().sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = expected > 0
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))


def test_chi_square_helpers_reject_a_different_distribution():
    generator = torch.Generator().manual_seed(0)
    a = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 4000, True,
                          generator=generator).bincount(minlength=3)
    b = torch.multinomial(torch.tensor([0.4, 0.4, 0.2]), 4000, True,
                          generator=generator).bincount(minlength=3)
    c = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 4000, True,
                          generator=generator).bincount(minlength=3)
    assert chi_square_p(torch.stack([a, b])) < ALPHA < chi_square_p(torch.stack([a, c]))
    assert (goodness_of_fit_p(b, torch.tensor([0.5, 0.3, 0.2])) < ALPHA
            < goodness_of_fit_p(a, torch.tensor([0.5, 0.3, 0.2])))


# ---------------------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (5, 1.0), (0, 0.7), (7, 0.8), (1, 1.0), (0, 1e-6)])
def test_filtering_equals_transformers_warpers(top_k, top_p):
    logits = torch.randn(16, 40, generator=torch.Generator().manual_seed(1)) * 3
    weights, order = filtered_probs(logits, 0.7, top_p, top_k)
    ours = torch.zeros_like(logits)
    if order is None:
        ours = weights
    else:
        ours.scatter_(1, order, weights)
    ours = ours / ours.sum(-1, keepdim=True)

    scores = logits / 0.7
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    # both: logits / temperature, exp, the softmax's normaliser over V; ours renormalises over V once more.
    # Probabilities: the normalisers' terms sum to 1
    assert_close(ours, torch.softmax(scores, -1), n=2 * logits.shape[-1] + 3, scale=1.0)


def test_inverse_cdf_sampling_matches_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    u = torch.rand(20_000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    tokens, logp = sample_tokens(logits.expand(len(u), -1), u, temperature=1.0)
    counts = tokens.bincount(minlength=5)
    assert goodness_of_fit_p(counts, torch.softmax(logits[0], -1)) > ALPHA
    assert counts[4] == 0  # a token of probability ~1e-14 is not drawn in 20k samples
    want = torch.log_softmax(logits[0], -1)[tokens]
    assert_close(logp, want, n=logits.shape[-1] + 1, scale=logprob_scale(logits))  # one log-softmax each


def test_sampler_never_draws_a_filtered_token_even_at_u_close_to_one():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).expand(3, -1)
    u = torch.tensor([0.0, 0.5, 1.0 - 2**-53], dtype=torch.float64)
    tokens, _ = sample_tokens(logits, u, temperature=1.0, top_k=2)
    assert tokens.tolist()[0] == 0 and set(tokens.tolist()) <= {0, 1}
    tokens, _ = sample_tokens(logits, u, temperature=1.0, top_p=0.5)
    assert set(tokens.tolist()) <= {0, 1}


def test_group_uniforms_depend_only_on_seed_and_global_group_index():
    whole = group_uniforms(5, 0, 6, 4, 3)  # six groups of four rows
    parts = torch.cat([group_uniforms(5, 0, 2, 4, 3), group_uniforms(5, 2, 1, 4, 3),
                       group_uniforms(5, 3, 3, 4, 3)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, group_uniforms(6, 0, 6, 4, 3))
    assert whole.min() >= 0 and whole.max() < 1


# ----------------------------------------------------------------------------- the backend vs the reference


@pytest.fixture(scope="module")
def default_model():
    path = resolve_model_path("default")
    return load_model(path), load_tokenizer(path)


def _arithmetic_prompts(tokenizer, n: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    pairs = torch.randint(0, 100, (n, 2), generator=generator).tolist()
    return [tokenizer(f"{a}+{b}=", add_special_tokens=False)["input_ids"] for a, b in pairs]  # 4 to 6 tokens


def test_greedy_is_token_identical_to_generate(default_model):
    model, tokenizer = default_model
    prompts = _arithmetic_prompts(tokenizer, 48)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    fast = FastRollout(model, tokenizer).generate(prompts, 2, greedy)
    ref = HFRollout(model, tokenizer).generate(prompts, 2, greedy)
    assert torch.equal(fast.completion_ids, ref.completion_ids)
    assert torch.equal(fast.completion_mask, ref.completion_mask)
    ids = torch.cat([ref.prompt_ids, ref.completion_ids], 1)
    mask = torch.cat([ref.prompt_mask, ref.completion_mask], 1)
    assert_close(fast.sampler_logprobs, ref.sampler_logprobs, **logprob_rounding(model, ids, mask))


def test_samples_do_not_depend_on_how_the_batch_is_split(default_model):
    model, tokenizer = default_model
    backend = FastRollout(model, tokenizer)
    prompts = _arithmetic_prompts(tokenizer, 6)
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11)
    whole = backend.generate(prompts, 4, sampling)
    halves = [backend.generate(prompts[:3], 4, sampling),
              backend.generate(prompts[3:], 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=11,
                                                              group_offset=3))]
    for key in ("completion_ids", "completion_mask"):
        joined = [getattr(h, key) for h in halves]
        width = max(x.shape[1] for x in joined)
        joined = torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in joined])
        assert torch.equal(torch.nn.functional.pad(getattr(whole, key),
                                                   (0, width - getattr(whole, key).shape[1])),
                           joined)


def _tiny_vocab_model(vocab: int = 6) -> tuple[LlamaForCausalLM, SimpleNamespace]:
    """A random Llama over 6 tokens (0 pad, 2 EOS): two-token completions have only 1 + 5 * 6 outcomes."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # spread the distribution: far from uniform, so the tests have power
    return model, SimpleNamespace(pad_token_id=0, eos_token_id=2)


def _outcomes(rollout) -> list[tuple[int, ...]]:
    return [tuple(ids[mask.bool()].tolist())
            for ids, mask in zip(rollout.completion_ids, rollout.completion_mask)]


@pytest.mark.parametrize("sampling", [SamplingParams(max_new_tokens=1, temperature=1.0),
                                      SamplingParams(max_new_tokens=1, temperature=0.8, top_p=0.85, top_k=4)],
                         ids=["plain", "filtered"])
def test_first_token_distribution_matches_generate_and_the_model(sampling):
    model, tokenizer = _tiny_vocab_model()
    prompt, n = [[1, 3, 4, 5, 3]], 6000
    fast = FastRollout(model, tokenizer).generate(prompt, n,
                                                  SamplingParams(**{**sampling.__dict__, "seed": 1}))
    ref = HFRollout(model, tokenizer).generate(prompt, n, SamplingParams(**{**sampling.__dict__, "seed": 2}))
    fast_counts = fast.completion_ids[:, 0].bincount(minlength=6)
    ref_counts = ref.completion_ids[:, 0].bincount(minlength=6)
    assert chi_square_p(torch.stack([fast_counts, ref_counts])) > ALPHA
    with torch.no_grad():
        logits = model(torch.tensor(prompt)).logits[0, -1]
    weights, order = filtered_probs(logits.unsqueeze(0), sampling.temperature, sampling.top_p, sampling.top_k)
    exact = torch.zeros(6).index_add_(0, order[0], weights[0]) if order is not None else weights[0]
    assert goodness_of_fit_p(fast_counts, exact / exact.sum()) > ALPHA


def test_two_token_distribution_matches_generate():
    model, tokenizer = _tiny_vocab_model()
    # two prompts of different lengths: left padding is exercised
    prompts, n = [[1, 3, 4], [1, 5, 5, 4, 3]], 3000
    sampling = SamplingParams(max_new_tokens=2, temperature=1.0)
    fast = FastRollout(model, tokenizer).generate(prompts, n,
                                                  SamplingParams(**{**sampling.__dict__, "seed": 1}))
    ref = HFRollout(model, tokenizer).generate(prompts, n, SamplingParams(**{**sampling.__dict__, "seed": 2}))
    for g in range(2):
        rows = slice(g * n, (g + 1) * n)
        a = Counter(_outcomes(fast)[rows])
        b = Counter(_outcomes(ref)[rows])
        keys = sorted(set(a) | set(b))
        assert len(keys) > 10  # many distinct two-token outcomes: the test has something to compare
        table = torch.tensor([[a[k] for k in keys], [b[k] for k in keys]])
        assert chi_square_p(table) > ALPHA


def test_rows_finishing_early_leave_the_batch_without_changing_the_rest(default_model):
    model, tokenizer = default_model
    backend = FastRollout(model, tokenizer)
    prompts = _arithmetic_prompts(tokenizer, 8)
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, seed=4)
    out = backend.generate(prompts, 8, sampling)
    lengths = out.completion_mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # rows end at different steps
    width = out.completion_ids.shape[1]
    # a quarter had finished while others ran: a compaction ran
    assert (lengths < width).float().mean() >= 0.25
    alone = [backend.generate([p], 8, SamplingParams(**{**sampling.__dict__, "group_offset": g}))
             for g, p in enumerate(prompts)]
    for g, single in enumerate(alone):
        width = single.completion_ids.shape[1]
        assert torch.equal(out.completion_ids[g * 8 : (g + 1) * 8, :width], single.completion_ids)


def test_unsupported_models_fall_back_to_hf(char_tokenizer):
    config = MistralConfig(vocab_size=len(char_tokenizer), hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                           sliding_window=16)
    model = MistralForCausalLM(config)
    with pytest.raises(ValueError, match="sliding window"):
        FastRollout(model, char_tokenizer)
    assert isinstance(build_backend("auto", model, char_tokenizer), HFRollout)
    assert isinstance(build_backend("fast", load_model(resolve_model_path("default")), char_tokenizer),
                      FastRollout)
