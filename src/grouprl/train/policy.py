"""What the loop holds instead of bare modules: the reference policy and the policy's weights on disk.

Two small objects keep PEFT and wrapping details out of ``loop.py``:

* a **reference** (``logprobs(rollout, ...) -> [N, T]``): either a frozen model of its own
  (``FrozenReference``) or, with LoRA, the policy itself with its adapters switched off
  (``AdapterOffReference``: no second copy of the weights);
* the policy's **weights** (``save_pretrained(path)``; ``read(checkpoint)``, which checks a checkpoint's
  tensors against the model without changing it, then ``apply(tensors)``): the whole model as one HF
  directory, or, with LoRA, the adapter (and, on request, the merged model in ``merged/``), or, under FSDP2,
  the full state gathered from the shards (``ShardedWeights``).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import torch

from grouprl.errors import ResumeError
from grouprl.model.passes import frozen_logprobs
from grouprl.train.state import load_tensors
from grouprl.types import Rollout


class FrozenReference:
    """A separate frozen model (a copy of the initial policy, or ``model.ref_name_or_path``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.requires_grad_(False).eval()

    def logprobs(self, rollout: Rollout, G: int, temperature: float, micro_batch_size: int,
                 chunk_size: int) -> torch.Tensor:
        return frozen_logprobs(self.model, rollout, G, temperature, micro_batch_size, chunk_size)  # [N, T]


class AdapterOffReference:
    """The base model under the policy's LoRA adapters: the policy's own modules with the adapters
    disabled."""

    def __init__(self, peft_model) -> None:
        self.peft_model = peft_model

    def logprobs(self, rollout: Rollout, G: int, temperature: float, micro_batch_size: int,
                 chunk_size: int) -> torch.Tensor:
        with self.peft_model.disable_adapter():
            return frozen_logprobs(self.peft_model.get_base_model(), rollout, G, temperature,
                                   micro_batch_size, chunk_size)  # [N, T]


def matching(path: Path, found: dict, expected: dict, fix: str, may_miss: set = frozenset()) -> dict:
    """``found`` (a checkpoint file's tensors) if it has the names, shapes and dtypes of ``expected`` (the
    model's own; those in ``may_miss`` may be absent: a tied ``lm_head``); else a ``ResumeError`` ending in
    ``fix``."""
    missing, unexpected = sorted(set(expected) - set(found) - may_miss), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ResumeError(f"{path} does not match the model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}; {fix}")
    for name, tensor in found.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise ResumeError(f"{path}: {name} is {list(tensor.shape)} {tensor.dtype}, the model's is "
                              f"{list(want.shape)} {want.dtype}; {fix} and model.dtype")
    return found


class _LocalState:
    """Weights that live whole on every rank: nothing to gather, the optimizer state is the local one."""

    def gather(self) -> None:
        """Collective under FSDP (``ShardedWeights``); nothing to do here."""

    def optimizer_state(self, optimizer) -> dict:
        return optimizer.state_dict()

    def optimizer_params(self, optimizer) -> list[list[tuple[int, torch.Size]]]:
        """Per param group, ``(key, shape)`` of each parameter: keys as in ``optimizer_state``'s."""
        keys = itertools.count()  # torch numbers the parameters across groups, in order
        return [[(next(keys), p.shape) for p in group["params"]] for group in optimizer.param_groups]

    def load_optimizer(self, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


class FullWeights(_LocalState):
    """Every weight of the policy, saved as one HF ``save_pretrained`` directory."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def save_pretrained(self, path: Path, **kwargs) -> None:
        self.model.save_pretrained(path, **kwargs)

    def read(self, checkpoint: Path) -> dict:
        expected = self.model.state_dict()
        tied = {k for k in expected if "lm_head" in k} if self.model.config.tie_word_embeddings else set()
        return matching(checkpoint / "model.safetensors", load_tensors(checkpoint / "model.safetensors"),
                        expected, "resume with the same model.name_or_path", tied)

    def apply(self, weights: dict) -> None:
        self.model.load_state_dict(weights, strict=False)


class AdapterWeights(_LocalState):
    """The LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``), and on request the merged
    model in ``merged/``."""

    def __init__(self, peft_model, tokenizer, save_merged: bool) -> None:
        self.peft_model, self.tokenizer, self.save_merged = peft_model, tokenizer, save_merged

    def save_pretrained(self, path: Path, **kwargs) -> None:
        self.peft_model.save_pretrained(path, **kwargs)
        if self.save_merged:  # merge a copy: merging in place and back would perturb the trained weights
            merged = copy.deepcopy(self.peft_model).merge_and_unload()
            merged.save_pretrained(Path(path) / "merged", **kwargs)
            self.tokenizer.save_pretrained(Path(path) / "merged")

    def read(self, checkpoint: Path) -> dict:
        from peft import get_peft_model_state_dict

        file = checkpoint / "adapter_model.safetensors"
        if not file.is_file() and (checkpoint / "model.safetensors").is_file():
            raise ResumeError(f"checkpoint {checkpoint} has no adapter_model.safetensors: it was not "
                              "written by a LoRA run; resume with the same model.lora settings it was "
                              "trained with")
        return matching(file, load_tensors(file), get_peft_model_state_dict(self.peft_model),
                        "resume with the same model.lora settings")

    def apply(self, weights: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.peft_model, weights)


class ShardedWeights:
    """The policy's weights and optimizer state under FSDP2, saved and loaded as full (unsharded) state."""

    def __init__(self, scorer: torch.nn.Module, policy: torch.nn.Module) -> None:
        self.scorer, self.policy = scorer, policy
        self._gathered: dict | None = None

    def _options(self, **kwargs):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kwargs)

    def gather(self) -> None:
        """Collective: the full state dict, on rank 0's CPU (empty elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(self.scorer, options=self._options(cpu_offload=True))
        self._gathered = {k.removeprefix("model."): v for k, v in full.items()}

    def save_pretrained(self, path: Path, **kwargs) -> None:
        self.policy.save_pretrained(path, state_dict=self._gathered, **kwargs)

    def optimizer_state(self, optimizer) -> dict:
        """Collective: AdamW's full state, keyed by parameter name (rank 0; empty elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.scorer, optimizer, options=self._options(cpu_offload=True))

    def optimizer_params(self, optimizer) -> list[list[tuple[str, torch.Size]]]:
        """Per param group, ``(name, full shape)`` of each parameter: keys as in ``optimizer_state``'s."""
        names = {id(p): name for name, p in self.scorer.named_parameters()}
        return [[(names[id(p)], p.shape) for p in group["params"]] for group in optimizer.param_groups]

    def load_optimizer(self, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.scorer, optimizer, optim_state_dict=state, options=self._options())

    def read(self, checkpoint: Path) -> dict:
        """The full weights (every rank reads them), checked against the model's full shapes."""
        tied = self.policy.config.tie_word_embeddings
        weights = load_tensors(checkpoint / "model.safetensors")
        expected = {k: v for k, v in self.policy.state_dict().items() if not (tied and "lm_head" in k)}
        found = {k: v for k, v in weights.items() if not (tied and "lm_head" in k)}
        return matching(checkpoint / "model.safetensors", found, expected,
                        "resume with the same model.name_or_path")

    def apply(self, weights: dict) -> None:
        """Each rank keeps its shard of the full weights."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.scorer, {f"model.{k}": v for k, v in weights.items()},
                             options=self._options(strict=False))
