"""The config schema: resolution order, overrides, and one clear error per mistake."""

import pytest

from grouprl.config import ConfigError, algo_spec, dump_config, load_config, parse_override


def test_defaults_resolve_to_the_grpo_preset():
    cfg = load_config()
    assert cfg.algorithm == "grpo" and algo_spec(cfg).beta == 0.04


def test_file_then_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("algorithm: dapo\ntrain:\n  lr: 0.001\n  steps: 7\nalgo:\n  epsilon_high: 0.3\n")
    cfg = load_config(path, ["train.lr=1e-5", "algo.beta=0.01", "train.adam_betas=[0.9, 0.95]"])
    assert (cfg.algorithm, cfg.train.lr, cfg.train.steps) == ("dapo", 1e-5, 7)
    spec = algo_spec(cfg)
    assert (spec.epsilon_high, spec.beta, spec.dynamic_sampling) == (0.3, 0.01, True)
    assert cfg.train.adam_betas == (0.9, 0.95)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["algorithm=gspo", "train.steps=3"])
    path = tmp_path / "config.yaml"
    text = dump_config(cfg)
    assert "resolved_algorithm:" in text
    path.write_text("\n".join(line for line in text.splitlines()))
    import yaml

    data = yaml.safe_load(path.read_text())
    data.pop("resolved_algorithm")
    path.write_text(yaml.safe_dump(data))
    again = load_config(path)
    assert again == cfg


def test_override_values_are_typed():
    assert parse_override("a.b=1e-5") == {"a": {"b": 1e-5}}
    assert parse_override("a=null") == {"a": None}
    assert parse_override("a=[1,2]") == {"a": [1, 2]}
    assert parse_override("a=text") == {"a": "text"}


@pytest.mark.parametrize("overrides,message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'; did you mean train.lr (TRL: learning_rate)?"),
    (["train.nope=1"], "unknown config key 'train.nope'; known keys here: activation_budget_mib, adam_betas"),
    (["nosection.x=1"], "unknown config key 'nosection'"),
    (["train.lr=fast"], "train.lr: expected float"),
    (["train.steps=1.5"], "train.steps: expected an integer"),
    (["output.plots=maybe"], "output.plots: expected true or false"),
    (["rollout.num_generations=1"], "rollout.num_generations must be >= 2"),
    (["rollout.temperature=0"], "rollout.temperature must be > 0"),
    (["train.mini_batches=100"], "train.mini_batches must be between 1 and"),
    (["algorithm=ppo"], "algorithm: unknown algorithm 'ppo'; known: grpo"),
    (["algo.epsilon_hi=0.3"], "algo: unknown algorithm field(s) epsilon_hi"),
    (["algorithm=gspo", "algo.loss_type=token_mean"], "one term per sequence"),
    (["train=3"], "train: expected a mapping"),
    (["train.lr"], "not of the form key=value"),
    (["model.dtype=float8"], "model.dtype must be"),
])
def test_bad_values_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml line"):
        load_config(bad)
