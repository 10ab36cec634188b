"""Environment tokens are in the sequence and out of the loss: on real multi-turn episodes of the tiny Llama
(hf backend), the teacher-forced passes attend to them (their log-probs of the model's tokens equal the
sampler's), and the loss and its gradient equal the slow reference loop run on the model's tokens alone."""

from __future__ import annotations

import pytest
import torch

from grouprl.algo import compute_loss, preset
from grouprl.env import check_environment, tool_names
from grouprl.env.builtin import GuessNumber
from grouprl.env.episode import EnvironmentRollout, Renderer
from grouprl.env.host import EnvHost
from grouprl.env.parse import hermes
from grouprl.model.load import load_model
from grouprl.model.passes import rollout_logprobs
from grouprl.rollout import HFRollout
from grouprl.types import SamplingParams
from reference import slow_loss
from tolerance import assert_close, logprob_rounding

G = 3


@pytest.fixture(scope="module")
def episodes(tiny_llama_dir, char_tokenizer):
    """Guessing-game episodes (every turn gets a reply from ``respond``) of a random tiny Llama."""
    model = load_model(tiny_llama_dir)
    host = EnvHost(GuessNumber, tool_names(GuessNumber), timeout=5.0, max_chars=100, isolate=False)
    runner = EnvironmentRollout(HFRollout(model, char_tokenizer), char_tokenizer, host,
                                Renderer(char_tokenizer, check_environment(GuessNumber, "g"), [2]), hermes,
                                max_turns=3)
    rows = [{"prompt": "Guess 1 to 9:", "target": 4}, {"prompt": "Number?", "target": 8}]
    played = runner.play(rows, G, SamplingParams(max_new_tokens=40, temperature=1.0, seed=3))
    r = played.rollout
    assert r.env_mask.sum() > 0 and (r.completion_mask * r.env_mask).sum() == 0
    assert (r.completion_mask[:, 1:] > r.completion_mask[:, :-1]).any(), "no model turn after an env reply"
    return model, played


@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared-prompt", "per-row"])
def test_teacher_forced_logprobs_see_the_environment_tokens(episodes, share_prompts):
    model, played = episodes
    r = played.rollout
    with torch.no_grad():
        logp, _ = rollout_logprobs(model, r, torch.arange(len(r.truncated)), G, temperature=1.0,
                                   chunk_size=16, share_prompts=share_prompts)
    assert (logp[r.completion_mask == 0] == 0).all()  # nothing at environment tokens or padding
    ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    mask = torch.cat([r.prompt_mask, r.sequence_mask()], 1)
    assert_close(logp, r.sampler_logprobs, **logprob_rounding(model, ids, mask))


def _compact(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's tokens of each row, left-aligned: what a single-turn rollout of them would hold."""
    out = torch.zeros(x.shape[0], int(mask.sum(-1).max()), dtype=x.dtype)
    for i in range(x.shape[0]):
        own = x[i][mask[i].bool()]
        out[i, :len(own)] = own
    return out


@pytest.mark.parametrize("name,overrides", [("grpo", dict(beta=0.04)), ("dr_grpo", {}), ("dapo", {}),
                                            ("gspo", {}), ("grpo", dict(loss_type="seq_mean_token_sum"))])
def test_loss_and_gradient_equal_the_reference_loop_on_the_models_tokens(episodes, name, overrides):
    _, played = episodes
    r = played.rollout
    mask = r.completion_mask.double()  # [N, T]: zeros at the environment's tokens, inside the sequence
    N, T = mask.shape
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(N, T, generator=g, dtype=torch.float64) * 3 * mask
    logp = (old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.3 * mask).requires_grad_()
    ref = (old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.3) * mask
    rewards = torch.tensor([0.0, 1.0, 1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    spec = preset(name, **overrides)
    out = compute_loss(rewards, G, logp, old, ref, mask, spec, truncated=r.truncated, max_new_tokens=40)
    out.loss.backward()
    compact = _compact(torch.ones(N, T), mask)  # [N, T'] the model's tokens only
    logp_c = _compact(logp.detach(), mask).requires_grad_()
    expected, _ = slow_loss.loss(rewards.tolist(), G, logp_c, _compact(old, mask), _compact(ref, mask),
                                 compact, spec, truncated=r.truncated.tolist(), norm_length=40)
    expected.backward()
    assert_close(out.loss, expected, n=N * T)
    assert (logp.grad[mask == 0] == 0).all()  # no gradient reaches an environment token
    assert_close(_compact(logp.grad, mask), logp_c.grad, n=N * T)
