"""The trainer state on disk (train/state.py): a bitwise round trip of optimizer, scheduler, data cursor and
every rank's RNG; every kind of damage is one ResumeError naming the file; pickles are never opened."""

import json
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from grouprl.data.prompts import PromptSource
from grouprl.errors import ResumeError
from grouprl.optim import build_optimizer, build_scheduler
from grouprl.train.policy import FullWeights, matching
from grouprl.train.resume import run_like
from grouprl.train.state import (
    JSON_FILE,
    PICKLE_FILE,
    TENSOR_FILE,
    conform,
    read_trainer_state,
    rng_state,
    set_rng_state,
    write_trainer_state,
)


def _run(seed: int = 0) -> SimpleNamespace:
    """A tiny stand-in for a Setup: two layers under grouprl's AdamW (two param groups) and scheduler."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = build_optimizer(model[0].parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
    optimizer.add_param_group({"params": list(model[1].parameters()), "lr": 1e-3})
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=10, kind="cosine")
    source = PromptSource([{"prompt": str(i)} for i in range(5)], seed=1)
    return SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, source=source,
                           weights=FullWeights(model))


def _train(run: SimpleNamespace, steps: int) -> None:
    for _ in range(steps):
        run.optimizer.zero_grad()
        run.model(torch.randn(5, 3)).square().sum().backward()
        run.optimizer.step()
        run.scheduler.step()
    run.source.take(7)  # past the end of an epoch: the cursor is (1, 2)


def _state(run: SimpleNamespace, rngs: list[dict]) -> dict:
    return {"step": 3, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "data": run.source.state_dict(), "rng": rngs}


@pytest.fixture
def written(tmp_path):
    """A trained run's state written to tmp_path, with two ranks' RNG states; returns the run and the
    states."""
    run = _run()
    _train(run, 3)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    rank0 = rng_state()
    random.random(), np.random.rand(), torch.rand(1)
    rank1 = rng_state()
    write_trainer_state(tmp_path, _state(run, [rank0, rank1]))
    return run, [rank0, rank1]


def _draws() -> tuple:
    return random.random(), np.random.rand(), torch.rand(3)


def test_round_trip_is_bitwise(tmp_path, written):
    run, rngs = written
    fresh = _run(seed=5)  # other initial weights: nothing of the trained state is there before the load
    state = read_trainer_state(tmp_path, run_like(fresh))
    fresh.optimizer.load_state_dict(state["optimizer"])
    fresh.scheduler.load_state_dict(state["scheduler"])
    fresh.source.load_state_dict(state["data"])

    want, got = run.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert got["param_groups"] == want["param_groups"]  # hyper-parameters, betas a tuple again
    assert want["state"].keys() == got["state"].keys() == {0, 1, 2, 3}
    for key, fields in want["state"].items():
        for name, tensor in fields.items():
            other = got["state"][key][name]
            assert other.dtype == tensor.dtype and torch.equal(other, tensor), (key, name)
    assert fresh.scheduler.state_dict() == run.scheduler.state_dict()
    assert fresh.scheduler.get_last_lr() == run.scheduler.get_last_lr()
    assert fresh.source.state_dict() == run.source.state_dict() == {"epoch": 1, "pos": 2}
    assert fresh.source.take(4) == run.source.take(4)
    assert state["step"] == 3

    for saved, loaded in zip(rngs, state["rng"]):
        set_rng_state(saved)
        expected = _draws()
        random.seed(99), np.random.seed(99), torch.manual_seed(99)
        set_rng_state(loaded)
        drawn = _draws()
        assert drawn[:2] == expected[:2] and torch.equal(drawn[2], expected[2])


def _edit_json(directory, edit) -> None:
    doc = json.loads((directory / JSON_FILE).read_text())
    edit(doc)
    (directory / JSON_FILE).write_text(json.dumps(doc))


def _edit_tensors(directory, edit) -> None:
    tensors = load_file(directory / TENSOR_FILE)
    edit(tensors)
    save_file(tensors, directory / TENSOR_FILE)


DAMAGE = {
    "json missing": (lambda d: (d / JSON_FILE).unlink(), JSON_FILE, "is missing"),
    "json truncated": (lambda d: (d / JSON_FILE).write_text((d / JSON_FILE).read_text()[:100]), JSON_FILE,
                       "not valid JSON"),
    "json not an object": (lambda d: (d / JSON_FILE).write_text("[1, 2]"), JSON_FILE, "expected an object"),
    "step a string": (lambda d: _edit_json(d, lambda doc: doc.update(step="3")), JSON_FILE, "step"),
    "scheduler key gone": (lambda d: _edit_json(d, lambda doc: doc["scheduler"].pop("last_epoch")), JSON_FILE,
                           "scheduler lacks ['last_epoch']"),
    "lr a string": (lambda d: _edit_json(d, lambda doc: doc["optimizer"]["param_groups"][0].update(lr="x")),
                    JSON_FILE, "param_groups[0].lr"),
    "other parameters":
        (lambda d: _edit_json(d, lambda doc: doc["optimizer"]["param_groups"][1]["params"].pop()),
         JSON_FILE, "holds other parameters"),
    "data cursor a float": (lambda d: _edit_json(d, lambda doc: doc["data"].update(pos=1.5)), JSON_FILE,
                            "data.pos"),
    "python rng short": (lambda d: _edit_json(d, lambda doc: doc["rng"][1]["python"][1].pop()), JSON_FILE,
                         "rng[1] is not an RNG state"),
    "numpy rng not ints": (lambda d: _edit_json(d, lambda doc: doc["rng"][0]["numpy"][1].__setitem__(0, 0.5)),
                           JSON_FILE, "rng[0] is not an RNG state"),
    "numpy rng position past the key":
        (lambda d: _edit_json(d, lambda doc: doc["rng"][0]["numpy"].__setitem__(2, 10**6)),
         JSON_FILE, "rng[0] is not an RNG state"),
    "tensors missing": (lambda d: (d / TENSOR_FILE).unlink(), TENSOR_FILE, "is missing"),
    "tensors truncated": (lambda d: (d / TENSOR_FILE).write_bytes((d / TENSOR_FILE).read_bytes()[:300]),
                          TENSOR_FILE, "does not load"),
    "tensors garbage": (lambda d: (d / TENSOR_FILE).write_bytes(b"\x00" * 64), TENSOR_FILE, "does not load"),
    "unexpected tensor": (lambda d: _edit_tensors(d, lambda t: t.update({"os.system": torch.zeros(1)})),
                          TENSOR_FILE, "unexpected tensor 'os.system'"),
    "moment of another shape":
        (lambda d: _edit_tensors(d, lambda t: t.update({"optimizer.0.exp_avg": torch.zeros(2)})),
         TENSOR_FILE, "not AdamW's"),
    "moment gone": (lambda d: _edit_tensors(d, lambda t: t.pop("optimizer.3.exp_avg_sq")), TENSOR_FILE,
                    "not AdamW's"),
    "torch rng gone": (lambda d: _edit_tensors(d, lambda t: t.pop("rng.1.torch")), TENSOR_FILE,
                       "no tensor rng.1"),
    "torch rng of floats":
        (lambda d: _edit_tensors(d, lambda t: t.update({"rng.0.torch": torch.zeros(5056)})),
         TENSOR_FILE, "rng.0.torch is not a torch RNG state"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damage_is_one_resume_error_naming_the_file(tmp_path, written, name):
    damage, file, message = DAMAGE[name]
    damage(tmp_path)
    with pytest.raises(ResumeError) as caught:
        read_trainer_state(tmp_path, run_like(_run()))
    text = str(caught.value)
    assert f"{tmp_path / file}" in text and message in text and len(text.splitlines()) == 1, text


class _Plant:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_an_old_pickle_is_refused_and_never_opened(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / PICKLE_FILE).write_bytes(pickle.dumps({"step": 1, "payload": _Plant(marker)}))
    with pytest.raises(ResumeError, match="pickle format of older grouprl versions: it is not loaded"):
        read_trainer_state(tmp_path, run_like(_run()))
    assert not marker.exists()


def test_conform_restores_tuples_and_keeps_kinds_apart():
    assert conform({"betas": (0.9, 0.99), "n": 1, "x": None}, {"betas": [0.9, 0.99], "n": 2, "x": True},
                   "g") == {"betas": (0.9, 0.99), "n": 2, "x": True}
    assert conform({"lr": 0.5}, {"lr": 1}, "g") == {"lr": 1.0}
    for template, value, where in [({"n": 1}, {"n": True}, "g.n"), ({"b": False}, {"b": 0}, "g.b"),
                                   ({"l": [1, 2]}, {"l": [1]}, "g.l"), ({"x": None}, {"x": [1]}, "g.x"),
                                   ({"a": 1}, {"a": 1, "b": 2}, "g lacks nothing and has unknown")]:
        with pytest.raises(ValueError, match=where.replace(".", r"\.")):
            conform(template, value, "g")


def test_weights_of_another_shape_or_dtype_are_refused_before_loading(tmp_path):
    model = torch.nn.Linear(3, 2)
    expected = model.state_dict()
    assert matching(tmp_path, dict(expected), expected, "fix") == expected
    for found, message in [({**expected, "weight": torch.zeros(2, 4)}, "weight is [2, 4] torch.float32"),
                           ({**expected, "bias": torch.zeros(2, dtype=torch.float16)},
                            "bias is [2] torch.float16"),
                           ({"weight": expected["weight"]}, "missing ['bias']"),
                           ({**expected, "extra": torch.zeros(1)}, "unexpected ['extra']")]:
        with pytest.raises(ResumeError, match=message.replace("[", r"\[")):
            matching(tmp_path, found, expected, "fix")
