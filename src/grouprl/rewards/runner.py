"""Run reward functions outside the trainer's process, with a wall-clock timeout and a memory limit.

A single long-lived worker process is forked once the reward functions are resolved; each call sends the
function's index and its (picklable) arguments over a pipe and gets back plain data: the floats, and what the
function logged through TRL's ``log_metric`` / ``log_extra`` hooks, which record into lists in the worker
(they cannot call back into the trainer). A call that exceeds
the timeout has its worker killed and replaced, and counts as a timeout for every sample of that call; a
worker that dies (``os._exit``, a segfault, the OOM killer) is replaced too and its call counts as an error.
Either way the samples get the fallback value and training goes on. Forking (rather than spawning) means
user functions need not be importable or picklable, only their arguments.

Memory. The worker limits its own address space (the soft ``RLIMIT_AS``) to what it maps when it starts plus
``memory_mb``. What it maps at the start is everything the fork copied from the trainer: with torch and the
tiny default model on a CPU that is about 1 GiB of address space, and CUDA's reservations can make it tens of
GiB, which is why the budget is counted from there and not from zero. An allocation past the limit fails
inside the reward with ``MemoryError`` (torch: ``RuntimeError``), which is an error of that call; the worker
stays up. Address space is not resident memory: the budget also pays for reservations that use no RAM —
each thread's stack (8 MiB), and glibc's per-thread malloc arenas (64 MiB each), which the worker therefore
caps at 4. Should the machine run out of memory all the same, the worker has asked to be the kernel's first
OOM victim (``oom_score_adj`` 1000): it dies, not the trainer, and is replaced. ``memory_mb=0``: no limit.
The limit is a soft one, so reward code that means to may raise it; it guards against accidents.

Where ``fork`` is unavailable, or with ``isolate=False``, functions run in-process (no timeout, no limit).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import resource
import signal
import sys
from collections.abc import Callable

_M_ARENA_MAX = -8  # glibc's mallopt() parameter for the number of malloc arenas


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent dies (even by kill -9)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe below still ends the loop
        pass


def _vm_size() -> int | None:
    """Bytes of address space this process maps now (Linux ``VmSize``); None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _limit_memory(budget_mb: int) -> None:
    """Soft ``RLIMIT_AS`` = what this process maps now + ``budget_mb``, never above a limit already set."""
    mapped = _vm_size()
    if budget_mb <= 0 or mapped is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: no arenas to cap
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 4)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + budget_mb * 1024 * 1024
    limit = min([limit] + [v for v in (soft, hard) if v != resource.RLIM_INFINITY])
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _volunteer_for_oom_kill() -> None:
    """Linux: if memory runs out, the kernel's OOM killer picks this process before the trainer."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("1000")


def prepare_worker(memory_mb: int) -> None:
    """What a forked worker (this one, the environments' in ``env/host.py``) does first: die with the
    trainer, leave stop signals to it, stay out of its thread pool, and bound its own memory."""
    _die_with_parent()
    # Stop signals are the trainer's to handle: Ctrl-C, torchrun and job schedulers signal the whole process
    # group, and the trainer needs this worker to finish its step and checkpoint before it closes it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if "torch" in sys.modules:  # a forked child must not enter the parent's OpenMP pool (a reward model)
        sys.modules["torch"].set_num_threads(1)
    _volunteer_for_oom_kill()
    _limit_memory(memory_mb)


def _serve(conn, parent_end, fns: list[Callable], memory_mb: int) -> None:
    # The fork copied the trainer's end of the pipe; close it, or the pipe never reports EOF when the
    # trainer dies and this worker would wait forever.
    parent_end.close()
    prepare_worker(memory_mb)
    from grouprl.rewards import BadReturn, call_reward, describe  # noqa: PLC0415 - in the child, after fork

    while True:
        try:
            index, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", call_reward(fns[index], *args)))
        except BadReturn as err:
            conn.send(("bad", str(err)))
        except BaseException as err:  # noqa: BLE001 - everything a reward does wrong is reported, not fatal
            try:
                conn.send(("error", describe(err)))
            except Exception:  # noqa: BLE001 - e.g. an unpicklable exception message
                conn.send(("error", type(err).__name__))


class RewardWorker:
    """Calls ``fns[index](*args)`` in a child process; ``call`` returns ``(status, payload)`` with status
    ``"ok"`` (payload: a ``Returned``), ``"bad"`` (a return that is not one value per completion; payload:
    what it was), ``"error"`` (payload: a message) or ``"timeout"``."""

    def __init__(self, fns: list[Callable], timeout: float, memory_mb: int) -> None:
        self.fns, self.timeout, self.memory_mb = fns, timeout, memory_mb
        self._context = mp.get_context("fork")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=_serve, args=(child, self.conn, self.fns, self.memory_mb),
                                             daemon=True)
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
            return "error", self._died()

    def _died(self) -> str:
        """Replace a worker that died during a call; what killed it, as far as its exit status tells."""
        self.process.join(5)
        code = self.process.exitcode
        self._restart()
        return f"the reward worker died ({_how_it_ended(code)}); it was replaced"

    def close(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.join()


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"killed by {name}" + (", e.g. by the OOM killer" if -exitcode == signal.SIGKILL else "")


def fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()
