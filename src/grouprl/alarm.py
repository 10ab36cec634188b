"""A SIGALRM deadline for code that runs in a process's main thread: a reward sample (``rewards/answers.py``)
or an environment's tool call (``env/host.py``). Signals reach only the main thread, and a second timer
would clobber the first, so elsewhere it sets no limit and the caller's other guard (a worker that is killed)
holds."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deadline(seconds: float, error: type[BaseException]) -> Iterator[None]:
    """Raise ``error()`` in the main thread after ``seconds``; no limit off the main thread, without
    ``setitimer``, or while another ``ITIMER_REAL`` runs."""
    usable = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return

    def ring(signum, frame):
        raise error

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
