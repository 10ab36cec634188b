"""What the loop holds instead of bare modules: the reference policy and the policy's weights on disk.

Two small objects keep PEFT and wrapping details out of ``loop.py``:

* a **reference** (``logprobs(rollout, ...) -> [N, T]``): either a frozen model of its own
  (``FrozenReference``) or, with LoRA, the policy itself with its adapters switched off
  (``AdapterOffReference``: no second copy of the weights);
* the policy's **weights** (``save_pretrained(path)`` / ``load(checkpoint)``): the whole model as one HF
  directory, or, with LoRA, the adapter (and, on request, the merged model in ``merged/``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file

from grouprl.train.resume import ResumeError
from grouprl.train.step import frozen_logprobs
from grouprl.types import Rollout


class FrozenReference:
    """A separate frozen model (a copy of the initial policy, or ``model.ref_name_or_path``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.requires_grad_(False).eval()

    def logprobs(self, rollout: Rollout, G: int, temperature: float, micro_batch_size: int,
                 chunk_size: int) -> torch.Tensor:
        return frozen_logprobs(self.model, rollout, G, temperature, micro_batch_size, chunk_size)  # [N, T]


class AdapterOffReference:
    """The base model under the policy's LoRA adapters: the policy's own modules with the adapters disabled."""

    def __init__(self, peft_model) -> None:
        self.peft_model = peft_model

    def logprobs(self, rollout: Rollout, G: int, temperature: float, micro_batch_size: int,
                 chunk_size: int) -> torch.Tensor:
        with self.peft_model.disable_adapter():
            return frozen_logprobs(self.peft_model.get_base_model(), rollout, G, temperature, micro_batch_size,
                                   chunk_size)  # [N, T]


class _LocalState:
    """Weights that live whole on every rank: nothing to gather, the optimizer state is the local one."""

    def gather(self) -> None:
        """Collective under FSDP (``ShardedWeights``); nothing to do here."""

    def optimizer_state(self, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer(self, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


class FullWeights(_LocalState):
    """Every weight of the policy, saved as one HF ``save_pretrained`` directory."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def save_pretrained(self, path: Path, **kwargs) -> None:
        self.model.save_pretrained(path, **kwargs)

    def load(self, checkpoint: Path) -> None:
        weights = load_file(checkpoint / "model.safetensors")
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        tied = {k for k in missing if "lm_head" in k} if self.model.config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise ResumeError(f"checkpoint {checkpoint} does not match the model: missing "
                              f"{sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]}; resume with the same "
                              "model.name_or_path")


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

    def load(self, checkpoint: Path) -> None:
        from peft import set_peft_model_state_dict

        file = checkpoint / "adapter_model.safetensors"
        if not file.is_file():
            raise ResumeError(f"checkpoint {checkpoint} has no adapter_model.safetensors: it was not written by a LoRA "
                              "run; resume with the same model.lora settings it was trained with")
        result = set_peft_model_state_dict(self.peft_model, load_file(file))
        if result.unexpected_keys:
            raise ResumeError(f"checkpoint {checkpoint}'s adapter does not match model.lora (unexpected "
                              f"{result.unexpected_keys[:3]}); resume with the same model.lora settings")
