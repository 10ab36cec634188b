"""The fast rollout backend: the policy's own ``forward``, a preallocated KV cache and a shared prompt
prefill.

What it does differently from ``model.generate`` (the reference backend in ``hf.py``):

* **One prefill per prompt, not per completion.** The ``B`` prompts run once; their keys and values are
  copied ``G`` times into the cache. ``generate`` would run all ``B*G`` identical prompts.
* **A preallocated cache.** Each layer's keys and values live in one ``[N, heads, P+T, head_dim]`` buffer
  written in place (``model.kv.Slots``); ``DynamicCache`` re-allocates and copies the whole cache at every
  token.
* **Finished rows leave the batch.** A row that produced EOS is masked at once and dropped from the cache
  (one compaction) when a quarter of the batch has finished.
* **No logits kept.** The sampler returns the token and its log-probability at each step.
* **Per-group random streams** (``sampler.py``): the samples of a group depend on ``(seed, group index)``
  only, not on the batch it was sampled in, so a run gives the same rollouts on 1 or 8 ranks. The uniforms
  are drawn on the CPU (one ``[N, T]`` copy to the device per rollout), so a seed means the same draws on
  every device.
* **Precision.** Under ``train.precision=bf16-mixed`` the forward passes run under bf16 autocast on the
  float32 weights (no second, bfloat16 copy of the model is kept); the sampler upcasts the logits to float32
  before its softmax.

Multi-turn episodes (``interleave``, used by ``env/episode.py``) continue **in place**: a row that ends a
turn with EOS hands its turn to the caller, which answers with the environment's reply tokens (or ends the
episode); those tokens are fed to that row one per step, onto its own cache, while the other rows go on
sampling in the same batch. Nothing of the conversation is run twice: every token of an episode enters the
cache once, whatever turn each row is in.

It runs any ``transformers`` decoder whose layers all use full attention through the ``Cache`` API (Llama,
Qwen2/3, Mistral without a sliding window, Phi-3, Gemma …); ``unsupported_reason`` says why it cannot run a
model, and the trainer then uses ``hf``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from grouprl.errors import ConfigError
from grouprl.model.kv import cache_unsupported_reason, preallocated_copies, with_cache
from grouprl.model.logprobs import position_ids_from_mask
from grouprl.rollout.hf import _eos_ids, _sampling_state, _validate, completion_mask_from_eos, left_pad
from grouprl.rollout.sampler import group_uniforms, sample_tokens
from grouprl.types import Rollout, SamplingParams

COMPACT_FRACTION = 0.25
"""Drop finished rows from the cache once this fraction of the rows in it has finished."""


unsupported_reason = cache_unsupported_reason
"""Why the fast backend cannot run a model (None: it can): it needs the prompt key/value cache of
``model.kv``."""


class FastRollout:
    """Batched prefill + decode with a preallocated KV cache on the policy module itself (weights always
    current)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ConfigError(f"rollout.backend=fast cannot run {type(model).__name__}: {reason}; "
                              "use rollout.backend=hf")
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token; load it with grouprl.model.load_tokenizer "
                             "(uses EOS).")
        self.model, self.autocast = model, autocast
        self.pad_id: int = tokenizer.pad_token_id
        self.eos_ids = torch.tensor(_eos_ids(model, tokenizer), device=model.device)

    def load_weights(self, policy: torch.nn.Module) -> None:
        """No-op when sampling from the policy module itself; otherwise copy its weights."""
        if policy is not self.model:
            self.model.load_state_dict(policy.state_dict())

    def _prefill(self, prompts: torch.Tensor, prompt_mask: torch.Tensor, repeats: int, T: int):
        """Run the ``[B, P]`` prompts once and give each ``repeats`` rows of a cache with room for ``T`` more
        tokens: ``(cache, logits [N, V] of the next token, attention [N, P+T], next_position [N, 1])``,
        ``N = B * repeats``."""
        P = prompts.shape[1]
        positions = position_ids_from_mask(prompt_mask)  # [B, P]
        prefill = DynamicCache(config=self.model.config)
        out = self.model(input_ids=prompts, attention_mask=prompt_mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **with_cache(self.model, prefill))
        cache = preallocated_copies(prefill, repeats, P + T)
        logits = out.logits[:, -1].repeat_interleave(repeats, 0)  # [N, V]
        del out, prefill
        attention = torch.cat([prompt_mask.repeat_interleave(repeats, 0),
                               torch.ones(len(logits), T, dtype=prompt_mask.dtype, device=prompts.device)],
                              dim=1)  # [N, P+T]
        next_position = positions[:, -1:].repeat_interleave(repeats, 0) + 1  # [N, 1]
        return cache, logits, attention, next_position

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], num_generations: int,
                 sampling: SamplingParams) -> Rollout:
        """Sample ``G`` completions per prompt; rows ``g*G .. g*G+G-1`` belong to prompt ``g``."""
        _validate(prompt_ids, num_generations, sampling)
        G, T = num_generations, sampling.max_new_tokens
        device = self.model.device
        prompts, prompt_mask = (x.to(device) for x in left_pad(prompt_ids, self.pad_id))  # [B, P]
        B, P = prompts.shape
        N = B * G
        seed = sampling.seed if sampling.seed is not None else int(torch.randint(1 << 62, (), device="cpu"))
        uniforms = None
        if sampling.temperature > 0:
            uniforms = group_uniforms(seed, sampling.group_offset, B, G, T).to(device)  # [N, T]
        eos = self.eos_ids.to(device)

        tokens = torch.full((N, T), self.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros(N, T, device=device)
        with _sampling_state(self.model, None), self.autocast():
            cache, logits, attention, next_position = self._prefill(prompts, prompt_mask, G, T)
            rows = torch.arange(N, device=device)  # the batch rows the cache holds, in cache order
            alive = torch.ones(N, dtype=torch.bool, device=device)  # per cache row: not finished yet
            width = T
            for t in range(T):
                u = None if uniforms is None else uniforms[rows, t]
                new, logp = sample_tokens(logits, u, sampling.temperature, sampling.top_p, sampling.top_k)
                live_rows = rows[alive]
                tokens[live_rows, t] = new[alive]
                logps[live_rows, t] = logp[alive]
                alive &= ~torch.isin(new, eos)
                if not alive.any():
                    width = t + 1
                    break
                if t == T - 1:
                    break
                if (~alive).sum() >= COMPACT_FRACTION * len(rows):  # drop the finished rows from the cache
                    keep = alive.nonzero().squeeze(-1)
                    for layer in cache.layers:
                        layer.keep_rows(keep)
                    rows, new, next_position, attention = (rows[keep], new[keep], next_position[keep],
                                                           attention[keep])
                    alive = alive[keep]
                out = self.model(input_ids=new.unsqueeze(-1), attention_mask=attention[:, : P + t + 1],
                                 position_ids=next_position + t, use_cache=True,
                                 **with_cache(self.model, cache))
                logits = out.logits[:, -1]

        completion_ids = tokens[:, :width]
        mask, truncated = completion_mask_from_eos(completion_ids, eos)
        return Rollout(
            prompt_ids=prompts.repeat_interleave(G, 0),
            prompt_mask=prompt_mask.repeat_interleave(G, 0),
            completion_ids=completion_ids.masked_fill(~mask, self.pad_id),
            completion_mask=mask.long(),
            truncated=truncated,
            sampler_logprobs=logps[:, :width].masked_fill(~mask, 0.0),
        )

    @torch.no_grad()
    def interleave(self, prompt_ids: list[list[int]], num_generations: int, sampling: SamplingParams,
                   reply: Callable[[int, list[int], list[float], bool], list[int] | None]) -> None:
        """Multi-turn episodes on one cache: row ``i`` (of ``N = len(prompt_ids)``, groups of ``G``) starts
        from ``prompt_ids[i]`` and samples until EOS or until it holds ``max_new_tokens`` tokens after its
        prompt; then ``reply(i, turn_tokens, turn_logps, ended)`` (``ended``: the turn ended with EOS) gives
        the tokens that follow (the environment's, fed one per step without sampling) or None (the episode
        is over). The caller keeps the episodes; this returns nothing.

        Every row feeds exactly one token per step (a sampled one, or the next environment token), so the
        rows' cache positions stay aligned and one batched forward serves rows in different turns. A group's
        rows share one prefill when their prompts are equal. The random stream of a row is its group's
        (``sampler.py``), indexed by the token's place after the prompt (which is the step: one token a step).
        """
        G, T = num_generations, sampling.max_new_tokens
        _validate(prompt_ids, G, sampling)
        N = len(prompt_ids)
        if N % G:
            raise ValueError(f"{N} episodes are not whole groups of {G}")
        B = N // G
        device = self.model.device
        shared = all(prompt_ids[g * G + j] == prompt_ids[g * G] for g in range(B) for j in range(G))
        firsts = prompt_ids[::G] if shared else prompt_ids
        prompts, prompt_mask = (x.to(device) for x in left_pad(firsts, self.pad_id))
        repeats = G if shared else 1
        P = prompts.shape[1]
        seed = sampling.seed if sampling.seed is not None else int(torch.randint(1 << 62, (), device="cpu"))
        uniforms = None
        if sampling.temperature > 0:
            uniforms = group_uniforms(seed, sampling.group_offset, B, G, T).to(device)  # [N, T]
        eos = set(self.eos_ids.tolist())
        seqs: list[list[int]] = [[] for _ in range(N)]  # each row's tokens after its prompt, fed or not
        turn: list[list[int]] = [[] for _ in range(N)]  # the current turn's sampled tokens ...
        turn_logp: list[list[float]] = [[] for _ in range(N)]  # ... and their log-probs
        fed = [0] * N  # how many of seqs[i] are in the cache
        with _sampling_state(self.model, None), self.autocast():
            cache, logits, attention, next_position = self._prefill(prompts, prompt_mask, repeats, T)
            rows = torch.arange(N, device=device)  # the episodes the cache holds, in cache order
            alive = [True] * N  # per cache row
            for t in range(T):
                order = rows.tolist()
                u = None if uniforms is None else uniforms[rows, t]  # a live row's next token is its t-th
                new, logp = sample_tokens(logits, u, sampling.temperature, sampling.top_p, sampling.top_k)
                new, logp = new.tolist(), logp.tolist()
                feed = [self.pad_id] * len(order)
                for c, i in enumerate(order):
                    if not alive[c]:
                        continue
                    if fed[i] == len(seqs[i]):  # nothing pending: the model's turn
                        seqs[i].append(new[c])
                        turn[i].append(new[c])
                        turn_logp[i].append(logp[c])
                        ended = new[c] in eos
                        if ended or len(seqs[i]) >= T:
                            after = reply(i, turn[i], turn_logp[i], ended)
                            turn[i], turn_logp[i] = [], []
                            if after is None:
                                alive[c] = False
                                continue
                            seqs[i] += after
                    feed[c] = seqs[i][fed[i]]
                    fed[i] += 1
                if not any(alive) or t == T - 1:
                    break
                keep = [c for c, a in enumerate(alive) if a]
                if len(order) - len(keep) >= COMPACT_FRACTION * len(order):  # drop finished rows
                    index = torch.tensor(keep, device=device)
                    for layer in cache.layers:
                        layer.keep_rows(index)
                    rows, next_position, attention = rows[index], next_position[index], attention[index]
                    feed, alive = [feed[c] for c in keep], [True] * len(keep)
                inputs = torch.tensor(feed, device=device).unsqueeze(-1)
                out = self.model(input_ids=inputs, attention_mask=attention[:, : P + t + 1],
                                 position_ids=next_position + t, use_cache=True,
                                 **with_cache(self.model, cache))
                logits = out.logits[:, -1]
