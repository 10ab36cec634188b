"""AdamW, and a learning rate that warms up linearly and then follows any ``transformers.get_scheduler``
curve."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from contextlib import contextmanager

import torch

from grouprl.errors import ConfigError

# get_scheduler names whose learning rate follows a metric the caller must feed: not a fixed curve.
METRIC_DRIVEN = ("reduce_lr_on_plateau", "greedy")

# The common curves of get_scheduler, as a function of the progress p in [0, 1] after warm-up, computed here
# because importing transformers.optimization brings in its whole Trainer stack (seconds at every start);
# tests/unit/train/test_schedules.py checks them against transformers'.
_LOCAL: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}


def _narrow(p: torch.Tensor) -> bool:
    """A floating-point tensor of less than float32's precision (bfloat16, float16)."""
    return p.is_floating_point() and p.element_size() < 4


class Float32StateAdamW(torch.optim.AdamW):
    """AdamW whose moments are float32 for parameters of a lower precision (``train.precision=bf16``).

    Each step widens the low-precision parameters and their gradients to float32, runs AdamW there (its
    state is created, and on resume restored, in float32) and rounds the new weights back to their dtype.
    Departure from a master-weight scheme: no float32 copy of the weights is kept, so an update smaller than
    half a bfloat16 ulp of its weight is lost to the rounding (round-to-nearest, not stochastic rounding);
    ``bf16-mixed`` keeps float32 weights and loses nothing.
    """

    @contextmanager
    def _widened(self):
        narrow = [p for group in self.param_groups for p in group["params"] if _narrow(p)]
        saved = [(p.data, p.grad) for p in narrow]
        for p in narrow:
            grad = p.grad
            p.data = p.data.float()
            p.grad = None if grad is None else grad.float()
        try:
            yield
        finally:
            for p, (data, grad) in zip(narrow, saved):
                wide = p.data
                p.grad = None
                data.copy_(wide)  # round to the parameter's own dtype, in its own storage
                p.data = data
                p.grad = grad

    @torch.no_grad()
    def step(self, closure=None):
        with self._widened():
            return super().step(closure)

    def load_state_dict(self, state_dict) -> None:
        with self._widened():  # torch casts restored moments to their parameter's dtype: float32 here
            super().load_state_dict(state_dict)


def build_optimizer(params, *, lr: float, weight_decay: float,
                    betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, its moments float32 even for bfloat16 parameters
    (``Float32StateAdamW``); the fused kernel (one pass per tensor, ~4x faster on CPU than the for-each one
    at 25 M parameters) where every parameter is a plain CPU/CUDA float tensor (not FSDP's DTensor)."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() and not hasattr(p, "device_mesh")
        for p in params
    )
    kind = Float32StateAdamW if any(map(_narrow, params)) else torch.optim.AdamW
    return kind(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)


def scheduler_names() -> list[str]:
    """Every curve ``train.lr_scheduler`` accepts: transformers' ``SchedulerType`` values but the
    metric-driven."""
    from transformers.trainer_utils import SchedulerType

    return [kind.value for kind in SchedulerType if kind.value not in METRIC_DRIVEN]


def _curve(kind: str, warmup_steps: int, total_steps: int, kwargs: dict) -> Callable[[int], float]:
    """``transformers.get_scheduler(kind, ...)``'s multiplier at step s, built with the same warm-up and
    total."""
    if kind in _LOCAL and not kwargs:
        shape, span = _LOCAL[kind], max(1, total_steps - warmup_steps)
        return lambda s: shape(min(1.0, (s - warmup_steps) / span))
    from transformers.optimization import get_scheduler

    if kind not in scheduler_names():
        close = difflib.get_close_matches(kind, scheduler_names(), 1)
        raise ConfigError(f"train.lr_scheduler={kind!r} is not a fixed learning-rate curve; "
                          + (f"did you mean {close[0]}? " if close else "")
                          + f"use one of {', '.join(scheduler_names())}")
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True, device="cpu")], lr=1.0)
    try:
        curve = get_scheduler(kind, probe, num_warmup_steps=warmup_steps,
                              num_training_steps=max(total_steps, 1),
                              scheduler_specific_kwargs=dict(kwargs)).lr_lambdas[0]
        curve(warmup_steps)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train.lr_scheduler_kwargs {kwargs} do not fit train.lr_scheduler={kind!r} "
                          f"({str(err).splitlines()[0]})") from None
    return curve


def lr_factor(kind: str, *, warmup_steps: int, total_steps: int,
              kwargs: dict | None = None) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``s`` (from 0).

    Steps before ``warmup_steps`` ramp up as ``(s + 1) / (warmup_steps + 1)``, so the first update already
    moves the weights; from there on it is the curve of ``transformers.get_scheduler(kind, ...)``, so
    ``linear`` and ``cosine`` reach 0 at ``total_steps``. A name or argument that transformers refuses is a
    ``ConfigError``.
    """
    curve = _curve(kind, warmup_steps, total_steps, kwargs or {})

    def factor(s: int) -> float:
        return (s + 1) / (warmup_steps + 1) if s < warmup_steps else curve(s)

    return factor


def build_scheduler(optimizer, *, warmup_steps: int, total_steps: int, kind: str,
                    kwargs: dict | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`lr_factor`; its state (the step count) is what a checkpoint keeps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(kind, warmup_steps=warmup_steps, total_steps=total_steps, kwargs=kwargs))
