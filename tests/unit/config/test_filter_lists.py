"""Filters and shaping in a config: the list form, the old switches mapped onto it, TRL's name for the
overlong filter, and the printed config reading back."""

import pytest

from grouprl.config import ConfigError, algo_spec, load_config
from grouprl.config.describe import render


def test_the_list_form_on_the_command_line_and_in_a_file(tmp_path):
    spec = algo_spec(load_config(None, ["algorithm=grpo", "algo.filters=[drop_truncated,nonzero_variance]",
                                        "algo.shaping=[soft_overlong]", "algo.overlong_max_len=8",
                                        "algo.overlong_buffer_len=2"]))
    assert (spec.filters, spec.shaping) == (("nonzero_variance", "drop_truncated"), ("soft_overlong",))
    path = tmp_path / "x.yaml"
    path.write_text("algorithm: dapo\nalgo:\n  filters: [nonzero_variance, drop_truncated]\n  shaping: []\n")
    spec = algo_spec(load_config(path))
    assert (spec.filters, spec.shaping, spec.soft_overlong) == \
        (("nonzero_variance", "drop_truncated"), (), False)


@pytest.mark.parametrize("switches,lists", [
    (["algo.dynamic_sampling=true"], ["algo.filters=[nonzero_variance]"]),
    (["algo.dynamic_sampling=false", "algo.soft_overlong=false"], ["algo.filters=[]", "algo.shaping=[]"]),
    (["algo.overlong_filter=true"], ["algo.filters=[nonzero_variance,drop_truncated]"]),
    (["algo.beta=0.01", "algo.kl_placement=reward", "algo.kl_estimator=k1"],
     ["algo.beta=0.01", "algo.shaping=[soft_overlong,kl_in_reward]", "algo.kl_estimator=k1"]),
])
def test_a_switch_on_the_command_line_is_its_list(switches, lists):
    assert algo_spec(load_config(None, ["algorithm=dapo", *switches])) == \
        algo_spec(load_config(None, ["algorithm=dapo", *lists]))


def test_trls_mask_truncated_completions_adds_the_overlong_filter(tmp_path):
    path = tmp_path / "trl.yaml"
    path.write_text("mask_truncated_completions: true\n")
    spec = algo_spec(load_config(path, ["algorithm=dapo"]))
    assert spec.filters == ("nonzero_variance", "drop_truncated") and spec.overlong_filter


@pytest.mark.parametrize("override,message", [
    ("algo.filters=[nonzero_varience]", "algo: filters: unknown group filter 'nonzero_varience'; known: "
                                        "drop_truncated, nonzero_variance, retain_k"),
    ("algo.shaping=[drop_truncated]", "algo: drop_truncated is a group filter, not a reward shaping; list it "
                                      "under filters"),
    ("algo.overlong_buffer_len=2", "algo: overlong_buffer_len is read by soft_overlong, not by any chosen "
                                   "shaping (none is on); drop it or add soft_overlong to shaping"),
    ("algo.dynamic_sampling=1", "algo: dynamic_sampling must be true or false, got 1"),
])
def test_a_bad_list_is_one_config_error(override, message):
    with pytest.raises(ConfigError) as err:
        algo_spec(load_config(None, ["algorithm=grpo", override]))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_printed_config_lists_the_pieces_and_reads_back(tmp_path):
    cfg = load_config(None, ["algorithm=dapo", "algo.filters=[nonzero_variance,drop_truncated]"])
    text = render(cfg)
    assert "#   filters: [nonzero_variance, drop_truncated]" in text
    assert "#   shaping: [soft_overlong]" in text
    assert "# filters may name: drop_truncated, nonzero_variance, retain_k" in text
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert algo_spec(load_config(path)) == algo_spec(cfg)
