"""One writer per run directory: a lock held for the whole run.

``hold_run_dir(run_dir)`` takes an exclusive, non-blocking lock on ``<run_dir>/.lock`` (which then holds the
owner's pid) before anything is written there, and keeps it until the run ends; a second ``grouprl train``
or ``compare`` arm on the same directory stops with one line naming the directory and that pid. Under
``torchrun`` rank 0 alone takes it: the other ranks write nothing.

The lock is a POSIX record lock (``fcntl.lockf``): the kernel drops it when its process dies, ``kill -9``
included, so ``--resume auto`` never finds a stale one. Unlike ``flock``, it is not shared with forked
children (the reward worker), which could outlive the trainer for a moment and keep the directory locked.
The lock file stays behind after a run (deleting it would let two processes lock two different files); a
directory this call created is removed again when the run never wrote anything into it (a failed start).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from grouprl.distributed import env_world
from grouprl.errors import RunDirError

LOCK_FILE = ".lock"
_held: set[Path] = set()  # directories this process holds: a nested hold (cmd_train, then train) is a no-op


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (created if need be) for the duration; ``RunDirError`` when another process holds it
    or it cannot be a directory."""
    key = Path(run_dir).resolve()
    if key in _held or env_world()[0] != 0:
        yield
        return
    created = _make_dir(Path(run_dir))
    try:
        fd = _lock(Path(run_dir))
    except BaseException:
        _remove_if_unused(Path(run_dir), created)
        raise
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        os.close(fd)  # releases the lock
        _remove_if_unused(Path(run_dir), created)


def _make_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` if it does not exist; True when this call created it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output.run_dir {run_dir}: is a file, not a directory; "
                          "choose another output.run_dir")
    try:
        run_dir.mkdir(parents=True)
        return True
    except FileExistsError:
        return False
    except OSError as err:  # a parent is a file, no permission, read-only file system ...
        raise RunDirError(f"output.run_dir {run_dir}: cannot create it ({err.strerror}); choose another "
                          "output.run_dir") from None


def _lock(run_dir: Path) -> int:
    """An open descriptor of ``run_dir/.lock`` holding its lock, with this pid written in the file."""
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunDirError(f"run directory {run_dir} is in use by pid {_holder(path)} (it holds {path}); "
                          "wait for that run to end or stop it, then continue with --resume auto") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(path: Path) -> str:
    """The pid in a held lock file ("unknown" while its owner has not written it yet)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().strip() or "unknown"
    return "unknown"


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """Remove a directory this process created when nothing but the lock file was written in it."""
    with contextlib.suppress(OSError):
        if created and {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(run_dir)
