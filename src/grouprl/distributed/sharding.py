"""FSDP2 (``fully_shard``): parameters, gradients and AdamW's moments sharded over the ranks.

The training pass (``TrainingPass``) is the FSDP root, each decoder layer its own unit, so a forward gathers
one layer at a time. Sampling is different: the rollout backends and evaluation call the HF model directly,
token by token, a different number of times on each rank, which per-layer all-gathers cannot follow. So
``full_weights()`` gathers every unit once (a collective: every rank enters it), keeps them gathered for the
whole rollout, and shards them again after. Checkpoints gather a full state dict and rank 0 writes one HF
directory, as without FSDP (``train/policy.py`` ``ShardedWeights``); resume loads it on every rank and shards
it again.

Departures: LoRA is not combined with FSDP here (use one or the other), and the reference copy for a KL term
stays a full replica on every rank.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from grouprl.errors import ConfigError
from grouprl.model.memory import decoder_layers
from grouprl.model.passes import dummy_rollout


def check(fsdp: bool, world: int, lora: bool) -> None:
    """Refuse setups FSDP2 cannot serve, before anything loads."""
    if not fsdp:
        return
    if world < 2:
        raise ConfigError(f"train.fsdp=true shards over processes, but this run has WORLD_SIZE={world}; "
                          "launch it with torchrun --nproc_per_node N (N >= 2), or drop train.fsdp")
    if lora:
        raise ConfigError("train.fsdp=true and model.lora.r > 0 are not supported together; LoRA's frozen "
                          "base is already small in optimizer state: drop train.fsdp, or train without LoRA")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        raise ConfigError("train.fsdp=true needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6); "
                          f"this torch is {torch.__version__}: upgrade torch, or drop train.fsdp") from None


def shard(scorer: torch.nn.Module, policy: torch.nn.Module, compute: torch.dtype | None = None) -> list:
    """``fully_shard`` every decoder layer, then the root; returns the FSDP units, root first. ``compute``
    (``train.precision=bf16-mixed``: bfloat16) is the dtype the gathered parameters take for the passes,
    gradients being reduced in float32; None: the parameters' own dtype."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    device = next(policy.parameters()).device
    policy_kw = {} if compute is None else {
        "mp_policy": MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)}
    for layer in decoder_layers(policy):
        fully_shard(layer, **policy_kw)
    fully_shard(scorer, **policy_kw)
    # One pass through the root sets up FSDP's root state; the rollout later calls the layers directly.
    with torch.no_grad():
        scorer(dummy_rollout(device), torch.zeros(1, dtype=torch.long, device=device), 1, temperature=1.0,
               chunk_size=1)
    units = [m for m in scorer.modules() if isinstance(m, FSDPModule)]
    # the root stays gathered after a forward; the optimizer must see the sharded parameters
    for unit in units:
        unit.reshard()
    return units


@contextmanager
def full_weights(units: list):
    """Every unit gathered (collective) for the duration: sampling and evaluation run on the full model."""
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for i, unit in enumerate(units):
            unit.reshard()
            unit.set_reshard_after_forward(i > 0, recurse=False)  # FSDP keeps the root gathered after forward
