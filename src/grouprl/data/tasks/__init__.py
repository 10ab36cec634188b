"""Built-in, procedurally generated tasks with verifiable answers.

A task makes its own prompts (nothing is downloaded) and brings the reward functions that check them, so the
same verifier scores RL rollouts and evaluation. Look one up by name::

    task = get_task("arithmetic", digits=3)
    rows = task.generate("train", n=1000, seed=0)  # [{"prompt": "123+45=", "answer": "168"}, ...]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, Protocol

from grouprl.data.tasks.arithmetic import ArithmeticTask
from grouprl.data.tasks.chat_arithmetic import ChatArithmeticTask
from grouprl.data.tasks.code import CodeTask
from grouprl.data.tasks.countdown import ChatCountdownTask, CountdownTask
from grouprl.data.tasks.word_problems import WordProblemsTask
from grouprl.errors import ConfigError
from grouprl.registry import Registry

Split = Literal["train", "eval"]
RewardFn = Callable[..., list[float | None]]


class Task(Protocol):
    """A generator of prompt rows plus the reward functions that verify completions for them.

    ``generate(split, n, seed)`` returns ``n`` distinct rows, each a dict with at least ``prompt`` and
    ``answer`` (both ``str``); the other keys are extra dataset columns passed to the reward functions. It is
    deterministic in ``seed``, and the ``train`` and ``eval`` splits never share a prompt, whatever the seeds.

    Each reward function follows the TRL protocol
    ``fn(prompts, completions, completion_ids=None, **columns) -> list[float | None]``.
    """

    name: str
    reward_fns: list[RewardFn]

    def generate(self, split: Split, n: int, seed: int) -> list[dict[str, Any]]: ...


TASKS: Registry[Callable[..., Task]] = Registry("task")
"""The built-in tasks by name; each entry is the task's class, called with its difficulty knobs."""
for _task in (ArithmeticTask, CountdownTask, CodeTask, WordProblemsTask, ChatArithmeticTask,
              ChatCountdownTask):
    TASKS.register(_task.name)(_task)


def get_task(name: str, **knobs: Any) -> Task:
    """Build the registered task ``name`` with its difficulty ``knobs`` (constructor keyword arguments)."""
    if name not in TASKS:
        raise ConfigError(f"data.task: unknown task {name!r}; known tasks: {', '.join(TASKS.names())}.")
    known = inspect.signature(TASKS.get(name)).parameters
    unknown = sorted(set(knobs) - set(known))
    if unknown:
        raise ConfigError(f"data.task_kwargs: the {name} task has no knob {', '.join(unknown)}; "
                          f"its knobs are {', '.join(known)}")
    return TASKS.get(name)(**knobs)


__all__ = ["TASKS", "RewardFn", "Split", "Task", "get_task"]
