"""output.report_to: metrics.jsonl always, plus each named tracker; output.tensorboard and wandb_mode still
work."""

import sys
import types

import pytest

from grouprl.config import ConfigError, load_config
from grouprl.logging.sinks import JsonlSink, TensorBoardSink, TrackioSink
from grouprl.logging.sinks import open_sinks as _sinks


def kinds(cfg, tmp_path):
    sinks = _sinks(cfg, tmp_path)
    try:
        return [type(s) for s in sinks]
    finally:
        for sink in sinks[1:]:
            sink.close()


def test_report_to_and_the_older_keys(tmp_path):
    assert kinds(load_config(), tmp_path) == [JsonlSink]
    assert kinds(load_config(None, ["output.report_to=[tensorboard]"]), tmp_path) == [
        JsonlSink, TensorBoardSink]
    assert kinds(load_config(None, ["output.tensorboard=true"]), tmp_path) == [JsonlSink, TensorBoardSink]
    assert kinds(load_config(None, ["report_to=tensorboard", "output.tensorboard=true"]), tmp_path) == [
        JsonlSink, TensorBoardSink]


def test_trackio_gets_every_step(tmp_path, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw["project"])),
                                 log=lambda row, step: calls.append(("log", row, step)),
                                 finish=lambda: calls.append(("finish",)))
    monkeypatch.setitem(sys.modules, "trackio", fake)
    sinks = _sinks(load_config(None, ["report_to=[trackio]"]), tmp_path)
    assert [type(s) for s in sinks] == [JsonlSink, TrackioSink]
    sinks[1].write({"step": 3, "reward/mean": 0.5, "note": "text"})
    sinks[1].close()
    assert calls == [("init", "grouprl"), ("log", {"reward/mean": 0.5}, 3), ("finish",)]


def test_unknown_or_missing_trackers(tmp_path, monkeypatch):
    with pytest.raises(ConfigError,
                       match="output.report_to: unknown mlflow; use some of tensorboard, wandb, trackio"):
        load_config(None, ["report_to=[mlflow]"])
    with pytest.raises(ConfigError, match="report_to: 'all' is not supported"):
        load_config(None, ["report_to=all"])
    monkeypatch.setitem(sys.modules, "trackio", None)  # not installed
    with pytest.raises(ConfigError, match="needs trackio: pip install trackio"):
        _sinks(load_config(None, ["output.report_to=[trackio]"]), tmp_path)
