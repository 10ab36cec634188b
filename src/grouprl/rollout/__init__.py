"""Rollout backends: sample groups of completions and the sampler's log-probs.

``BACKENDS`` names them (``rollout.backend``); each entry is ``make(model, tokenizer, autocast=...) ->
RolloutBackend``, ``autocast`` the factory of the context its forward passes run in (``train.precision``).
Importing this package is light (the config reads ``BACKENDS``): the backends, which need transformers, are
imported when one is built or named (``FastRollout``, ``HFRollout``, ``unsupported_reason``).
"""

from __future__ import annotations

import importlib

from grouprl.registry import Registry
from grouprl.rollout.base import RolloutBackend

BACKENDS: Registry = Registry("rollout backend")

_LAZY = {"FastRollout": "grouprl.rollout.fast", "unsupported_reason": "grouprl.rollout.fast",
         "HFRollout": "grouprl.rollout.hf"}


def __getattr__(name: str):
    """The backends' classes on first use (PEP 562), so that naming ``BACKENDS`` does not load
    transformers."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


@BACKENDS.register("fast")
def _fast(model, tokenizer, **options) -> RolloutBackend:
    """Batched sampling with a preallocated KV cache (``rollout/fast.py``)."""
    from grouprl.rollout.fast import FastRollout

    return FastRollout(model, tokenizer, **options)


@BACKENDS.register("hf")
def _hf(model, tokenizer, **options) -> RolloutBackend:
    """transformers' ``generate`` (``rollout/hf.py``): any causal LM."""
    from grouprl.rollout.hf import HFRollout

    return HFRollout(model, tokenizer, **options)


@BACKENDS.register("auto")
def _auto(model, tokenizer, **options) -> RolloutBackend:
    """``fast`` where the model supports it, else ``hf``."""
    from grouprl.rollout.fast import unsupported_reason

    return BACKENDS.get("hf" if unsupported_reason(model) else "fast")(model, tokenizer, **options)


def build_backend(name: str, model, tokenizer, **options) -> RolloutBackend:
    """The rollout backend ``name`` on ``model``; ``auto`` is ``fast`` where the model supports it, else
    ``hf``. ``options``: ``autocast`` (a context factory its forward passes run in)."""
    return BACKENDS.get(name)(model, tokenizer, **options)


__all__ = ["BACKENDS", "FastRollout", "HFRollout", "RolloutBackend", "build_backend", "unsupported_reason"]
