"""Length-ordered micro-batches (``model.memory.plan_micro_batches``): each under the budget, every row once,
groups kept together where they fit, less padding than consecutive rows; and the update's gradient through
``accumulate_gradients`` with the plan equals the one-pass gradient within float32 rounding."""

from __future__ import annotations

import torch

from grouprl.algo import Counts, preset
from grouprl.model.load import load_model
from grouprl.model.memory import plan_micro_batches, row_extents
from grouprl.model.passes import TrainingPass
from grouprl.train.step import accumulate_gradients
from grouprl.types import Rollout, UpdateInputs
from tolerance import assert_close, forward_path_length


def _rollout(vocab: int, B: int, G: int, P: int, T: int, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(2, P + 1, (B,), generator=g)
    prompt_mask = (torch.arange(P) >= P - prompt_len[:, None]).long().repeat_interleave(G, 0)
    lengths = torch.randint(1, T + 1, (B * G,), generator=g)
    completion_mask = (torch.arange(T) < lengths[:, None]).long()
    prompts = torch.randint(4, vocab, (B, P), generator=g).repeat_interleave(G, 0) * prompt_mask
    return Rollout(prompts, prompt_mask, torch.randint(4, vocab, (B * G, T), generator=g) * completion_mask,
                   completion_mask, lengths == T)


def _positions_run(plan, prompt_len, completion_len) -> int:
    return sum(len(p) * int(prompt_len[p].max() + completion_len[p].max()) for p in plan)


def test_plan_covers_every_row_once_within_the_budget_with_less_padding():
    r = _rollout(50, 8, 8, 12, 40)
    P, T = row_extents(r.prompt_mask, r.sequence_mask())
    assert torch.equal(T, r.completion_mask.sum(-1))  # right-padded: the extent is the length
    groups = torch.arange(64) // 8
    per_token = 1024.0
    budget_mib = 150 * per_token / 2**20  # 150 positions per micro-batch
    plan = plan_micro_batches(P, T, groups, per_token, budget_mib)
    assert sorted(torch.cat(plan).tolist()) == list(range(64))
    for p in plan:
        assert len(p) == 1 or len(p) * int(P[p].max() + T[p].max()) <= 150
    rows = max(1, 150 // (12 + 40))  # what consecutive micro-batches of the full width hold
    consecutive = list(torch.split(torch.arange(64), rows))
    assert _positions_run(plan, P, T) < _positions_run(consecutive, P, T)
    # a generous budget: one micro-batch; a row over the budget alone: a micro-batch of its own
    assert [len(p) for p in plan_micro_batches(P, T, groups, per_token, 10.0)] == [64]
    assert all(len(p) == 1 for p in plan_micro_batches(P, T, groups, per_token, 1e-6))
    assert plan_micro_batches(P[:0], T[:0], groups[:0], per_token, 1.0) == []


def test_plan_keeps_groups_whole_where_they_fit():
    P = torch.full((8,), 2)
    T = torch.tensor([3, 3, 3, 3, 1, 1, 1, 1])
    groups = torch.arange(8) // 4
    # 20 positions: a group (4 x 5) fits, two groups (8 x 5) do not; consecutive runs of 4 rows (the
    # balanced split of micro_batch_rows) would be the same here, the plan never cuts a group that fits
    plan = plan_micro_batches(P, T, groups, 1.0, 20 / 2**20)
    assert [p.tolist() for p in plan] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_plan_keeps_a_group_together_and_longest_first():
    P = torch.full((6,), 3)
    T = torch.tensor([2, 9, 4, 1, 1, 8])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    (whole,) = plan_micro_batches(P, T, groups, 1.0, 1.0)
    # both groups reach 9 and 8: group 0 first; within a group the longest first
    assert whole.tolist() == [1, 2, 0, 5, 3, 4]


def test_update_gradient_with_the_plan_equals_one_pass(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    G = 4
    r = _rollout(model.config.vocab_size, 3, G, 6, 10, seed=2)
    n = r.completion_ids.shape[0]
    spec = preset("grpo", beta=0.0)
    adv = torch.randn(n, generator=torch.Generator().manual_seed(3))
    inputs = UpdateInputs(r, adv, r.completion_mask, None, None)
    counts = Counts.of(r.completion_mask)
    rows = torch.arange(n)
    P, T = row_extents(r.prompt_mask, r.sequence_mask())
    plan = plan_micro_batches(P, T, rows // G, 1.0, 40 / 2**20)
    cut = len({int(g) for p in plan for g in torch.unique(p // G)}) < sum(len(torch.unique(p // G))
                                                                          for p in plan)
    assert len(plan) > 2 and cut  # a group's rows in several micro-batches, the order not the rows' own
    grads, metrics = [], []
    for kw in ({"micro_batch_size": n}, {"micro_batch_size": n, "plan": plan}):
        model.zero_grad(set_to_none=True)
        metrics.append(accumulate_gradients(TrainingPass(model), inputs, rows, G, spec, counts,
                                            temperature=1.0, chunk_size=16, norm_length=10, **kw))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    # the forward, then the sum over the batch's tokens in the backward; terms no larger than the largest
    # gradient
    length = forward_path_length(model.config, 16) + int(r.completion_mask.sum())
    scale = max(g.abs().max().item() for g in grads[0].values())
    for name, grad in grads[0].items():
        assert_close(grads[1][name], grad, n=length, scale=scale, msg=name)
    assert_close(metrics[1]["entropy"], metrics[0]["entropy"], n=length, dtype=torch.float32)
