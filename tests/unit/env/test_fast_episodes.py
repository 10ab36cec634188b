"""The fast backend continues episodes in place (``FastRollout.interleave``): greedy trajectories equal the
``hf`` reference's, which re-runs the whole conversation every turn, token for token, on a scripted quiz
played by the embedded arithmetic model and on the embedded calculator player's own environment; and every
token of an episode enters the cache once."""

from __future__ import annotations

import pytest
import torch

from grouprl.env import check_environment, tool_names
from grouprl.env.builtin import Calculator, calculator_rows
from grouprl.env.episode import EnvironmentRollout, Renderer
from grouprl.env.host import EnvHost
from grouprl.env.parse import hermes
from grouprl.model.assets import ASSETS_DIR, resolve_model_path
from grouprl.model.load import load_model, load_tokenizer
from grouprl.rollout import FastRollout, HFRollout
from grouprl.types import SamplingParams
from tolerance import assert_close, logprob_rounding


class Quiz:
    """Asks the next sum after every answer, three times, then ends (no tools: ``respond`` only)."""

    def reset(self, first, **row) -> None:
        self.asked = int(first)
        return None

    def respond(self, message: str) -> str | None:
        self.asked += 1
        return None if self.asked > 3 else f"{10 + 7 * self.asked}+{self.asked}="


def _runner(backend, tokenizer, env, max_turns: int) -> EnvironmentRollout:
    host = EnvHost(env, tool_names(env), timeout=5.0, max_chars=100, isolate=False)
    renderer = Renderer(tokenizer, check_environment(env, env.__name__), [int(i) for i in backend.eos_ids])
    return EnvironmentRollout(backend, tokenizer, host, renderer, hermes, max_turns=max_turns)


def _both(path, env, rows, G: int, max_turns: int, sampling: SamplingParams):
    model, tokenizer = load_model(path), load_tokenizer(path)
    out = []
    for backend in (FastRollout(model, tokenizer), HFRollout(model, tokenizer)):
        runner = _runner(backend, tokenizer, env, max_turns)
        try:
            out.append(runner.play(rows, G, sampling))
        finally:
            runner.close()
    return model, *out


def _whole(r):
    """A rollout's episodes as ids and attention mask, the environment's tokens included."""
    return (torch.cat([r.prompt_ids, r.completion_ids], 1),
            torch.cat([r.prompt_mask, r.completion_mask + r.env_mask], 1))


def _assert_same_episodes(model, fast, ref) -> None:
    assert fast.completion_ids == ref.completion_ids
    assert fast.completions == ref.completions
    a, b = fast.rollout, ref.rollout
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "env_mask", "truncated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert_close(a.sampler_logprobs, b.sampler_logprobs, **logprob_rounding(model, *_whole(b)))
    for key in ("turns", "tool_calls", "tool_errors", "turn_limit"):
        assert torch.equal(fast.episodes[key], ref.episodes[key]), key


def test_greedy_quiz_episodes_are_identical_on_fast_and_hf():
    sums = ((37, 48, 0), (5, 9, 1), (70, 21, 2), (3, 3, 3))
    rows = [{"prompt": f"{a}+{b}=", "first": f} for a, b, f in sums]
    model, fast, ref = _both(resolve_model_path("default"), Quiz, rows, 2, 4,
                      SamplingParams(max_new_tokens=40, temperature=0.0))
    assert fast.rollout.env_mask.sum() > 0 and fast.episodes["turns"].max() >= 3  # really several turns
    assert fast.episodes["turns"].min() < fast.episodes["turns"].max()  # rows in different turns at once
    _assert_same_episodes(model, fast, ref)


@pytest.mark.skipif(not (ASSETS_DIR / "default-calculator").is_dir(), reason="not built")
def test_greedy_calculator_episodes_of_the_embedded_player_are_identical_on_fast_and_hf():
    rows = calculator_rows("eval", 24, 1)
    model, fast, ref = _both(resolve_model_path("default-calculator"), Calculator, rows, 2, 2,
                      SamplingParams(max_new_tokens=112, temperature=0.0))
    assert fast.episodes["tool_calls"].sum() >= len(rows)  # the player calls tools
    _assert_same_episodes(model, fast, ref)


def test_sampled_episodes_on_fast_feed_each_token_once_and_keep_the_rules():
    """At temperature 1 the two backends draw differently; the fast one's episodes still keep the budget,
    and its sampler log-probs are the model's on the whole trajectory."""
    from grouprl.model.logprobs import position_ids_from_mask

    path = resolve_model_path("default")
    model, tokenizer = load_model(path), load_tokenizer(path)
    calls = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    runner = _runner(FastRollout(model, tokenizer), tokenizer, Quiz, 4)
    rows = [{"prompt": "12+34=", "first": 0}, {"prompt": "8+8=", "first": 1}]
    try:
        played = runner.play(rows, 3, SamplingParams(max_new_tokens=40, temperature=1.0, seed=5))
    finally:
        runner.close()
        hook.remove()
    r = played.rollout
    assert calls[0][0] == len(rows)  # one prefill per group
    assert all(shape[1] == 1 for shape in calls[1:])  # then one token per row and step: nothing re-run
    lengths = (r.completion_mask + r.env_mask).sum(-1)
    assert len(calls) - 1 <= int(lengths.max())
    assert int(lengths.max()) <= 40
    ids, mask = _whole(r)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    P = r.prompt_ids.shape[1]
    logp = logits[:, P - 1:-1].log_softmax(-1).gather(-1, r.completion_ids.unsqueeze(-1)).squeeze(-1)
    own = r.completion_mask.bool()
    assert_close(r.sampler_logprobs[own], logp[own], **logprob_rounding(model, ids, mask))
