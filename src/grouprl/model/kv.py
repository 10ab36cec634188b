"""Key/value caches the project builds itself, and which models can use them.

Two places reuse a prompt's keys and values across the ``G`` completions of its group instead of recomputing
them ``G`` times: the fast rollout backend (prefill once per prompt) and the log-prob passes of the trainer
(``model.logprobs.shared_prompt_logprobs``). Both go through the ``transformers`` ``Cache`` API, so both need
a decoder whose layers all attend to the full context through that API (``cache_unsupported_reason``).
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin


def with_cache(module: torch.nn.Module, cache: Cache) -> dict[str, Cache]:
    """The keyword that hands ``cache`` to ``module.forward``: ``cache`` where transformers has renamed it
    (its ``past_key_values`` is deprecated there, to be removed in 5.40), else ``past_key_values``."""
    return {_cache_keyword(type(module)): cache}


@functools.cache
def _cache_keyword(kind: type) -> str:
    return "cache" if "cache" in inspect.signature(kind.forward).parameters else "past_key_values"


def cache_unsupported_reason(model: PreTrainedModel) -> str | None:
    """Why prompt keys/values of ``model`` cannot be cached and shared (None: they can)."""
    config = model.config.get_text_config(decoder=True)
    if getattr(model.config, "is_encoder_decoder", False):
        return "it is an encoder-decoder model"
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return f"its layers are not all full attention ({sorted(set(layer_types))})"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return f"it uses a sliding window of {config.sliding_window} tokens"
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return "its forward has no logits_to_keep argument"
    if getattr(model, "_is_stateful", False):
        return "it is a stateful (recurrent) model"
    return None


class Slots(CacheLayerMixin):
    """One layer's keys and values in preallocated ``[n, heads, capacity, head_dim]`` buffers, filled in
    place."""

    is_sliding = False
    is_compileable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.keys, self.values, self.length = keys, values, length
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("Slots are created filled; they are never lazily initialised")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.keys.shape[2]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch), in that order."""
        self.keys = self.keys.index_select(0, rows)
        self.values = self.values.index_select(0, rows)


def preallocated_copies(prefill: DynamicCache, repeats: int, capacity: int) -> Cache:
    """A cache of ``Slots`` holding each prefilled row ``repeats`` times, with room for ``capacity``
    positions."""
    layers = []
    for layer in prefill.layers:
        rows, heads, length, _ = layer.keys.shape
        keys = layer.keys.new_empty(rows * repeats, heads, capacity, layer.keys.shape[-1])
        values = layer.values.new_empty(rows * repeats, heads, capacity, layer.values.shape[-1])
        keys[:, :, :length] = layer.keys.repeat_interleave(repeats, 0)
        values[:, :, :length] = layer.values.repeat_interleave(repeats, 0)
        layers.append(Slots(keys, values, length))
    return Cache(layers=layers)


def repeat_rows(cache: DynamicCache, repeats: torch.Tensor) -> DynamicCache:
    """Repeat row ``i`` of every layer ``repeats[i]`` times, in place and differentiably
    (``DynamicCache``)."""
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(repeats, 0)
        layer.values = layer.values.repeat_interleave(repeats, 0)
    return cache
