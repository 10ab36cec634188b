"""Where environments live and their tools run: a forked worker process, like the reward functions'.

``EnvHost`` holds one environment instance per episode slot. With ``isolate=True`` (the default, where
``fork`` exists) the instances live in a long-lived child forked at start-up (``rewards/runner.py``'s worker
setup: it dies with the trainer, ignores stop signals, limits its memory and volunteers for the OOM killer),
so a tool that crashes, leaks or hangs never takes the trainer with it; otherwise they live in the trainer's
process.

Timeouts. Each call (``reset``, a tool, ``respond``, ``get_reward``) gets ``timeout`` seconds, enforced
inside the process that runs it with ``SIGALRM`` (``setitimer``): the call is interrupted, the instance
survives, and the model is told the tool timed out. Code that blocks ``SIGALRM`` (a long C call) is caught by
a second guard in the worker case only: past ``timeout + 5`` seconds the worker is killed and replaced,
every episode still running loses its instance and ends there (counted as a tool error). In-process there is
no second guard, and ``SIGALRM`` works only on the main thread (elsewhere a call has no timeout).
"""

from __future__ import annotations

import inspect
import json
import math
import multiprocessing as mp
import pickle
import typing

from grouprl.alarm import deadline
from grouprl.errors import EnvError

GRACE = 5.0  # seconds past the timeout before a worker that ignores SIGALRM is killed


class _Timeout(Exception):
    pass




def _arguments_problem(method, arguments: dict) -> str | None:
    """Why ``arguments`` cannot be passed to the tool ``method``, or None."""
    try:
        inspect.signature(method).bind(**arguments)
    except TypeError as err:
        return f"bad arguments ({err})"
    hints = typing.get_type_hints(method)
    for name, value in arguments.items():
        hint = hints.get(name)
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              str: isinstance(value, str), bool: isinstance(value, bool)}.get(hint, True)
        if not ok:
            return f"argument {name} must be {hint.__name__}, got {json.dumps(value)}"
    return None


def _as_text(value) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


class _Slots:
    """The instances and the calls on them; the same code runs in the worker and in-process."""

    def __init__(self, cls: type, tools: list[str], timeout: float, max_chars: int) -> None:
        self.cls, self.tools, self.timeout, self.max_chars = cls, set(tools), timeout, max_chars
        self.envs: dict[int, object] = {}
        self.pool: list[object] = []  # instances of finished episodes, reused: construct once, reset often

    def run(self, op: str, i: int, payload):
        """``("ok", value)`` or ``("error", message)``."""
        try:
            with deadline(self.timeout, _Timeout):
                return "ok", getattr(self, "_" + op)(i, payload)
        except _Timeout:
            return "error", f"timed out after {self.timeout:g} s"
        except Exception as err:  # noqa: BLE001 - what the environment's code raises goes back as text
            return "error", f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

    def _reset(self, i: int, row: dict):
        env = self.pool.pop() if self.pool else self.cls()
        self.envs[i] = env
        return env.reset(**row)

    def _env(self, i: int):
        if i not in self.envs:
            raise RuntimeError("the environment worker was restarted and lost this episode")
        return self.envs[i]

    def _call(self, i: int, payload: tuple[str, dict]) -> str:
        name, arguments = payload
        env = self._env(i)
        if name not in self.tools:
            known = ", ".join(sorted(self.tools)) or "none"
            raise LookupError(f"unknown tool {name!r}; the tools are {known}")
        problem = _arguments_problem(getattr(env, name), arguments)
        if problem:
            raise TypeError(f"{name}: {problem}")
        text = _as_text(getattr(env, name)(**arguments))
        if len(text) > self.max_chars:
            raise ValueError(f"the result of {name} has {len(text)} characters, over the cap of "
                             f"{self.max_chars} (rollout.tool_result_max_chars)")
        return text

    def _respond(self, i: int, text: str) -> str | None:
        env = self._env(i)
        reply = env.respond(text) if callable(getattr(env, "respond", None)) else None
        return None if reply is None else _as_text(reply)[:self.max_chars]

    def _finish(self, i: int, _) -> tuple[float | None, bytes | None]:
        """The episode's ``get_reward()`` (None without one; NaN if it fails) and a pickled copy of the
        instance for reward functions that read ``environments`` (None if it does not pickle)."""
        env = self.envs.pop(i, None)
        if env is None:
            return math.nan, None
        reward = None
        if callable(getattr(env, "get_reward", None)):
            try:
                reward = float(env.get_reward())
            except Exception:  # noqa: BLE001 - counted by the reward runner as a bad value
                reward = math.nan
        try:
            copy = pickle.dumps(env)
        except Exception:  # noqa: BLE001 - an instance holding a socket, a lock ...: no copy
            copy = None
        self.pool.append(env)
        return reward, copy


def _serve(conn, parent_end, slots: _Slots, memory_mb: int) -> None:
    from grouprl.rewards.runner import prepare_worker  # noqa: PLC0415 - in the child, after fork

    parent_end.close()
    prepare_worker(memory_mb)
    while True:
        try:
            op, i, payload = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(slots.run(op, i, payload))


class EnvHost:
    """The episode slots of an environment class; ``run(op, i, payload)`` → ``(status, value)``."""

    def __init__(self, cls: type, tools: list[str], *, timeout: float, max_chars: int, isolate: bool = True,
                 memory_mb: int = 0) -> None:
        self.slots = _Slots(cls, tools, timeout, max_chars)
        self.timeout, self.memory_mb = timeout, memory_mb
        self.process = None
        if isolate and "fork" in mp.get_all_start_methods():
            self._context = mp.get_context("fork")
            self._start()

    def _start(self) -> None:
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=_serve, daemon=True,
                                             args=(child, self.conn, self.slots, self.memory_mb))
        self.process.start()
        child.close()

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()
        self._start()

    def run(self, op: str, i: int, payload=None):
        if self.process is None:
            return self.slots.run(op, i, payload)
        try:
            self.conn.send((op, i, payload))
            if self.conn.poll(self.timeout + GRACE):
                return self.conn.recv()
            what = f"did not return within {self.timeout + GRACE:g} s (it blocks SIGALRM)"
        except (EOFError, OSError, BrokenPipeError):
            what = "died"
        self._restart()
        return "error", f"the environment worker {what}; it was replaced and this episode ended"

    def reset(self, i: int, row: dict):
        """Start episode ``i``; what ``reset`` returned. A ``reset`` that fails stops the run: no episode
        can start from it."""
        status, value = self.run("reset", i, row)
        if status != "ok":
            raise EnvError(f"environment {self.slots.cls.__name__}: reset(**row) failed ({value}) on the row "
                           f"with columns {', '.join(sorted(row))}; fix reset or the data")
        return value

    def finish(self, i: int) -> tuple[float | None, object | None]:
        """End episode ``i``: its ``get_reward()`` and a copy of the instance (or None)."""
        status, value = self.run("finish", i)
        if status != "ok":
            return math.nan, None
        reward, copy = value
        return reward, None if copy is None else pickle.loads(copy)  # from our own worker, not from disk

    def close(self) -> None:
        if self.process is not None:
            self.conn.close()
            self.process.kill()
            self.process.join()
            self.process = None
