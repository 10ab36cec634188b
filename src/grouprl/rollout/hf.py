"""The reference rollout backend: batched ``transformers`` ``generate`` on the policy module itself.

Sampling is exactly ``softmax(logits / temperature)`` restricted by top-k then top-p: the checkpoint's own
``generation_config`` (repetition penalty, min-p, suppressed tokens …) is set aside for the call, because any
extra logits processor would make the samples come from a distribution the trainer does not model.
``sampler_logprobs`` are taken from the raw logits divided by the temperature, without the top-k/top-p
renormalisation, so they are the same quantity as ``sequence_logprobs(..., temperature=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from grouprl.rollout.sampler import group_seed
from grouprl.types import Rollout, SamplingParams


def left_pad(prompt_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to one width. Returns ``ids`` ``[B, P]`` long and ``mask`` ``[B, P]`` long, on
    the CPU (built from Python lists; the backends move them to the model's device in one copy)."""
    host = {"device": "cpu"}
    lengths = torch.tensor([len(p) for p in prompt_ids], **host)  # [B]
    width = int(lengths.max())
    mask = torch.arange(width, **host) >= (width - lengths).unsqueeze(1)  # [B, P] True on real tokens
    ids = torch.full(mask.shape, pad_id, dtype=torch.long, **host)
    ids[mask] = torch.tensor([t for p in prompt_ids for t in p], dtype=torch.long, **host)  # row-major
    return ids, mask.long()


def completion_mask_from_eos(
    completion_ids: torch.Tensor, eos_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of valid completion tokens and truncation flags.

    ``completion_ids`` ``[N, T]``; returns ``mask`` ``[N, T]`` bool (True up to and including the first EOS)
    and ``truncated`` ``[N]`` bool (no EOS in the row).
    """
    is_eos = torch.isin(completion_ids, eos_ids).long()  # [N, T]
    eos_before = is_eos.cumsum(1) - is_eos  # [N, T] number of EOS strictly before t
    return eos_before == 0, is_eos.sum(1) == 0


def _token_logprobs(step_logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-prob of ``tokens`` ``[N]`` under ``softmax(step_logits / temperature)``, ``step_logits``
    ``[N, V]``."""
    logits = step_logits.to(torch.promote_types(step_logits.dtype, torch.float32)) / temperature
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the model's generation EOS ids (may be several) plus the
    tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    if not ids:
        raise ValueError(
            "Neither the model's generation_config nor the tokenizer defines an EOS token; set one."
        )
    return sorted(set(ids))


@contextmanager
def _sampling_state(model: PreTrainedModel, seed: int | None) -> Iterator[None]:
    """Eval mode, a neutral generation config and (if ``seed`` is set) a seeded, forked RNG; all restored
    after."""
    was_training, saved_config = model.training, model.generation_config
    device = model.device
    fork = torch.random.fork_rng(
        devices=[] if device.type == "cpu" else [device], device_type=device.type, enabled=seed is not None
    )
    try:
        model.eval()
        model.generation_config = GenerationConfig()
        with fork:
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        model.generation_config = saved_config
        model.train(was_training)


def _validate(prompt_ids: list[list[int]], num_generations: int, sampling: SamplingParams) -> None:
    """Reject requests ``generate`` cannot serve, naming the offending values."""
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError(
            "Every prompt needs at least one token; got an empty prompt list or an empty prompt."
        )
    if num_generations < 1 or sampling.max_new_tokens < 1:
        raise ValueError(
            f"num_generations and max_new_tokens must be >= 1, got {num_generations} and "
            f"{sampling.max_new_tokens}."
        )
    if sampling.temperature < 0 or not 0 < sampling.top_p <= 1 or sampling.top_k < 0:
        raise ValueError(
            "Sampling needs temperature >= 0 (0 = greedy), 0 < top_p <= 1 and top_k >= 0 (0 = off); "
            f"got temperature={sampling.temperature}, top_p={sampling.top_p}, top_k={sampling.top_k}."
        )


class HFRollout:
    """Rollout with ``model.generate``; the model is the policy module itself, so weights are always
    current."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; load it with grouprl.model.load_tokenizer (uses EOS)."
            )
        self.model, self.autocast = model, autocast  # autocast: train.precision's forward context
        self.pad_id: int = tokenizer.pad_token_id
        self.eos_ids: list[int] = _eos_ids(model, tokenizer)

    def load_weights(self, policy: torch.nn.Module) -> None:
        """No-op when sampling from the policy module itself; otherwise copy its weights."""
        if policy is not self.model:
            self.model.load_state_dict(policy.state_dict())

    def generate(
        self, prompt_ids: list[list[int]], num_generations: int, sampling: SamplingParams
    ) -> Rollout:
        """Sample ``G`` completions per prompt; rows ``g*G .. g*G+G-1`` belong to prompt ``g``.

        The completion width ``T`` is the longest completion of the call (``<= max_new_tokens``).
        """
        _validate(prompt_ids, num_generations, sampling)
        device = self.model.device
        prompts, prompt_mask = left_pad(prompt_ids, self.pad_id)  # [B, P]
        prompts = prompts.repeat_interleave(num_generations, 0).to(device)  # [N, P]
        prompt_mask = prompt_mask.repeat_interleave(num_generations, 0).to(device)  # [N, P]

        greedy = sampling.temperature == 0
        temperature = 1.0 if greedy else sampling.temperature
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # explicit 0 disables the library default of 50
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        # Calls for different parts of a batch (other ranks, refills) must not share a random stream.
        seed = sampling.seed if sampling.seed is None or not sampling.group_offset else \
            group_seed(sampling.seed, sampling.group_offset)
        with _sampling_state(self.model, seed), self.autocast():
            out = self.model.generate(input_ids=prompts, attention_mask=prompt_mask, generation_config=config)

        completion_ids = out.sequences[:, prompts.shape[1] :]  # [N, T]
        logprobs = torch.stack(  # [N, T]; one [N, V] step at a time, never a second [N, T, V] copy
            [_token_logprobs(step, completion_ids[:, t], temperature) for t, step in enumerate(out.logits)],
            dim=1,
        )
        mask, truncated = completion_mask_from_eos(completion_ids, torch.tensor(self.eos_ids, device=device))
        return Rollout(
            prompt_ids=prompts,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids.masked_fill(~mask, self.pad_id),
            completion_mask=mask.long(),
            truncated=truncated,
            sampler_logprobs=logprobs.masked_fill(~mask, 0.0),
        )
