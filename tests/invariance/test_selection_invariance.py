"""(i) The token selections of Clip-Cov, KL-Cov and M2PO do not depend on how a mini-batch is spread over
ranks or split into micro-batches: the trainer's ``selection_stage`` gathers the in-loss tokens of every rank
in the one-process order, so each rank keeps exactly its rows of the one-process selection."""

from types import SimpleNamespace

import pytest
import torch

from grouprl.algo import Counts, group_advantages, policy_loss, preset, select_tokens
from grouprl.distributed import SINGLE
from grouprl.train.step import selection_stage
from reference.test_against_loop import random_batch

SPECS = {"clip_cov": dict(clip_cov_ratio=0.3, clip_cov_lb=0.05, clip_cov_ub=3.0),
         "kl_cov": dict(kl_cov_ratio=0.3), "m2po": dict(m2po_tau=0.001)}


class Ranks:
    """A stand-in for ``Dist`` whose gather returns every simulated rank's rows, in rank order."""

    def __init__(self, parts):
        self.parts = parts

    def gather_rows(self, x):
        return torch.cat(self.parts)


def batch(G=4, B=4, T=6):
    rewards, new, old, ref, mask, truncated = random_batch(11, G, B, T)
    mu = old - 0.2 * (new - old)
    return rewards, new, old, mask, truncated, mu


@pytest.mark.parametrize("name", sorted(SPECS))
def test_selection_over_ranks_equals_the_one_process_selection(name):
    G = 4
    rewards, new, old, mask, truncated, mu = batch(G)
    spec = preset(name, **SPECS[name])
    adv = group_advantages(rewards, G, mask.sum(-1), spec, truncated=truncated)
    loss_mask = mask * adv.in_loss[:, None]
    key = (5, 2, 0, 1)
    one = selection_stage(old, SimpleNamespace(loss_mask=loss_mask, advantages=adv.advantages,
                                               rollout=SimpleNamespace(sampler_logprobs=mu)),
                          torch.arange(16), G, spec, SimpleNamespace(group_ids=None), key, SINGLE)
    # rank 0 holds groups 2, 3 and rank 1 groups 0, 1 (so the gathered order is not the one-process order)
    shards = [torch.tensor([2, 3]), torch.tensor([0, 1])]
    inputs = []
    for groups in shards:
        rows = (groups[:, None] * G + torch.arange(G)).flatten()
        inputs.append((SimpleNamespace(loss_mask=loss_mask[rows], advantages=adv.advantages[rows],
                                       rollout=SimpleNamespace(sampler_logprobs=mu[rows])),
                       SimpleNamespace(group_ids=groups), rows))
    recorder = SimpleNamespace(seen=[], gather_rows=lambda x: (recorder.seen.append(x), x)[1])
    for inp, b, rows in inputs:
        selection_stage(old[rows], inp, torch.arange(8), G, spec, b, key, recorder)
    gathered = Ranks(recorder.seen)
    for inp, b, rows in inputs:
        got = selection_stage(old[rows], inp, torch.arange(8), G, spec, b, key, gathered)
        for field in ("objective", "masked"):
            whole, part = getattr(one, field), getattr(got, field)
            assert (whole is None) == (part is None)
            if whole is not None:
                assert torch.equal(part, whole[rows])
        assert got.metrics.keys() == one.metrics.keys()
        assert all(torch.equal(got.metrics[k], one.metrics[k]) for k in one.metrics)
    assert (one.objective if one.masked is None else one.masked).any()  # something was selected


@pytest.mark.parametrize("name", sorted(SPECS))
def test_selection_sliced_per_micro_batch_gives_the_full_batch_loss_and_gradient(name):
    G = 4
    rewards, new, old, mask, truncated, mu = batch(G)
    spec = preset(name, **SPECS[name], entropy_coef=0.01)
    adv = group_advantages(rewards, G, mask.sum(-1), spec, truncated=truncated)
    loss_mask = mask * adv.in_loss[:, None]
    counts, H = Counts.of(loss_mask), torch.rand(new.shape, dtype=torch.float64) * mask
    sel = select_tokens(old, adv.advantages, loss_mask, spec, sampler_logp=mu, seed=4)
    logp = new.clone().requires_grad_(True)
    full, _ = policy_loss(logp, old, None, loss_mask, adv.advantages, spec, counts, entropy=H, selection=sel)
    (full_grad,) = torch.autograd.grad(full, logp)
    total, grad = 0.0, torch.zeros_like(new)
    for part in torch.split(torch.arange(16), [3, 6, 7]):
        lp = new[part].clone().requires_grad_(True)
        loss, _ = policy_loss(lp, old[part], None, loss_mask[part], adv.advantages[part], spec, counts,
                              entropy=H[part], selection=sel.rows(part))
        (g,) = torch.autograd.grad(loss, lp)
        total, grad[part] = total + loss.item(), g
    assert total == pytest.approx(full.item(), abs=1e-12)
    torch.testing.assert_close(grad, full_grad, atol=1e-12, rtol=0)
