"""Held-out evaluation through the same rollout backend and verifier as training.

* ``pass@1`` — greedy decoding, the fraction of prompts whose completion the verifier accepts.
* ``pass@k`` — k samples at the eval temperature; a prompt counts if any sample is accepted.
* ``mean@k`` — the mean acceptance over those k samples (an estimate of sampled pass@1).
* ``len_mean``, ``truncated_frac`` — of the greedy completions: mean length in tokens, and the share that hit
  ``max_new_tokens`` without EOS (an instruct model cut off before its answer scores 0, whatever it knew).

With an environment (a backend with ``play``: ``env/episode.py``) each sample is a whole episode, scored as in
training (the trajectory as messages, the environment's reward column); ``len_mean`` counts the model's own
tokens, and ``turns_mean`` and ``tool_calls_mean`` are the greedy episodes' means.

A completion is *accepted* when the verifier (the ``verifier`` config key: by default the first reward
function) gives it at least 1.0. The verifier
is called as in training (TRL's arguments, ``trainer_state`` included); what it logs with ``log_metric`` is
averaged into ``eval/reward_log/<name>``, and ``log_extra`` columns are dropped (evaluation writes no
completions).
"""

from __future__ import annotations

import torch

from grouprl.rewards import RewardState, reward_inputs
from grouprl.rollout.text import decode_completions, encode_prompts
from grouprl.types import SamplingParams


def _accepted(backend, tokenizer, rewards, rows, prompt_texts, n, sampling, state, logged) -> tuple:
    """``[len(rows), n]`` bool: the verifier accepts the sample; the ``[len(rows) * n]`` completion lengths
    (the model's tokens) and truncation flags; and the episodes' counts (``{}`` without an environment).
    What the verifier logs is added to ``logged``."""
    episodes = {}
    if hasattr(backend, "play"):  # multi-turn episodes, scored as training scores them
        played = backend.play(rows, n, sampling)
        rollout, completion_ids, episodes = played.rollout, played.completion_ids, played.episodes
        columns = {**reward_inputs(rows, played.completions, n)[2], **played.columns}
        prompts, completions = played.prompts, played.completions
    else:
        rollout = backend.generate(encode_prompts(tokenizer, prompt_texts), n, sampling)
        texts, completion_ids = decode_completions(tokenizer, rollout)
        prompts, completions, columns = reward_inputs(rows, texts, n)
    scores = rewards.score(prompts, completions, completion_ids, columns, state=state, verifier_only=True)
    for name, values in scores.report.metrics.items():
        logged.setdefault(name, []).extend(values)
    verdict = scores.parts[rewards.verifier]
    accepted = (torch.nan_to_num(verdict, nan=0.0) >= 1.0).reshape(len(rows), n)
    return accepted, rollout.completion_mask.sum(dim=1).float(), rollout.truncated.float(), episodes


@torch.no_grad()
def evaluate(backend, tokenizer, rewards, rows: list[dict], prompt_texts: list[str], *, max_new_tokens: int,
             k: int = 0, temperature: float = 1.0, batch_size: int = 256, seed: int = 0,
             state: RewardState | None = None) -> dict[str, float]:
    if not rows:
        return {}
    greedy, lengths, truncated, sampled, logged, counts = [], [], [], [], {}, {}
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        greedy_params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        accepted, length, cut, episodes = _accepted(backend, tokenizer, rewards, rows[part],
                                                    prompt_texts[part], 1, greedy_params, state, logged)
        for key in ("turns", "tool_calls"):
            if key in episodes:
                counts.setdefault(key, []).append(episodes[key])
        greedy.append(accepted)
        lengths.append(length)
        truncated.append(cut)
        if k > 0:
            sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                      seed=seed + start)
            sampled.append(_accepted(backend, tokenizer, rewards, rows[part], prompt_texts[part], k, sampling,
                                     state, logged)[0])
    out = {"eval/pass@1": torch.cat(greedy).float().mean().item(), "eval/num_prompts": float(len(rows)),
           "eval/len_mean": torch.cat(lengths).mean().item(),
           "eval/truncated_frac": torch.cat(truncated).mean().item()}
    if k > 0:
        samples = torch.cat(sampled).float()
        out[f"eval/pass@{k}"] = samples.max(dim=1).values.mean().item()
        out[f"eval/mean@{k}"] = samples.mean().item()
    out.update({f"eval/{key}_mean": torch.cat(values).mean().item() for key, values in counts.items()})
    out.update({f"eval/reward_log/{name}": sum(values) / len(values)
                for name, values in logged.items() if values})
    return out
