"""THE table: every algorithm is a named point in six orthogonal choices (docs/math.md, The six choices).

``AlgoSpec`` holds the choices and their hyperparameters; ``preset(name, **overrides)`` returns a validated
spec. Knobs carry TRL's names where TRL has the concept (``beta``, ``epsilon_low``, ``epsilon_high``,
``importance_sampling_level``, ``loss_type``), and TRL's other spellings are accepted as overrides
(``spellings.py``). An incoherent combination is rejected with the rule, the reason and the fix; nothing is
silently changed.

Every registered piece declares the spec fields it reads (``params`` / ``reads``) and what it needs
(``needs``); the spec answers from those declarations which pieces it chooses (``pieces``), which keyword
arguments each gets (``kwargs``) and which passes the trainer must run (``needs_ref_logp``,
``needs_old_logp``). A field that a preset row or an override sets must be read by a chosen piece (the
choice fields excepted): a knob that would be silently ignored is an error naming its readers.

Filters and shaping are lists of named pieces (``filters=("nonzero_variance",)``); the old switches
(``dynamic_sampling``, ``overlong_filter``, ``soft_overlong``, ``kl_placement``) are kept as overrides that
add or remove their piece (``spellings.py``), and as read-only attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from grouprl.algo.advantages import ADVANTAGES
from grouprl.algo.aggregation import AGGREGATIONS
from grouprl.algo.correction import CORRECTIONS
from grouprl.algo.filters import FILTERS, SHAPING
from grouprl.algo.kl import KL_ESTIMATORS
from grouprl.algo.objectives import OBJECTIVES
from grouprl.algo.ratios import RATIOS
from grouprl.algo.selection import SELECTIONS
from grouprl.algo.spellings import SWITCH_ALIASES, as_names, translate_switches, translate_trl
from grouprl.registry import Registry, UnknownNameError

REGISTRIES: dict[str, Registry] = {
    "advantage": ADVANTAGES,
    "ratio": RATIOS,
    "objective": OBJECTIVES,
    "aggregation": AGGREGATIONS,
    "kl": KL_ESTIMATORS,
    "filter": FILTERS,
    "shaping": SHAPING,
    "selection": SELECTIONS,
    "correction": CORRECTIONS,
}
# The field that chooses the one piece of each single-choice kind.
CHOICE_FIELDS = {"advantage": "advantage", "ratio": "importance_sampling_level", "objective": "clip",
                 "aggregation": "loss_type", "kl": "kl_estimator", "correction": "rollout_correction"}
# The fields that list the filter and shaping pieces, beta, which turns the KL term on, entropy_coef, which
# turns the entropy bonus on, and opsm_delta, which turns off-policy sequence masking on.
SWITCH_FIELDS = ("filters", "shaping", "beta", "entropy_coef", "opsm_delta")
# (i) m2po_tau turns M2PO's mask on; entropy_target (with its step) adapts entropy_coef, which no piece reads.
SWITCH_FIELDS += ("m2po_tau", "entropy_target", "entropy_target_lr")
LIST_FIELDS = {"filters": "filter", "shaping": "shaping"}
META_FIELDS = ("name", "paper", "summary")
# What preset() always accepts: no chosen piece needs to read a field that chooses pieces.
CHOOSING_KEYS = frozenset({*META_FIELDS, *CHOICE_FIELDS.values(), *SWITCH_FIELDS, *SWITCH_ALIASES})


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm: the six choices of docs/math.md and their hyperparameters."""

    name: str = "custom"
    paper: str = ""  # arXiv id
    summary: str = ""

    # (a) advantage estimator: group_zscore | group_center | group_mean_batch_std | rloo |
    #     batch_whiten_tokens | subset_zscore | maxrl
    advantage: str = "group_zscore"
    std_ddof: int = 1  # 0: population std (project spec), 1: Bessel-corrected (verl, TRL)
    adv_eps: float = 1e-6  # added to the std, or inside the root with adv_eps_inside; maxrl: to the mean
    adv_eps_inside: bool = False  # sqrt(var + eps) (project spec's delta) instead of sqrt(var) + eps

    # (b) ratio level: token | sequence (GSPO) | sequence_token (GSPO-token) | geometric (GMPO)
    importance_sampling_level: str = "token"

    # (c) surrogate: ppo_clip | log_clip (GMPO) | is_weight_clip (CISPO) | soft_gate (SAPO) | gppo (GPPO,
    #     CE-GPPO) | none
    clip: str = "ppo_clip"
    epsilon_low: float | None = 0.2  # lower clip (ratio space; log space for log_clip; None: no bound, CISPO)
    epsilon_high: float = 0.2  # upper clip; > epsilon_low is DAPO's clip-higher
    clip_ratio_c: float | None = None  # dual-clip floor c > 1 for A < 0 (arXiv 1912.09729); None: off
    tau_pos: float = 1.0  # SAPO gate temperature for A > 0
    tau_neg: float = 1.05  # SAPO gate temperature for A <= 0
    gppo_beta1: float = 1.0  # CE-GPPO's beta_1: gradient scale of the clipped A < 0, r < 1 - eps_low tokens
    gppo_beta2: float = 1.0  # CE-GPPO's beta_2: gradient scale of the clipped A > 0, r > 1 + eps_high tokens

    # (d) aggregation: seq_mean_token_mean | token_mean | seq_mean_token_sum_norm | seq_mean_token_sum |
    #     seq_mean
    loss_type: str = "seq_mean_token_mean"
    loss_norm_length: int | None = None  # L_norm for seq_mean_token_sum_norm; None: the generation budget

    # (e) filters and shaping: named pieces of filters.py, kept in registration order (the order given does
    #     not matter). filters: nonzero_variance (DAPO's dynamic sampling: drop groups of equal accuracy,
    #     refill) | drop_truncated (DAPO's overlong filter: truncated responses leave the loss) | retain_k
    #     (GFPO's subset; it comes with advantage subset_zscore). shaping: soft_overlong (DAPO's length
    #     penalty over the last buffer tokens) | kl_in_reward (beta * sum_t k1 off the reward, instead of
    #     the KL term in the loss)
    filters: tuple[str, ...] = ()
    shaping: tuple[str, ...] = ()
    overlong_max_len: int = 20480  # DAPO's L_max (paper value; set it to your max_new_tokens)
    overlong_buffer_len: int = 4096  # DAPO's L_cache
    retain_k: int | None = None  # GFPO: responses kept per group; None: half the group (>= 2)
    retain_metric: str = "length"  # GFPO: length (shortest) | token_efficiency (highest R/|o|)
    retain_normalise_over: str = "all"  # GFPO: rejected tokens count in the normaliser ("all") or not

    # (f) KL to the reference policy
    beta: float = 0.0  # coefficient; 0 turns the reference model off
    kl_estimator: str = "k3"  # k1 | k2 | k3 (the KL in the reward, shaping kl_in_reward, uses k1)

    # (g) entropy bonus: -entropy_coef * H added to the loss, H the per-token entropy of the policy's
    #     (temperature-scaled) next-token distribution, aggregated as the policy term; 0 turns it off
    entropy_coef: float = 0.0

    # (h) off-policy sequence masking (OPSM, DeepSeek-V3.2): at each update, a sequence with A < 0 whose mean
    #     per-token log(pi_old / pi_theta) exceeds opsm_delta leaves the loss (not its normaliser); None: off
    opsm_delta: float | None = None

    # (i) covariance, M2PO, entropy target (docs/algorithms/{clip_cov,kl_cov,m2po}.md, docs/math.md). The
    #     token selections (selection.py) are taken once per mini-batch on pi_old, before the update.
    clip_cov_ratio: float = 2e-4  # Clip-Cov: fraction of the in-loss tokens whose gradient is detached
    clip_cov_lb: float = 1.0  # Clip-Cov: candidates have lb < Cov < ub
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-4  # KL-Cov: fraction of the in-loss tokens (highest Cov) that get the penalty
    beta_kl_cov: float = 1.0  # KL-Cov: coefficient of |log r| on the selected tokens
    m2po_tau: float | None = None  # M2PO: mask the largest (log pi_old/mu)^2 until mean <= tau
    entropy_target: float | None = None  # adapt the entropy coefficient toward this entropy (nats); None: off
    entropy_target_lr: float = 0.01  # step of the adaptation: alpha += lr * (target - H), alpha >= 0
    # (j) rollout correction (docs/algorithms/rollout_correction.md): w = pi_old / mu, mu the sampler's
    #     log-probs of the same tokens, per token or as the geometric mean over the sequence; detached.
    #     none | token_truncate | sequence_truncate (the policy term times min(w, max)) | token_mask |
    #     sequence_mask (units with w outside [min, max] leave the loss and its normaliser)
    rollout_correction: str = "none"
    rollout_correction_max: float = 2.0  # verl's rollout_is_threshold; TRL's 3.0 bounds a product
    rollout_correction_min: float = 0.0  # mask modes' lower bound; 0: none (TRL's default)

    def __post_init__(self) -> None:
        """Lists as tuples, each name once, in registration order. A filter that provides what a piece needs
        (``retain_k``: the ``retained`` set of ``subset_zscore``) is listed exactly when a chosen piece needs
        it: choosing the advantage chooses the filter, and changing it drops the filter."""
        needed = {need for kind, field in CHOICE_FIELDS.items() if getattr(self, field) in REGISTRIES[kind]
                  for need in REGISTRIES[kind].info(getattr(self, field)).get("needs", ())}
        for field, kind in LIST_FIELDS.items():
            names = as_names(getattr(self, field))
            if kind == "filter" and all(isinstance(n, str) for n in names):
                provided = {n: FILTERS.info(n)["provides"] for n in FILTERS if "provides" in FILTERS.info(n)}
                names = tuple(n for n in names if n not in provided or provided[n] in needed)
                names += tuple(n for n, need in provided.items() if need in needed)
            object.__setattr__(self, field, _in_order(names, REGISTRIES[kind]))

    def replace(self, **overrides: object) -> AlgoSpec:
        """This spec with fields overridden, validated as ``preset`` does."""
        return preset(self, **overrides)

    def info(self, kind: str) -> dict:
        """The declaration of the chosen piece of a single-choice kind (``advantage``, ``ratio`` ...)."""
        return REGISTRIES[kind].info(getattr(self, CHOICE_FIELDS[kind]))

    @property
    def pieces(self) -> tuple[tuple[str, str], ...]:
        """The pieces that act, as ``(kind, name)``: one per single-choice kind, then the listed filters and
        shaping pieces (in registration order) whose declared ``when`` holds (``kl_in_reward``:
        ``beta > 0``)."""
        chosen = tuple((kind, getattr(self, field)) for kind, field in CHOICE_FIELDS.items())
        listed = tuple((kind, name) for field, kind in LIST_FIELDS.items() for name in getattr(self, field))
        return chosen + tuple((kind, name) for kind, name in listed
                              if REGISTRIES[kind].info(name).get("when", lambda spec: True)(self)) + \
            _selections(self)

    def acting(self, kind: str) -> tuple[str, ...]:
        """The names of the acting pieces of ``kind`` (``filter``, ``shaping``), in the order they apply."""
        return tuple(name for k, name in self.pieces if k == kind)

    @property
    def needs_refill(self) -> bool:
        """A chosen filter drops whole groups (role ``group``), so the trainer samples more prompts to refill
        the batch (DAPO's dynamic sampling)."""
        return any(FILTERS.info(name)["role"] == "group" for name in self.acting("filter"))

    # The old switches, read-only: whether their piece is listed.
    @property
    def dynamic_sampling(self) -> bool:
        """``nonzero_variance`` is among the filters."""
        return _listed(self, "dynamic_sampling")

    @property
    def overlong_filter(self) -> bool:
        """``drop_truncated`` is among the filters."""
        return _listed(self, "overlong_filter")

    @property
    def soft_overlong(self) -> bool:
        """``soft_overlong`` is among the shaping pieces."""
        return _listed(self, "soft_overlong")

    @property
    def kl_placement(self) -> str:
        """``"reward"`` when ``kl_in_reward`` is among the shaping pieces, else ``"loss"``."""
        return "reward" if _listed(self, "kl_placement") else "loss"

    def kwargs(self, kind: str, name: str) -> dict:
        """The keyword arguments piece ``name`` of ``kind`` reads from this spec (its declared ``params``)."""
        params = params_of(REGISTRIES[kind].info(name))
        return {keyword: getattr(self, field) for field, keyword in params.items()}

    def reads(self, field: str) -> bool:
        """Whether a chosen piece reads ``field`` (a field no chosen piece reads changes nothing)."""
        return any(field in fields_read(REGISTRIES[kind].info(name)) for kind, name in self.pieces)

    @property
    def needs(self) -> frozenset[str]:
        """Everything the chosen pieces declare they need (``old_logp``, ``ref_logp``, ``seq_kl``, ...)."""
        return frozenset(need for kind, name in self.pieces
                         for need in REGISTRIES[kind].info(name).get("needs", ()))

    @property
    def needs_ref_logp(self) -> bool:
        """A reference policy pass is needed: a KL term is on (``beta > 0``), in the loss or in the reward."""
        return self.beta > 0 and bool(self.needs & {"ref_logp", "seq_kl"})

    @property
    def needs_reference(self) -> bool:
        """The trainer loads a frozen reference model (``needs_ref_logp``)."""
        return self.needs_ref_logp

    def needs_old_logp(self, off_policy: bool) -> bool:
        """A separate pi_old pass is needed. ``off_policy``: the trainer updates more than once per rollout
        (``num_iterations > 1`` or ``mini_batches > 1``), so the ratio's pi_old is not the current policy;
        on-policy it is the detached current log-prob. The KL in the reward (``seq_kl``) is taken at pi_old
        before any update, so it needs the pass either way; so do a token selection over the whole mini-batch
        (``minibatch_old_logp``: Clip-Cov, KL-Cov, M2PO) and a rollout correction (``behaviour_logp``: its
        weights and masks compare pi_old with the sampler's log-probs before the update, so that a mask can
        leave the normaliser)."""
        before_update = {"seq_kl", "minibatch_old_logp", "behaviour_logp"}
        return (off_policy and "old_logp" in self.needs) or bool(self.needs & before_update)

    @property
    def needs_selection(self) -> bool:
        """(i) A token selection acts (Clip-Cov, KL-Cov, M2PO): the caller takes it once per mini-batch
        (``select_tokens``) and passes it to every micro-batch's ``policy_loss``."""
        return bool(self.acting("selection"))

    def at_alpha(self, alpha: float) -> AlgoSpec:
        """(i) This spec with the entropy coefficient the target's adaptation reached (``next_alpha``)."""
        return dataclasses.replace(self, entropy_coef=float(alpha))

    @property
    def kl_in_loss(self) -> bool:
        """The KL estimator's term is added to the loss: ``beta > 0`` and no acting shaping piece takes the
        KL into the reward (needs ``seq_kl``)."""
        return self.beta > 0 and "seq_kl" not in self.needs

    @property
    def sequence_level(self) -> bool:
        """One loss term per sequence (GSPO, GMPO) rather than per token: the ratio or objective says so."""
        return any(self.info(kind).get("per_sequence", False) for kind in ("ratio", "objective"))

    def validate(self) -> AlgoSpec:
        """This spec, if its combination is coherent; else ValueError with the rule and the fix."""
        _validate(self)
        return self


def _selections(s: AlgoSpec) -> tuple[tuple[str, str], ...]:
    """(i) The acting token selections: the one the chosen objective names, and those whose ``when`` holds."""
    named = OBJECTIVES.info(s.clip).get("selection") if s.clip in OBJECTIVES else None
    return tuple(("selection", n) for n in SELECTIONS
                 if n == named or SELECTIONS.info(n).get("when", lambda spec: False)(s))


def next_alpha(alpha: float, entropy: float, target: float, lr: float) -> float:
    """(i) One step of the entropy coefficient toward the target: ``max(0, alpha + lr (target - H))``, dual
    ascent on the constraint ``H >= target`` (alpha grows while the entropy is below it, shrinks above).

    >>> next_alpha(0.01, 0.5, 1.0, 0.02)
    0.02
    >>> next_alpha(0.01, 2.0, 1.0, 0.02)
    0.0
    """
    return max(0.0, alpha + lr * (target - entropy))


def _listed(s: AlgoSpec, alias: str) -> bool:
    """Whether the piece of an old switch is listed."""
    field, name, _, _ = SWITCH_ALIASES[alias]
    return name in getattr(s, field)


def _in_order(names: tuple, registry: Registry) -> tuple:
    """``names`` once each: registered ones in registration order, then the rest (for validation)."""
    if not all(isinstance(n, str) for n in names):
        return names
    unique = dict.fromkeys(names)
    return tuple(n for n in registry if n in unique) + tuple(n for n in unique if n not in registry)


def params_of(info: dict) -> dict[str, str]:
    """A piece's declared ``params`` as spec field -> keyword (a tuple: the keywords are the field names)."""
    params = info.get("params", ())
    return dict(params) if isinstance(params, dict) else {name: name for name in params}


def fields_read(info: dict) -> set[str]:
    """The spec fields a piece reads: its keyword ``params`` and those the composition ``reads`` for it."""
    return set(params_of(info)) | set(info.get("reads", ()))


def _readers(field: str) -> list[tuple[str, str]]:
    """Every registered ``(kind, name)`` that reads ``field``."""
    return [(kind, name) for kind, registry in REGISTRIES.items() for name in registry
            if field in fields_read(registry.info(name))]


def _chosen_text(s: AlgoSpec, kind: str) -> str:
    """What ``s`` chose of ``kind``, for a message."""
    if kind in CHOICE_FIELDS:
        return f"{getattr(s, CHOICE_FIELDS[kind])} (the chosen {kind})"
    names = s.acting(kind)
    return f"{', '.join(names)} (the chosen {kind})" if names else f"any chosen {kind} (none is on)"


def _fix_text(readers: list[tuple[str, str]]) -> str:
    """How to make a field read: choose a reader (a list's piece is added to its list; a filter that provides
    another piece's need comes with that piece)."""
    lists = {kind: field for field, kind in LIST_FIELDS.items()}
    if not all(kind in lists for kind, _ in readers):
        return "drop it or choose one of those"
    ways = ["choose " + " or ".join(f"{CHOICE_FIELDS[k]}={n}" for k, n in _needing(info["provides"]))
            if "provides" in (info := REGISTRIES[kind].info(name)) else f"add {name} to {lists[kind]}"
            for kind, name in readers]
    return f"drop it or {' or '.join(ways)}"


def _check_read(s: AlgoSpec, given: Iterable[str]) -> None:
    """Every field ``given`` (set by a preset row or an override) is read by a piece ``s`` chooses; the
    fields that choose pieces and the metadata always are. Fields inherited from the base are not checked:
    after ``advantage=group_center`` the base's std settings are inert, not an error."""
    for field in given:
        if field in CHOOSING_KEYS or s.reads(field):
            continue
        readers = _readers(field)
        not_by = ", ".join(_chosen_text(s, kind) for kind in dict.fromkeys(kind for kind, _ in readers))
        _fail(f"{field} is read by {', '.join(name for _, name in readers)}, not by {not_by}",
              _fix_text(readers))


def _fail(rule: str, fix: str) -> None:
    """Reject a spec: ``rule``; ``fix``."""
    raise ValueError(f"{rule}; {fix}")


def choices(field: str) -> list[str]:
    """The piece names a spec may list under ``field`` (``filters`` or ``shaping``), sorted."""
    registry = REGISTRIES[LIST_FIELDS[field]]
    return [n for n in registry.names() if registry.info(n).get("choice", True)]


def _check_lists(s: AlgoSpec) -> None:
    """Each name in ``filters`` and ``shaping`` is a piece of that kind that a spec may choose."""
    for field, kind in LIST_FIELDS.items():
        registry = REGISTRIES[kind]
        known = ", ".join(choices(field))
        for name in getattr(s, field):
            if not isinstance(name, str):
                _fail(f"{field} must be a list of {registry.kind} names, got {name!r}", f"known: {known}")
            other = next((f for f, k in LIST_FIELDS.items() if f != field and name in REGISTRIES[k]), None)
            if other:
                _fail(f"{name} is a {REGISTRIES[LIST_FIELDS[other]].kind}, not a {registry.kind}",
                      f"list it under {other}")
            if name not in choices(field):
                raise UnknownNameError(f"{field}: unknown {registry.kind} {name!r}; known: {known}")


def _validate(s: AlgoSpec) -> None:
    for kind, field in CHOICE_FIELDS.items():
        REGISTRIES[kind].get(getattr(s, field))
    _check_lists(s)
    if s.std_ddof not in (0, 1):
        _fail(f"std_ddof must be 0 or 1, got {s.std_ddof}", "use 0 (population std) or 1 (Bessel)")
    if s.adv_eps < 0:
        _fail(f"adv_eps must be >= 0, got {s.adv_eps}", "use a small positive value such as 1e-6")
    if s.epsilon_high < 0 or (s.epsilon_low is not None and s.epsilon_low < 0):
        _fail("epsilon_low and epsilon_high must be >= 0", "clip bounds are distances from ratio 1")
    if s.epsilon_low is None and s.clip != "is_weight_clip":
        _fail(f"epsilon_low=None (no lower bound) is only meaningful for is_weight_clip, not {s.clip}",
              "give epsilon_low a value")
    if s.clip_ratio_c is not None and (s.clip not in ("ppo_clip", "gppo", "clip_cov") or s.clip_ratio_c <= 1):
        _fail("clip_ratio_c (dual-clip) needs clip='ppo_clip', 'gppo' or 'clip_cov' and c > 1",
              "use e.g. clip_ratio_c=3, or None")
    if s.sequence_level and s.loss_type not in ("seq_mean", "seq_mean_token_mean"):
        _fail(f"importance_sampling_level={s.importance_sampling_level!r} gives one term per sequence, "
              f"which loss_type={s.loss_type!r} cannot weigh by tokens",
              "use loss_type='seq_mean' (the paper's), or importance_sampling_level='sequence_token' "
              "for a token-level GSPO")
    if (s.importance_sampling_level == "geometric") != (s.clip == "log_clip"):
        _fail("GMPO's geometric ratio and the log-space clip go together",
              "use importance_sampling_level='geometric' with clip='log_clip' (or neither)")
    if s.clip in ("is_weight_clip", "soft_gate", "gppo") and s.importance_sampling_level != "token":
        _fail(f"clip={s.clip!r} is defined on token ratios", "use importance_sampling_level='token'")
    if s.retain_k is not None and s.advantage != "subset_zscore":
        _fail("retain_k (GFPO) chooses a subset whose statistics the advantage must use",
              "use advantage='subset_zscore' with retain_k")
    if s.retain_k is not None and s.retain_k < 2:
        _fail(f"retain_k must be >= 2, got {s.retain_k}: a retained set of one has no spread, so every "
              "advantage would be 0", "keep at least two responses per group")
    if s.retain_metric not in ("length", "token_efficiency"):
        _fail(f"retain_metric must be 'length' or 'token_efficiency', got {s.retain_metric!r}", "pick one")
    if s.retain_normalise_over not in ("all", "retained"):
        _fail(f"retain_normalise_over must be 'all' or 'retained', got {s.retain_normalise_over!r}",
              "pick one")
    if s.soft_overlong and not 0 < s.overlong_buffer_len <= s.overlong_max_len:
        _fail("soft overlong needs 0 < overlong_buffer_len <= overlong_max_len",
              f"got buffer {s.overlong_buffer_len}, max {s.overlong_max_len}")
    if s.loss_norm_length is not None and s.loss_norm_length <= 0:
        _fail(f"loss_norm_length must be > 0, got {s.loss_norm_length}", "set it to max_new_tokens")
    if s.opsm_delta is not None and s.opsm_delta < 0:
        _fail(f"opsm_delta must be >= 0, got {s.opsm_delta}: it bounds a mean log-ratio that is >= 0 for the "
              "sequences it is meant to catch", "use a small positive value, or None to turn it off")
    if s.entropy_coef < 0:
        _fail(f"entropy_coef must be >= 0, got {s.entropy_coef}: the bonus -entropy_coef * H rewards "
              "entropy, a negative coefficient would penalise it", "0 turns the bonus off")
    if s.beta < 0:
        _fail(f"beta must be >= 0, got {s.beta}", "0 disables the KL term")
    if s.kl_placement == "reward" and s.kl_estimator != "k1":
        _fail("a KL penalty in the reward (shaping kl_in_reward) uses k1 (its expectation is the sequence "
              "KL)", "set kl_estimator='k1'")
    if min(s.tau_pos, s.tau_neg) <= 0:
        _fail("SAPO temperatures tau_pos and tau_neg must be > 0", "use the paper's 1.0 / 1.05")
    if min(s.gppo_beta1, s.gppo_beta2) < 0:
        _fail(f"gppo_beta1 and gppo_beta2 must be >= 0, got {s.gppo_beta1} / {s.gppo_beta2}: a negative "
              "scale would push a clipped token the wrong way", "use GPPO's 1 / 1 or CE-GPPO's 0.75 / 1")
    _validate_selections(s)
    _check_correction(s)
    if s.advantage == "maxrl" and s.acting("shaping"):
        _fail(f"advantage='maxrl' divides by the group's mean reward, a success rate, but the shaping "
              f"{', '.join(s.acting('shaping'))} subtracts from the reward, so the mean can reach 0 or below",
              "drop the shaping, or use a reward function that stays >= 0 (e.g. length shaping as a reward)")


def _validate_selections(s: AlgoSpec) -> None:
    """(i) The rules of Clip-Cov, KL-Cov, M2PO and the entropy target."""
    if s.clip in ("clip_cov", "kl_cov") and s.importance_sampling_level != "token":
        _fail(f"clip={s.clip!r} selects tokens by their covariance", "use importance_sampling_level='token'")
    if not (0 < s.clip_cov_ratio <= 1 and 0 < s.kl_cov_ratio <= 1):
        _fail(f"clip_cov_ratio and kl_cov_ratio are fractions of the tokens, in (0, 1]; got "
              f"{s.clip_cov_ratio} / {s.kl_cov_ratio}", "use the paper's 2e-4 (verl's default)")
    if s.clip_cov_lb >= s.clip_cov_ub:
        _fail(f"clip_cov_lb must be below clip_cov_ub, got {s.clip_cov_lb} >= {s.clip_cov_ub}: no token's "
              "covariance could lie between them", "use the paper's 1 and 5")
    if s.beta_kl_cov < 0:
        _fail(f"beta_kl_cov must be >= 0, got {s.beta_kl_cov}: a negative coefficient would reward the "
              "high-covariance tokens for moving away from pi_old", "use the paper's 1, or 0 to turn it off")
    if s.m2po_tau is not None and s.importance_sampling_level != "token":
        _fail("m2po_tau masks single tokens, which a sequence-level ratio mixes with the others",
              "use importance_sampling_level='token', or None to turn M2PO off")
    if s.m2po_tau is not None and s.m2po_tau <= 0:
        _fail(f"m2po_tau must be > 0, got {s.m2po_tau}: it bounds a mean of squares, so <= 0 would mask "
              "every token", "use the paper's 0.04, or None to turn M2PO off")
    if s.entropy_target is not None and (s.entropy_target <= 0 or s.entropy_target_lr <= 0):
        _fail(f"entropy_target and entropy_target_lr must be > 0, got {s.entropy_target} / "
              f"{s.entropy_target_lr}", "give a target entropy in nats below log(vocabulary size), or None")
def _check_correction(s: AlgoSpec) -> None:
    """The rollout correction's bounds, and the objectives it cannot combine with (docs/algorithms/
    rollout_correction.md)."""
    mode = s.rollout_correction
    if mode == "none":
        return
    if not s.rollout_correction_max > 1:
        _fail(f"rollout_correction_max must be > 1, got {s.rollout_correction_max}: it bounds "
              "w = pi_old / mu, which is 1 when the sampler and the trainer agree, so a bound <= 1 would "
              "truncate or mask the agreeing tokens too", "use verl's 2.0 or TRL's 3.0")
    if not 0 <= s.rollout_correction_min < 1:
        _fail(f"rollout_correction_min must be in [0, 1), got {s.rollout_correction_min}: a mask keeps w in "
              "[min, max], and w = 1 (agreement) must stay in", "use e.g. 0.5, or 0 for no lower bound")
    if mode.startswith("token_") and s.sequence_level:
        _fail(f"rollout_correction={mode} weighs each token, but importance_sampling_level="
              f"{s.importance_sampling_level!r} with clip={s.clip!r} gives one term per sequence",
              "use rollout_correction=sequence_truncate or sequence_mask")
    if mode == "sequence_mask" and s.importance_sampling_level in ("sequence", "sequence_token"):
        _fail(f"rollout_correction=sequence_mask with importance_sampling_level="
              f"{s.importance_sampling_level!r}: GSPO's ratio is already a per-sequence geometric mean, "
              "clipped per sequence, and a second per-sequence gate on pi_old / mu would stack two trust "
              "regions on one sequence term", "use rollout_correction=sequence_truncate or token_truncate")


def _check_provided(s: AlgoSpec, given: dict[str, object]) -> None:
    """A filter that only provides another piece's need (``retain_k``), listed where no chosen piece needs it,
    would do nothing: refused when it is given, dropped quietly when it is inherited."""
    for field, kind in LIST_FIELDS.items():
        for name in as_names(given.get(field)):
            if isinstance(name, str) and name in REGISTRIES[kind] and name not in getattr(s, field):
                need = REGISTRIES[kind].info(name)["provides"]
                users = [f"{CHOICE_FIELDS[k]}={n}" for k, n in _needing(need)]
                _fail(f"{name} provides the {need} set, which no chosen piece uses",
                      f"choose {' or '.join(users)}, or drop {name} from {field}")


def _needing(need: str) -> list[tuple[str, str]]:
    """Every registered single-choice ``(kind, name)`` that needs ``need``."""
    return [(kind, name) for kind in CHOICE_FIELDS for name in REGISTRIES[kind]
            if need in REGISTRIES[kind].info(name).get("needs", ())]


def _row(name: str, paper: str, summary: str, **fields: object) -> AlgoSpec:
    """A preset: its choices and the hyperparameters it sets (each read by one of its pieces)."""
    spec = AlgoSpec(name, paper, summary, **fields).validate()
    _check_provided(spec, fields)
    _check_read(spec, fields)
    return spec


# std_ddof=1, adv_eps=1e-6 outside the root (the defaults) is the verl / paper-code convention; grpo follows
# the project spec's population std with delta inside the root.
PRESETS: dict[str, AlgoSpec] = {
    s.name: s
    for s in (
        _row("grpo", "2402.03300",
             "group z-score, token ratio, clip 0.2, seq-mean-token-mean, k3 KL in the loss",
             std_ddof=0, adv_eps=1e-8, adv_eps_inside=True, beta=0.04),
        _row("dr_grpo", "2503.20783", "no std, no length normalisation: token sum over a constant budget",
             advantage="group_center", loss_type="seq_mean_token_sum_norm"),
        _row("dapo", "2503.14476", "clip-higher, dynamic sampling, token-mean, soft overlong punishment",
             epsilon_high=0.28, loss_type="token_mean", filters=("nonzero_variance",),
             shaping=("soft_overlong",)),
        _row("gspo", "2507.18071", "sequence-level (geometric-mean) ratio, clipped per sequence",
             importance_sampling_level="sequence", epsilon_low=3e-4, epsilon_high=4e-4,
             loss_type="seq_mean"),
        _row("gspo_token", "2507.18071", "GSPO with the ratio's value per sequence and gradient per token",
             importance_sampling_level="sequence_token", epsilon_low=3e-4, epsilon_high=4e-4),
        _row("gmpo", "2507.20673", "geometric mean of token ratios, clipped per token in log space",
             importance_sampling_level="geometric", clip="log_clip", epsilon_low=0.4, epsilon_high=0.4,
             loss_type="seq_mean"),
        _row("gfpo", "2508.09726", "keep the k best (shortest) of each group; z-score over the kept set",
             advantage="subset_zscore", epsilon_high=0.28, loss_type="token_mean",
             retain_metric="length", filters=("retain_k",)),
        _row("lite_ppo", "2508.08221", "group mean with batch std, token-mean aggregation",
             advantage="group_mean_batch_std", loss_type="token_mean"),
        _row("rloo", "2402.14740", "leave-one-out baseline", advantage="rloo", loss_type="token_mean"),
        _row("reinforce_pp_baseline", "2501.03262", "group-centre, then whiten over the batch's tokens",
             advantage="batch_whiten_tokens", loss_type="token_mean", kl_estimator="k2"),
        _row("cispo", "2506.13585",
             "clip the importance weight (stop-gradient), never drop a token's gradient",
             clip="is_weight_clip", epsilon_low=None, epsilon_high=0.28, loss_type="token_mean",
             filters=("nonzero_variance",)),
        _row("sapo", "2511.20347", "a smooth sigmoid gate instead of the hard clip",
             clip="soft_gate"),
        _row("maxrl", "2602.02710", "centred reward divided by the group mean (success rate): 1/p weighting",
             advantage="maxrl", loss_type="token_mean"),
        _row("gppo", "2508.07629", "clipped tokens keep the bound's gradient (stop-gradient), dual-clip 3",
             clip="gppo", epsilon_high=0.28, clip_ratio_c=3.0, loss_type="token_mean"),
        _row("ce_gppo", "2509.20712", "GPPO with the clipped gradients scaled: beta_1 0.75 (A<0), beta_2 1",
             clip="gppo", epsilon_high=0.28, clip_ratio_c=3.0, gppo_beta1=0.75, gppo_beta2=1.0,
             loss_type="token_mean"),
        # (i) covariance objectives and M2PO: docs/algorithms/{clip_cov,kl_cov,m2po}.md
        _row("clip_cov", "2505.22617", "PPO clip; a random 2e-4 of tokens, Cov in (1, 5), lose gradient",
             clip="clip_cov", loss_type="token_mean", clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0),
        _row("kl_cov", "2505.22617", "unclipped r*A; beta*|log r| on the 2e-4 of tokens with the highest Cov",
             clip="kl_cov", loss_type="token_mean", kl_cov_ratio=2e-4, beta_kl_cov=1.0),
        _row("m2po", "2510.01161", "no clip; mask the largest (log pi_old/mu)^2 until their mean <= 0.04",
             clip="none", loss_type="token_mean", m2po_tau=0.04),
        # Not one of the spec's presets: the algorithm fields of TRL 1.16's GRPOConfig() (trl/trainer/
        # grpo_config.py, grpo_trainer.py): scale_rewards="group" as (r - mean) / (Bessel std + 1e-4),
        # epsilon 0.2 both sides, loss_type="dapo" (token mean over the whole batch), beta 0.0.
        _row("trl_defaults", "",
             "TRL 1.16 GRPOConfig() defaults: Bessel std + 1e-4, clip 0.2, token-mean, no KL",
             std_ddof=1, adv_eps=1e-4, loss_type="token_mean"),
        # Not one of the spec's presets either: GRPO with verl's (and most paper code's) std convention.
        _row("grpo_bessel", "2402.03300",
             "GRPO with verl's std: Bessel-corrected, 1e-6 added outside the root",
             std_ddof=1, adv_eps=1e-6, adv_eps_inside=False, beta=0.04),
    )
}

def preset(name: str | AlgoSpec, **overrides: object) -> AlgoSpec:
    """The validated spec of a named algorithm, with any field overridden. An override that no chosen piece
    reads is rejected, naming the pieces that would read it.

    >>> preset("dapo").epsilon_high
    0.28
    >>> preset("grpo", beta=0.0).beta
    0.0
    """
    if isinstance(name, AlgoSpec):
        base = name
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise UnknownNameError(f"unknown algorithm {name!r}; known: {', '.join(PRESETS)}")
    overrides = translate_switches(base, translate_trl(overrides))
    fields = {f.name for f in dataclasses.fields(AlgoSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown algorithm field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(fields | set(SWITCH_ALIASES)))}")
    spec = dataclasses.replace(base, **overrides).validate()
    _check_provided(spec, overrides)
    _check_read(spec, overrides)
    return spec

