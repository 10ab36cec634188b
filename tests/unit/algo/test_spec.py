"""What the spec answers from the pieces' declarations: which pieces it chooses, which passes it needs, and
which settings it refuses because no chosen piece would read them."""

import dataclasses

import pytest
import torch

from grouprl.algo import PRESETS, AlgoSpec, GroupView, kept_groups, preset
from grouprl.algo.presets import CHOOSING_KEYS
from grouprl.registry import UnknownNameError

DEFAULTS = AlgoSpec()


@pytest.mark.parametrize("name,overrides,message", [
    ("reinforce_pp_baseline", dict(adv_eps=1e-3),
     "adv_eps is read by group_zscore, group_mean_batch_std, subset_zscore, maxrl, not by "
     "batch_whiten_tokens (the chosen advantage); drop it or choose one of those"),
    ("rloo", dict(std_ddof=0), "std_ddof is read by group_zscore, group_mean_batch_std, subset_zscore, "
                               "not by rloo (the chosen advantage)"),
    ("grpo", dict(overlong_max_len=8), "overlong_max_len is read by soft_overlong, not by any chosen shaping "
                                       "(none is on)"),
    ("dapo", dict(soft_overlong=False, overlong_buffer_len=2),
     "overlong_buffer_len is read by soft_overlong, not by any chosen shaping (none is on); drop it or add "
     "soft_overlong to shaping"),
    ("grpo", dict(retain_metric="length"), "retain_metric is read by retain_k, not by any chosen filter "
                                           "(none is on); drop it or choose advantage=subset_zscore"),
    ("sapo", dict(epsilon_high=0.28), "epsilon_high is read by ppo_clip, log_clip, is_weight_clip, "
                                      "gppo, clip_cov, not by soft_gate (the chosen objective)"),
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
    for field in dataclasses.fields(AlgoSpec):
        if field.name not in CHOOSING_KEYS and getattr(spec, field.name) != getattr(DEFAULTS, field.name):
            assert spec.reads(field.name), f"{name} sets {field.name}, which none of its pieces reads"


def test_presets_name_their_filters_and_shaping():
    assert PRESETS["dapo"].filters == ("nonzero_variance",) and PRESETS["dapo"].shaping == ("soft_overlong",)
    assert PRESETS["cispo"].filters == ("nonzero_variance",) and PRESETS["cispo"].shaping == ()
    assert PRESETS["gfpo"].filters == ("retain_k",)
    assert PRESETS["grpo"].filters == () and PRESETS["grpo"].shaping == ()
    assert [n for n, s in PRESETS.items() if s.needs_refill] == ["dapo", "cispo"]


def test_the_list_form_chooses_the_pieces():
    s = preset("grpo", filters=["drop_truncated", "nonzero_variance"], shaping=["soft_overlong"],
               overlong_max_len=8, overlong_buffer_len=2)
    # kept in registration order, so the order given does not change a bit of the result
    assert (s.filters, s.shaping) == (("nonzero_variance", "drop_truncated"), ("soft_overlong",))
    assert s.pieces[-3:] == (("filter", "nonzero_variance"), ("filter", "drop_truncated"),
                             ("shaping", "soft_overlong"))
    assert s.kwargs("shaping", "soft_overlong") == dict(max_len=8, cache_len=2)
    assert preset("grpo", filters="drop_truncated").filters == ("drop_truncated",)  # one name
    plain = preset("grpo", beta=0.0, std_ddof=1, adv_eps=1e-6, adv_eps_inside=False, loss_type="token_mean")
    assert preset("dapo", filters=[], shaping=None).pieces == plain.pieces
    in_reward = preset("grpo", shaping=["kl_in_reward"], kl_estimator="k1")
    assert (in_reward.kl_in_loss, in_reward.needs_old_logp(False), PRESETS["grpo"].kl_in_loss) == \
        (False, True, True)


def test_the_old_switches_map_onto_the_lists():
    both = dict(overlong_max_len=8, overlong_buffer_len=2)
    assert preset("grpo", dynamic_sampling=True, overlong_filter=True, soft_overlong=True, **both) == \
        preset("grpo", filters=["nonzero_variance", "drop_truncated"], shaping=["soft_overlong"], **both)
    assert preset("dapo", dynamic_sampling=False).filters == ()
    assert preset("dapo", soft_overlong=False).shaping == ()
    assert preset("dapo", overlong_filter=True).filters == ("nonzero_variance", "drop_truncated")
    assert preset("grpo", kl_placement="reward", kl_estimator="k1").shaping == ("kl_in_reward",)
    assert preset("grpo", kl_placement="reward", kl_estimator="k1").replace(kl_placement="loss").shaping == ()
    # a switch edits the list given beside it
    assert preset("grpo", filters=["drop_truncated"], dynamic_sampling=True).filters == \
        ("nonzero_variance", "drop_truncated")
    # and still reads back, read-only
    dapo = PRESETS["dapo"]
    assert (dapo.dynamic_sampling, dapo.overlong_filter, dapo.soft_overlong, dapo.kl_placement) == \
        (True, False, True, "loss")
    assert preset("grpo", shaping=["kl_in_reward"], kl_estimator="k1").kl_placement == "reward"
    with pytest.raises(AttributeError):
        dapo.dynamic_sampling = False


def test_kl_in_reward_with_beta_zero_does_nothing():
    s = preset("rloo", kl_placement="reward", kl_estimator="k1")  # rloo's beta is 0
    assert s.shaping == ("kl_in_reward",) and s.acting("shaping") == ()
    assert not (s.needs_ref_logp or s.needs_old_logp(False) or s.kl_in_loss)


@pytest.mark.parametrize("overrides,error,message", [
    (dict(filters=["nope"]), UnknownNameError,
     "filters: unknown group filter 'nope'; known: drop_truncated, nonzero_variance, retain_k"),
    (dict(shaping=["length_penalty"]), UnknownNameError,
     "shaping: unknown reward shaping 'length_penalty'; known: kl_in_reward, soft_overlong"),
    (dict(filters=["soft_overlong"]), ValueError, "soft_overlong is a reward shaping, not a group filter; "
                                                  "list it under shaping"),
    (dict(filters=[{"name": "x"}]), ValueError, "filters must be a list of group filter names"),
    (dict(dynamic_sampling="yes"), ValueError, "dynamic_sampling must be true or false, got 'yes'"),
    (dict(kl_placement="both"), ValueError, "kl_placement must be 'loss' or 'reward', got 'both'"),
    (dict(filters=["retain_k"]), ValueError,
     "retain_k provides the retained set, which no chosen piece uses; choose advantage=subset_zscore, or "
     "drop retain_k from filters"),
])
def test_a_bad_list_is_refused_in_one_line(overrides, error, message):
    with pytest.raises(error) as err:
        preset("grpo", **overrides)
    assert str(err.value) == message or str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_retain_k_comes_and_goes_with_the_advantage_that_needs_it():
    assert preset("grpo", advantage="subset_zscore").filters == ("retain_k",)
    assert preset("gfpo", advantage="group_zscore").filters == ()  # inherited, so dropped quietly
    assert preset("gfpo", filters=[]).filters == ("retain_k",)
    assert preset("gfpo", dynamic_sampling=True).filters == ("nonzero_variance", "retain_k")


def test_kept_groups_asks_only_the_group_filters():
    acc = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    view = GroupView(acc, acc, torch.ones(2, 2), torch.tensor([[True, True], [False, False]]))
    assert kept_groups(view, PRESETS["dapo"]).tolist() == [False, True]
    assert kept_groups(view, preset("grpo", overlong_filter=True)).tolist() == [True, True]  # a loss filter


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("kl", [dict(beta=0.0), dict(beta=0.04), dict(beta=0.04, kl_placement="reward",
                                                                         kl_estimator="k1")])
@pytest.mark.parametrize("off_policy", [False, True])
def test_needed_passes_match_the_trainers_rule(name, kl, off_policy):
    """train/loop.py's rule: pi_ref for beta > 0; pi_old off-policy, or for a KL in the reward, or for a token
    selection over the mini-batch (Clip-Cov, KL-Cov, M2PO), which is taken before the update."""
    if name == "maxrl" and "kl_placement" in kl:  # refused: see test_maxrl_refuses_shaping
        pytest.skip("maxrl divides by the mean reward, so it takes no shaping")
    s = preset(name, **kl)
    assert s.needs_ref_logp == s.needs_reference == (s.beta > 0)
    assert s.needs_old_logp(off_policy) == (off_policy or (s.beta > 0 and s.kl_placement == "reward")
                                            or s.needs_selection)


def test_kwargs_come_from_the_declarations():
    grpo = PRESETS["grpo"]
    assert grpo.kwargs("advantage", grpo.advantage) == dict(ddof=0, eps=1e-8, eps_inside=True)
    assert grpo.kwargs("objective", "ppo_clip") == dict(epsilon_low=0.2, epsilon_high=0.2, clip_ratio_c=None)
    assert PRESETS["reinforce_pp_baseline"].kwargs("advantage", "batch_whiten_tokens") == {}
    assert PRESETS["dapo"].kwargs("shaping", "soft_overlong") == dict(max_len=20480, cache_len=4096)
    assert PRESETS["dr_grpo"].kwargs("aggregation", "seq_mean_token_sum_norm") == dict(norm_length=None)


@pytest.mark.parametrize("overrides,message", [
    (dict(shaping=["soft_overlong"], overlong_max_len=8, overlong_buffer_len=2),
     "advantage='maxrl' divides by the group's mean reward, a success rate, but the shaping soft_overlong "
     "subtracts from the reward"),
    (dict(beta=0.01, kl_placement="reward", kl_estimator="k1"), "the shaping kl_in_reward subtracts"),
])
def test_maxrl_refuses_shaping(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        preset("maxrl", **overrides)
    assert "\n" not in str(err.value)
    assert preset("maxrl", kl_placement="reward", kl_estimator="k1").acting("shaping") == ()  # beta 0: inert


@pytest.mark.parametrize("name,overrides,message", [
    ("gppo", dict(gppo_beta1=-0.5), "gppo_beta1 and gppo_beta2 must be >= 0, got -0.5 / 1.0"),
    ("gppo", dict(importance_sampling_level="sequence", loss_type="seq_mean"),
     "clip='gppo' is defined on token ratios"),
    ("gppo", dict(clip_ratio_c=0.9),
     "clip_ratio_c (dual-clip) needs clip='ppo_clip', 'gppo' or 'clip_cov' and c > 1"),
    ("grpo", dict(gppo_beta2=0.5), "gppo_beta2 is read by gppo, not by ppo_clip (the chosen objective)"),
])
def test_gppo_refuses_incoherent_settings(name, overrides, message):
    with pytest.raises(ValueError) as err:
        preset(name, **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
