"""Chunked ``sequence_logprobs`` against a naive full-vocabulary log-softmax, on left-padded prompts."""

from __future__ import annotations

import pytest
import torch

from grouprl.model.load import load_model
from grouprl.model.logprobs import position_ids_from_mask, sequence_logprobs
from tolerance import assert_close, forward_path_length, in_float64, logprob_scale

T = 5  # completion width


@pytest.fixture(scope="module", params=["tiny_llama_dir", "tiny_qwen2_dir"])
def model64(request):
    """A tiny model in float64 throughout, so chunked and naive results can be compared to ~1e-13."""
    return in_float64(load_model(request.getfixturevalue(request.param)))


def _batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows: prompts of length 6, 3, 1 (left-padded to 6) and completions of length 5, 2, 4
    (right-padded)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab_size, (3, 6 + T), generator=gen)  # [N, L]
    mask = torch.ones_like(ids)
    for row, (prompt_len, completion_len) in enumerate([(6, 5), (3, 2), (1, 4)]):
        mask[row, : 6 - prompt_len] = 0
        mask[row, 6 + completion_len :] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _naive(model, ids, mask, temperature):
    """Full [N, L, V] log-softmax, gathered: the reference, and the scale of its rounding."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logp_all = torch.log_softmax(logits[:, -T - 1 : -1] / temperature, dim=-1)  # [N, T, V]
    logp = logp_all.gather(-1, ids[:, -T:, None]).squeeze(-1)  # [N, T]
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # [N, T]
    completion_mask = mask[:, -T:]
    return logp * completion_mask, entropy * completion_mask, logprob_scale(logits / temperature)


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_matches_naive_float64(model64, chunk_size, temperature):
    ids, mask = _batch(model64.config.vocab_size)
    with torch.no_grad():
        logp, entropy = sequence_logprobs(
            model64, ids, mask, T, temperature=temperature, chunk_size=chunk_size, with_entropy=True
        )
        ref_logp, ref_entropy, scale = _naive(model64, ids, mask, temperature)
    assert logp.dtype == torch.float64 and logp.shape == (3, T)
    n = forward_path_length(model64.config, ids.shape[1])
    assert_close(logp, ref_logp, n=n, scale=scale)
    assert_close(entropy, ref_entropy, n=n, scale=scale)
    assert (logp[1, 2:] == 0).all() and (logp[1, :2] < 0).all()  # padding zeroed, real tokens scored


def test_chunked_matches_naive_float32(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    ids, mask = _batch(model.config.vocab_size)
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, ids, mask, T, chunk_size=4)
        ref_logp, _, scale = _naive(model, ids, mask, 1.0)
    assert entropy is None
    assert_close(logp, ref_logp, n=forward_path_length(model.config, ids.shape[1]), scale=scale)


def test_left_padding_does_not_change_logprobs(model64):
    ids, mask = _batch(model64.config.vocab_size)
    row = ids[2:3, -T - 1 :]  # the 1-token prompt and its completion, no left padding
    with torch.no_grad():
        padded, _ = sequence_logprobs(model64, ids, mask, T)
        unpadded, _ = sequence_logprobs(model64, row, mask[2:3, -T - 1 :], T)
        scale = _naive(model64, ids, mask, 1.0)[2]
    assert_close(padded[2:3], unpadded, n=forward_path_length(model64.config, ids.shape[1]), scale=scale)


def test_gradients_match_naive(model64):
    ids, mask = _batch(model64.config.vocab_size)
    logp, _ = sequence_logprobs(model64, ids, mask, T, temperature=0.7, chunk_size=2)
    grads = torch.autograd.grad(logp.sum(), list(model64.parameters()))
    ref_logp, _, _ = _naive(model64, ids, mask, 0.7)
    ref_grads = torch.autograd.grad(ref_logp.sum(), list(model64.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
    # backward retraces the forward, then sums over the batch's tokens; a gradient's terms are taken to be no
    # larger than the largest gradient
    n = forward_path_length(model64.config, ids.shape[1]) + ids.numel()
    scale = max(g.abs().max().item() for g in ref_grads)
    for g, ref in zip(grads, ref_grads):
        assert_close(g, ref, n=n, scale=scale)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"completion_len": 0}, "completion_len"),
        ({"completion_len": 6 + T}, "completion_len"),
        ({"completion_len": T, "temperature": 0.0}, "temperature"),
        ({"completion_len": T, "chunk_size": 0}, "chunk_size"),
    ],
)
def test_invalid_arguments(tiny_llama_dir, kwargs, match):
    model = load_model(tiny_llama_dir)
    ids, mask = _batch(model.config.vocab_size)
    with pytest.raises(ValueError, match=match):
        sequence_logprobs(model, ids, mask, **kwargs)
