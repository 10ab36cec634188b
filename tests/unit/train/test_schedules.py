"""train.lr_scheduler: every transformers.get_scheduler curve after grouprl's warm-up, checked at config load,
and a scheduler's state survives a save and load."""

import pytest
import torch
from transformers.optimization import get_scheduler

from grouprl.config import ConfigError, load_config
from grouprl.optim import build_scheduler, lr_factor, scheduler_names

KWARGS = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
          "warmup_stable_decay": {"num_decay_steps": 4}, "cosine_with_restarts": {"num_cycles": 2},
          "polynomial": {"power": 2.0}}
W, T = 3, 12


def transformers_curve(name: str, kwargs: dict):
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_scheduler(name, probe, num_warmup_steps=W, num_training_steps=T,
                         scheduler_specific_kwargs=kwargs).lr_lambdas[0]


def test_every_fixed_curve_of_transformers_is_offered():
    from transformers.trainer_utils import SchedulerType

    assert set(scheduler_names()) == {k.value for k in SchedulerType} - {"reduce_lr_on_plateau", "greedy"}


@pytest.mark.parametrize("name", scheduler_names())
def test_grouprl_warmup_then_the_transformers_curve(name):
    kwargs = KWARGS.get(name, {})
    factor, theirs = (lr_factor(name, warmup_steps=W, total_steps=T, kwargs=kwargs),
                      transformers_curve(name, kwargs))
    assert [factor(s) for s in range(W)] == [(s + 1) / (W + 1) for s in range(W)]  # the first update moves
    # constant, linear and cosine are computed locally (no transformers import): this is their check too
    assert [factor(s) for s in range(W, T)] == pytest.approx([theirs(s) for s in range(W, T)])


@pytest.mark.parametrize("overrides,message", [
    (["train.lr_scheduler=reduce_lr_on_plateau"],
     "is not a fixed learning-rate curve; use one of linear, cosine"),
    (["train.lr_scheduler=cosine_wiht_min_lr"],
     "is not a fixed learning-rate curve; did you mean cosine_with_min_lr?"),
    (["train.lr_scheduler=cosine_with_min_lr"], "train.lr_scheduler_kwargs {} do not fit"),
    (["lr_scheduler_type=linear", "lr_scheduler_kwargs={power: 2}"], "unexpected keyword argument 'power'"),
])
def test_bad_schedules_fail_at_config_load(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_open_r1s_cosine_with_min_lr_loads():
    cfg = load_config(None, ["lr_scheduler_type=cosine_with_min_lr",
                             "lr_scheduler_kwargs={min_lr_rate: 0.1}"])
    assert (cfg.train.lr_scheduler, cfg.train.lr_scheduler_kwargs) == ("cosine_with_min_lr",
                                                                       {"min_lr_rate": 0.1})


def test_scheduler_state_resumes():
    def make():
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
        return optimizer, build_scheduler(optimizer, warmup_steps=W, total_steps=T, kind="cosine_with_min_lr",
                                          kwargs={"min_lr_rate": 0.1})

    optimizer, scheduler = make()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer2, scheduler2 = make()
    scheduler2.load_state_dict(state)
    for opt, sched in ((optimizer, scheduler), (optimizer2, scheduler2)):
        opt.step()
        sched.step()
    assert scheduler2.get_last_lr() == pytest.approx(scheduler.get_last_lr())
