"""Low-rank adapters through PEFT: wrap a causal LM so that only the adapters train.

The trainer computes with ``get_base_model()`` (the transformers model with the LoRA layers injected in
place), so ``sequence_logprobs`` and the rollout backends see an ordinary HF model; the ``PeftModel`` around
it is kept for what only it can do: switching the adapters off (the reference policy), saving the adapter, and
merging it.
"""

from __future__ import annotations

import warnings

import torch

from grouprl.errors import ConfigError


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last components of the names of ``model``'s ``nn.Linear`` layers, sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear)})


def apply_lora(model: torch.nn.Module, *, r: int, alpha: float, dropout: float, target_modules: list[str]):
    """Freeze ``model`` and add rank-``r`` adapters to the layers named in ``target_modules``.

    Returns the ``PeftModel``. A name that matches no linear layer is an error listing the ones present (PEFT
    itself silently skips such a name when another one matches).
    """
    present = linear_names(model)
    missing = [name for name in target_modules if name not in present]
    if missing:
        raise ConfigError(f"model.lora.target_modules: {', '.join(missing)} not in the model; "
                          f"its linear layers are {', '.join(present)}; "
                          "set model.lora.target_modules to some of those")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("model.lora.r > 0 needs PEFT: pip install 'grouprl[peft]' "
                          "(or pip install peft)") from None
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT calls a transformers property that transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)
