"""Pure tensor math for GRPO-family algorithms: no nn.Module, no I/O, no distributed, no config objects.

Entry points (docs/contracts.md): ``preset(name, **overrides)`` and ``compute_loss(...)``; the trainer uses
the two stages ``group_advantages`` and ``policy_loss`` directly.
"""

from grouprl.algo.advantages import ADVANTAGES, GroupContext
from grouprl.algo.aggregation import AGGREGATIONS, Counts
from grouprl.algo.correction import CORRECTIONS, Correction, correction_metrics, sampler_gap
from grouprl.algo.filters import FILTERS, SHAPING, GroupView
from grouprl.algo.kl import KL_ESTIMATORS
from grouprl.algo.loss import (
    Advantages,
    LossOutput,
    TokenSelection,
    check_inputs,
    compute_loss,
    group_advantages,
    kept_groups,
    policy_loss,
    rollout_correction,
    select_flat,
    select_tokens,
)
from grouprl.algo.objectives import OBJECTIVES
from grouprl.algo.presets import PRESETS, REGISTRIES, AlgoSpec, next_alpha, preset
from grouprl.algo.ratios import RATIOS
from grouprl.algo.selection import SELECTIONS, TokenView

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "CORRECTIONS", "FILTERS", "KL_ESTIMATORS", "OBJECTIVES", "RATIOS",
    "SHAPING",
    "PRESETS", "REGISTRIES", "AlgoSpec", "Advantages", "Counts", "GroupContext", "GroupView", "LossOutput",
    "Correction", "check_inputs", "compute_loss", "correction_metrics", "group_advantages", "kept_groups",
    "policy_loss", "preset", "rollout_correction", "sampler_gap",
    "SELECTIONS", "TokenSelection", "TokenView", "next_alpha", "select_flat", "select_tokens",  # (i)
]
