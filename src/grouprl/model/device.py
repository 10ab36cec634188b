"""Where a run computes and in which precision: ``model.device``, ``train.precision`` and
``model.attn_implementation`` resolved once, before any model loads (docs/gpu.md).

* **Device.** ``auto`` is the local rank's GPU under ``torchrun`` (``LOCAL_RANK``), else ``cuda`` when CUDA is
  available, else ``cpu``. ``cuda`` without CUDA, or ``cuda:N`` past the GPUs there are, is a ``ConfigError``.
* **Precision.** A ``Precision`` says in which dtype the weights live and whether the forward passes run
  under ``torch.autocast``. ``auto`` is ``bf16-mixed`` on CUDA and ``fp32`` on the CPU (so a CPU run is
  exactly what it was before precision existed). Log-softmax, the gathered log-probs, advantages, the KL and
  the loss are float32 whatever the precision: ``model/logprobs.py`` upcasts the LM head's logits before the
  log-softmax, and the sampler upcasts its logits likewise.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial

import torch

from grouprl.errors import ConfigError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16-mixed", "bf16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def resolve_device(spec: str, key: str = "model.device") -> torch.device:
    """``model.device`` as a ``torch.device``; a device this machine does not have is a ``ConfigError``."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = int(os.environ.get("LOCAL_RANK", 0)) if "LOCAL_RANK" in os.environ else None
        return torch.device("cuda", local if local is not None else torch.cuda.current_device())
    if spec == "cpu":
        return torch.device("cpu")
    kind, _, index = spec.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"{key}={spec!r} is not a device; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}={spec} but CUDA is not available here (torch {torch.__version__}, "
                          f"built for CUDA {torch.version.cuda or 'none'}); use {key}=cpu or auto")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"{key}={spec} but this machine has {count} GPU(s) (cuda:0..cuda:{count - 1}); "
                          f"pick one of those, or {key}=cuda")
    if not index:  # under torchrun, plain "cuda" is this rank's GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and key == "model.device":
        raise ConfigError(f"{key}={spec} under torchrun would put every rank on one GPU; use {key}=cuda "
                          "or auto: each rank takes the GPU of its LOCAL_RANK")
    return torch.device("cuda", int(index))


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bfloat16 kernels (oneDNN's check: AVX512-BF16/AMX or AVX512 emulation).

    A separate function so that tests can stand in for a CPU without it."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return bool(mkldnn is not None and mkldnn.is_available())


@dataclass(frozen=True)
class Precision:
    """A resolved ``train.precision``: ``weights`` is the dtype of the parameters (and so of the AdamW
    update's inputs; AdamW's moments are float32 in every mode), ``compute`` the dtype autocast runs the
    forward passes in (None: no autocast, the weights' dtype)."""

    name: str
    weights: str  # a model.load DTYPES name
    compute: torch.dtype | None = None

    def autocast(self, device: torch.device) -> Callable[[], AbstractContextManager]:
        """A factory of the context every forward pass (rollout, log-prob passes, the update) runs in."""
        if self.compute is None:
            return nullcontext
        return partial(torch.autocast, device_type=device.type, dtype=self.compute)


def resolve_precision(spec: str, device: torch.device, dtype: str = "float32") -> Precision:
    """``train.precision`` on ``device``, given ``model.dtype``; a combination that cannot hold (bf16-mixed
    on bf16 weights, bf16 on a CPU without bf16 kernels) is a ``ConfigError``."""
    if spec not in PRECISIONS:
        raise ConfigError(f"train.precision={spec!r} is not a precision; use {', '.join(PRECISIONS)}")
    if spec == "auto":
        if dtype != "float32":  # the weights' dtype was chosen by hand: train in it, as before
            return Precision("bf16" if dtype == "bfloat16" else dtype, dtype)
        spec = "bf16-mixed" if device.type == "cuda" else "fp32"
    if spec != "bf16" and dtype != "float32":
        raise ConfigError(f"train.precision={spec} keeps float32 master weights, but model.dtype={dtype}; "
                          f"set model.dtype=float32, or train.precision=bf16 for bfloat16 weights")
    if spec != "fp32" and device.type == "cpu" and not cpu_supports_bf16():
        raise ConfigError(f"train.precision={spec} needs bfloat16 kernels, which this CPU lacks "
                          "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is False); use train.precision=fp32")
    if spec == "fp32":
        return Precision("fp32", "float32")
    if spec == "bf16-mixed":
        return Precision("bf16-mixed", "float32", torch.bfloat16)
    return Precision("bf16", "bfloat16")


def check_attn_implementation(name: str) -> str:
    """``model.attn_implementation``: one transformers knows, and for flash_attention_2 its package
    installed."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation={name!r} is not one of "
                          f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("model.attn_implementation=flash_attention_2 but the flash_attn package is not "
                          "installed; pip install flash-attn (CUDA only), or use sdpa")
    return name


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """``memory/peak_gpu_mib``: the most GPU memory tensors held since the last reset (then reset it), on
    CUDA; nothing elsewhere."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return {"memory/peak_gpu_mib": peak}
