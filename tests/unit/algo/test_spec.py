"""What the spec answers from the pieces' declarations: which pieces it chooses, which passes it needs, and
which settings it refuses because no chosen piece would read them."""

import dataclasses

import pytest

from grouprl.algo import PRESETS, AlgoSpec, preset
from grouprl.algo.presets import CHOICE_FIELDS, META_FIELDS, SWITCH_FIELDS

DEFAULTS = AlgoSpec()


@pytest.mark.parametrize("name,overrides,message", [
    ("reinforce_pp_baseline", dict(adv_eps=1e-3),
     "adv_eps is read by group_zscore, group_mean_batch_std, subset_zscore, not by batch_whiten_tokens "
     "(the chosen advantage); drop it or choose one of those"),
    ("rloo", dict(std_ddof=0), "std_ddof is read by group_zscore, group_mean_batch_std, subset_zscore, "
                               "not by rloo (the chosen advantage)"),
    ("grpo", dict(overlong_max_len=8), "overlong_max_len is read by soft_overlong, not by any chosen shaping "
                                       "(none is on)"),
    ("sapo", dict(epsilon_high=0.28), "epsilon_high is read by ppo_clip, log_clip, is_weight_clip, "
                                      "not by soft_gate (the chosen objective)"),
    ("grpo", dict(tau_pos=2.0), "tau_pos is read by soft_gate, not by ppo_clip (the chosen objective)"),
    ("grpo", dict(loss_norm_length=8), "loss_norm_length is read by seq_mean_token_sum_norm, "
                                       "not by seq_mean_token_mean (the chosen aggregation)"),
    ("dapo", dict(retain_metric="token_efficiency"), "retain_metric is read by retain_k, "
                                                     "not by nonzero_variance (the chosen filter)"),
])
def test_a_setting_no_chosen_piece_reads_is_refused_naming_its_readers(name, overrides, message):
    with pytest.raises(ValueError) as err:
        preset(name, **overrides)
    assert message in str(err.value)


def test_a_setting_a_chosen_piece_reads_is_accepted():
    assert preset("gspo", clip_ratio_c=3.0).clip_ratio_c == 3.0  # ppo_clip at the sequence level
    assert preset("dapo", overlong_max_len=8, overlong_buffer_len=2).overlong_max_len == 8
    assert preset("dr_grpo", loss_norm_length=8).loss_norm_length == 8
    assert preset("gfpo", retain_k=3, retain_normalise_over="retained").retain_k == 3


def test_inherited_settings_become_inert_not_errors():
    """Changing a choice leaves the base's now-unread fields as they were: only what is set is checked."""
    s = preset("grpo", advantage="group_center")
    assert (s.adv_eps, s.reads("adv_eps")) == (1e-8, False)
    assert preset("dapo", soft_overlong=False).overlong_max_len == 20480


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_row_sets_only_what_its_pieces_read(name):
    """Checked when the table is built; here against the defaults, so a row cannot hide behind them."""
    spec = PRESETS[name]
    exempt = {*META_FIELDS, *SWITCH_FIELDS, *CHOICE_FIELDS.values()}
    for field in dataclasses.fields(AlgoSpec):
        if field.name not in exempt and getattr(spec, field.name) != getattr(DEFAULTS, field.name):
            assert spec.reads(field.name), f"{name} sets {field.name}, which none of its pieces reads"


def test_the_old_switches_choose_filters_and_shaping():
    assert PRESETS["dapo"].filters == ("nonzero_variance",) and PRESETS["dapo"].shaping == ("soft_overlong",)
    assert PRESETS["gfpo"].filters == ("retain_k",)
    assert PRESETS["grpo"].filters == () and PRESETS["grpo"].shaping == ()
    s = preset("grpo", dynamic_sampling=True, overlong_filter=True, soft_overlong=True)
    assert s.filters == ("nonzero_variance", "drop_truncated") and s.shaping == ("soft_overlong",)
    in_reward = preset("grpo", kl_placement="reward", kl_estimator="k1")
    assert (in_reward.shaping, in_reward.kl_in_loss, PRESETS["grpo"].kl_in_loss) == (("kl_in_reward",), False, True)
    assert preset("rloo", kl_placement="reward", kl_estimator="k1").shaping == ()  # beta = 0: no KL at all


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("kl", [dict(beta=0.0), dict(beta=0.04), dict(beta=0.04, kl_placement="reward",
                                                                         kl_estimator="k1")])
@pytest.mark.parametrize("off_policy", [False, True])
def test_needed_passes_match_the_trainers_rule(name, kl, off_policy):
    """train/loop.py's rule: pi_ref for beta > 0; pi_old off-policy, or for a KL in the reward."""
    s = preset(name, **kl)
    assert s.needs_ref_logp == s.needs_reference == (s.beta > 0)
    assert s.needs_old_logp(off_policy) == (off_policy or (s.beta > 0 and s.kl_placement == "reward"))


def test_kwargs_come_from_the_declarations():
    grpo = PRESETS["grpo"]
    assert grpo.kwargs("advantage", grpo.advantage) == dict(ddof=0, eps=1e-8, eps_inside=True)
    assert grpo.kwargs("objective", "ppo_clip") == dict(epsilon_low=0.2, epsilon_high=0.2, clip_ratio_c=None)
    assert PRESETS["reinforce_pp_baseline"].kwargs("advantage", "batch_whiten_tokens") == {}
    assert PRESETS["dapo"].kwargs("shaping", "soft_overlong") == dict(max_len=20480, cache_len=4096)
    assert PRESETS["dr_grpo"].kwargs("aggregation", "seq_mean_token_sum_norm") == dict(norm_length=None)
