"""Run reward functions outside the trainer's process, with a wall-clock timeout.

A single long-lived worker process is forked once the reward functions are resolved; each call sends the
function's index and its (picklable) arguments over a pipe. A call that exceeds the timeout has its worker
killed and replaced, and counts as a timeout for every sample of that call; a worker that dies counts as an
error. Either way the samples get the fallback value and training goes on. Forking (rather than spawning)
means user functions need not be importable or picklable, only their arguments and results.

Where ``fork`` is unavailable, or with ``isolate=False``, functions run in-process (no timeout).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import signal
import sys
from collections.abc import Callable


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent dies (even by kill -9)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe below still ends the loop
        pass


def _serve(conn, parent_end, fns: list[Callable]) -> None:
    _die_with_parent()
    # The fork copied the trainer's end of the pipe; close it, or the pipe never reports EOF when the
    # trainer dies and this worker would wait forever.
    parent_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    if "torch" in sys.modules:  # a forked child must not enter the parent's OpenMP pool (a reward model)
        sys.modules["torch"].set_num_threads(1)
    from grouprl.rewards import call_reward  # noqa: PLC0415 - imported in the child, after fork

    while True:
        try:
            index, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", call_reward(fns[index], *args)))
        except BaseException as err:  # noqa: BLE001 - everything a reward does wrong is reported, not fatal
            try:
                conn.send(("error", f"{type(err).__name__}: {err}"))
            except Exception:  # noqa: BLE001 - e.g. an unpicklable exception message
                conn.send(("error", type(err).__name__))


class RewardWorker:
    """Calls ``fns[index](*args)`` in a child process; ``call`` returns ``(status, payload)`` with status
    ``"ok"`` (payload: the returned list), ``"error"`` (payload: a message) or ``"timeout"``."""

    def __init__(self, fns: list[Callable], timeout: float) -> None:
        self.fns, self.timeout = fns, timeout
        self._context = mp.get_context("fork")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=_serve, args=(child, self.conn, self.fns), daemon=True)
        self.process.start()
        child.close()

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()
        self._start()

    def call(self, index: int, args: tuple) -> tuple[str, object]:
        try:
            self.conn.send((index, args))
        except (BrokenPipeError, OSError):
            self._restart()
            return "error", "the reward worker had died"
        if not self.conn.poll(self.timeout):
            self._restart()
            return "timeout", None
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self._restart()
            return "error", "the reward worker died (crashed, or killed by a resource limit)"

    def close(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.join()


def fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()
