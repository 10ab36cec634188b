"""``shared_prompt_logprobs`` (each prompt run once for its whole group) against ``sequence_logprobs`` on the
expanded rows: same log-probs, entropies and parameter gradients, with uneven groups, left-padded prompts of
different lengths, completions of different lengths, and one-token completions; and the trainer's
``rollout_logprobs`` with micro-batches that cut groups in two."""

from __future__ import annotations

import pytest
import torch

from grouprl.model.load import load_model
from grouprl.model.logprobs import sequence_logprobs, shared_prompt_logprobs
from grouprl.model.passes import can_share_prompts, rollout_logprobs
from grouprl.types import Rollout
from tolerance import assert_close, in_float64, logprob_rounding


@pytest.fixture(scope="module", params=["tiny_llama_dir", "tiny_qwen2_dir"])
def model64(request):
    return in_float64(load_model(request.getfixturevalue(request.param)))


def _groups(vocab: int, repeats: list[int], prompt_lens: list[int], T: int, seed: int = 0):
    """Left-padded prompts ``[b, P]``, and for prompt ``i`` ``repeats[i]`` right-padded completions
    ``[n, T]``."""
    gen = torch.Generator().manual_seed(seed)
    P = max(prompt_lens)
    prompts = torch.randint(4, vocab, (len(repeats), P), generator=gen)
    prompt_mask = (torch.arange(P) >= P - torch.tensor(prompt_lens)[:, None]).long()
    n = sum(repeats)
    completions = torch.randint(4, vocab, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    lengths[0] = T  # at least one full row, so the width is really T
    completion_mask = (torch.arange(T) < lengths[:, None]).long()
    return (prompts * prompt_mask, prompt_mask, torch.tensor(repeats), completions * completion_mask,
            completion_mask)


def _expanded(prompts, prompt_mask, repeats, completions, completion_mask):
    ids = torch.cat([prompts.repeat_interleave(repeats, 0), completions], 1)
    mask = torch.cat([prompt_mask.repeat_interleave(repeats, 0), completion_mask], 1)
    return ids, mask


@pytest.mark.parametrize(("repeats", "prompt_lens", "T"), [([8, 8, 8], [6, 3, 1], 5),
                                                           ([3, 1, 5], [2, 6, 4], 4),
                                                           ([4, 4], [5, 5], 1)])
def test_equals_sequence_logprobs_with_gradients(model64, repeats, prompt_lens, T):
    batch = _groups(model64.config.vocab_size, repeats, prompt_lens, T)
    ids, mask = _expanded(*batch)
    params = list(model64.parameters())

    ref_logp, ref_entropy = sequence_logprobs(model64, ids, mask, T, temperature=0.7, chunk_size=3,
                                              with_entropy=True)
    ref_grads = torch.autograd.grad((ref_logp + 0.1 * ref_entropy).sum(), params)
    logp, entropy = shared_prompt_logprobs(model64, *batch, temperature=0.7, chunk_size=3, with_entropy=True)
    grads = torch.autograd.grad((logp + 0.1 * entropy).sum(), params)

    rounding = logprob_rounding(model64, ids, mask, 0.7)
    assert_close(logp, ref_logp, **rounding)
    assert_close(entropy, ref_entropy, **rounding)
    # backward retraces the forward, then sums over the tokens (and the prompt's copies); a gradient's terms
    # are taken to be no larger than the largest gradient
    scale = max(g.abs().max().item() for g in ref_grads)
    assert scale > 0
    for g, ref in zip(grads, ref_grads):
        assert_close(g, ref, n=rounding["n"] + ids.numel(), scale=scale)


def test_a_wrong_grouping_is_rejected(model64):
    prompts, prompt_mask, _, completions, completion_mask = _groups(model64.config.vocab_size, [2, 2],
                                                                    [3, 3], 3)
    with pytest.raises(ValueError, match="repeats"):
        shared_prompt_logprobs(model64, prompts, prompt_mask, torch.tensor([2, 1]), completions,
                               completion_mask)


def test_rollout_logprobs_with_micro_batches_cutting_groups(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    G = 4
    prompts, prompt_mask, repeats, completions, completion_mask = _groups(model.config.vocab_size, [G] * 3,
                                                                          [5, 2, 4], 6, seed=1)
    rollout = Rollout(prompts.repeat_interleave(repeats, 0), prompt_mask.repeat_interleave(repeats, 0),
                      completions, completion_mask, torch.zeros(3 * G, dtype=torch.bool))
    assert can_share_prompts(model)
    rows = torch.arange(3 * G)
    ids, mask = _expanded(prompts, prompt_mask, repeats, completions, completion_mask)
    rounding = logprob_rounding(model, ids, mask)
    with torch.no_grad():
        full, _ = rollout_logprobs(model, rollout, rows, G, temperature=1.0, chunk_size=64,
                                   share_prompts=False)
        for micro in (1, 3, 5, 12):  # 3 and 5 rows per micro-batch split groups across micro-batches
            parts = [rollout_logprobs(model, rollout, r, G, temperature=1.0, chunk_size=64)[0]
                     for r in torch.split(rows, micro)]
            assert_close(torch.cat(parts), full, **rounding)
