"""Other spellings of the spec's knobs, accepted as ``preset()`` overrides and translated before validation
(docs/trl.md, docs/algorithms/README.md): TRL's names (``scale_rewards``, ``epsilon``, ``delta``,
``sapo_temperature_pos`` / ``_neg``, ``loss_type="grpo" | "dapo" | "bnpo" | "dr_grpo" | "cispo" | "sapo"``,
the last two naming an objective too) and the old filter and shaping switches (``dynamic_sampling``,
``overlong_filter``, ``soft_overlong``, ``kl_placement``), each of which adds or removes one piece of a list
field.
"""

from __future__ import annotations


def _fail(rule: str, fix: str) -> None:
    """Reject an override: ``rule``; ``fix``."""
    raise ValueError(f"{rule}; {fix}")


# The old switches, kept as overrides: each adds (its "on" value) or removes (its "off" value) one piece.
# ``preset("grpo", dynamic_sampling=True)`` is ``preset("grpo", filters=("nonzero_variance",))``.
SWITCH_ALIASES: dict[str, tuple[str, str, object, object]] = {
    "dynamic_sampling": ("filters", "nonzero_variance", False, True),
    "overlong_filter": ("filters", "drop_truncated", False, True),
    "soft_overlong": ("shaping", "soft_overlong", False, True),
    "kl_placement": ("shaping", "kl_in_reward", "loss", "reward"),
}


def as_names(value: object) -> tuple:
    """A list field's value as a tuple: ``None`` is none, a lone string one name; anything else is kept for
    validation to refuse."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


_TRL_LOSS_TYPES = {"grpo": "seq_mean_token_mean", "dapo": "token_mean", "bnpo": "token_mean",
                   "dr_grpo": "seq_mean_token_sum_norm", "cispo": "token_mean", "sapo": "seq_mean_token_mean"}
# TRL's loss types that are also an objective: what the surrogate is, besides how it is aggregated.
_TRL_LOSS_OBJECTIVES = {"cispo": {"clip": "is_weight_clip", "epsilon_low": None},
                        "sapo": {"clip": "soft_gate"}}
_TRL_SAPO = {"sapo_temperature_pos": "tau_pos", "sapo_temperature_neg": "tau_neg"}
_TRL_SCALE_REWARDS = {"group": "group_zscore", True: "group_zscore", "batch": "group_mean_batch_std",
                      "none": "group_center", False: "group_center"}


def translate_trl(overrides: dict[str, object]) -> dict[str, object]:
    """Accept TRL's spellings of the same knobs (values keep grouprl's meaning: ``epsilon_high`` is a distance
    from ratio 1 for every clip)."""
    out = dict(overrides)
    if out.get("loss_type") in _TRL_LOSS_TYPES:
        for name, value in _TRL_LOSS_OBJECTIVES.get(out["loss_type"], {}).items():
            out.setdefault(name, value)
        out["loss_type"] = _TRL_LOSS_TYPES[out["loss_type"]]
    if "epsilon" in out:
        eps = out.pop("epsilon")
        out.setdefault("epsilon_low", eps)
        out.setdefault("epsilon_high", eps)
    if "delta" in out:
        out["clip_ratio_c"] = out.pop("delta")
    if "scale_rewards" in out:
        value = out.pop("scale_rewards")
        if value not in _TRL_SCALE_REWARDS:
            _fail(f"scale_rewards must be 'group', 'batch' or 'none', got {value!r}", "pick one")
        out["advantage"] = _TRL_SCALE_REWARDS[value]
    for trl_name, name in _TRL_SAPO.items():
        if trl_name in out:
            out[name] = out.pop(trl_name)
    return out


def translate_switches(base: object, overrides: dict[str, object]) -> dict[str, object]:
    """The old switches as edits of the lists of ``base`` (the spec the overrides apply to): each adds or
    removes its piece, after any ``filters`` / ``shaping`` override is taken as the starting list."""
    out = {k: v for k, v in overrides.items() if k not in SWITCH_ALIASES}
    for alias, (field, piece, off, on) in SWITCH_ALIASES.items():
        if alias not in overrides:
            continue
        value = overrides[alias]
        if type(value) is not type(on) or value not in (off, on):
            allowed = "true or false" if isinstance(on, bool) else f"{off!r} or {on!r}"
            _fail(f"{alias} must be {allowed}, got {value!r}", f"{alias}={on!r} adds {piece} to {field}")
        names = as_names(out.get(field, getattr(base, field)))
        out[field] = (*names, piece) if value == on else tuple(n for n in names if n != piece)
    return out
