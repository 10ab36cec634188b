"""Sandboxed execution of model-written Python, and a unit-test based reward.

``run_sandboxed(source)`` runs untrusted code in a *separate* interpreter (``python -I -S -B``); nothing
is ever executed in the trainer's own process. ``code_tests_reward`` extracts the code from each
completion, runs it together with the sample's assert-style tests, and returns the fraction that passed.

Threat model (be honest about what this is)
-------------------------------------------
The adversary is a policy model that, during RL, may emit arbitrary Python — by accident (infinite loops,
huge allocations, ``rm -rf``) or because it learned that tampering pays (faking test results, killing the
grader, reading answers). The defences are plain POSIX/Linux mechanisms from the standard library; this is
**not** a container, a VM, gVisor or seccomp. A kernel exploit, or a host that is itself misconfigured
(world-writable sensitive files, secrets readable by everyone), defeats it.

Every run gets: a fresh temporary directory as cwd and ``HOME`` (removed afterwards, also on timeout);
a clean environment (only ``PATH``, ``HOME``, ``LANG`` — no secrets inherited); stdin = ``/dev/null``;
stdout/stderr captured to anonymous files (only the first 64 KiB is kept — the trainer's memory cannot be
flooded); its own session/process group, SIGKILLed as a whole on the wall-clock timeout and after every
run; rlimits: CPU ≈ timeout, address space = ``memory_mb``, file size = ``max_file_mb``, processes =
``max_processes``, no core dumps, 64 file descriptors.

When the trainer runs as **root** (typical in containers), additionally:

* the child drops privileges to a *fresh, unused* uid/gid (a random one from a high range, no
  supplementary groups). Files the host user can read only as root (``/etc/shadow``, mode-600 secrets) are
  unreadable, only the sandbox dir and world-writable places are writable, and the child may not signal
  the trainer or any other process it does not own. Because the uid is unique to this run,
  ``RLIMIT_NPROC`` really caps the process count (fork bombs stop at ``max_processes``), and after the run
  every process of that uid is killed — also daemons that escaped the process group with ``setsid()``
  — and top-level files it left in ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are removed;
* the network is cut by unsharing the network namespace (``CLONE_NEWNET``) before dropping privileges: the
  child sees only a downed loopback device, so no connection to localhost services or the internet. If
  the kernel refuses (no CAP_SYS_ADMIN, seccomp), the run proceeds *without* network isolation and
  ``SandboxResult.network_isolated`` is ``False`` (see also ``sandbox_capabilities()``).

When the trainer is **not root**, the uid cannot be changed. The child runs as the trainer's user: it can
read and write everything that user can (e.g. the user's home and checkpoints), can signal the trainer
(``os.kill(os.getppid(), 9)`` works!), ``RLIMIT_NPROC`` counts all of that user's processes, and a
daemon that calls ``setsid()`` survives the process-group kill. Network isolation is still attempted via an
unprivileged user namespace (``CLONE_NEWUSER | CLONE_NEWNET``), which many kernels allow. For untrusted
training at scale, run the trainer as root inside a container, or put it in a container/VM on its own.

Test-result forgery. ``code_tests_reward`` decides "passed" from a per-run random nonce that the parent
hands to a trusted harness over an inherited pipe; the harness reads and closes it *before* the completion
runs and prints ``<nonce> PASS <i>`` after assert ``i`` succeeded. So printing a fake marker, exiting with 0
early (``sys.exit``/``os._exit``), raising ``SystemExit`` inside a test or swallowing output earns nothing.
The completion runs in the same interpreter as the harness, though: code that deliberately introspects that
interpreter (``gc``/frame walking to find the nonce, trace functions that jump over an ``assert``) could
still forge a pass, as can "semantic" hacks such as returning an object whose ``__eq__`` is always true.
The harness clears trace/profile hooks before each test, which raises the bar but does not close this.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["SandboxResult", "run_sandboxed", "code_tests_reward", "extract_code", "sandbox_capabilities",
           "REWARDS"]

MAX_OUTPUT = 64 * 1024
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_UID_BASE, _UID_SPAN = 1_000_000, 1_000_000   # fresh uids/gids for sandboxed runs (no passwd entry needed)
_LANG = "C.UTF-8"

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare          # resolved in the parent: the forked child must not import/load anything
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


@dataclass(frozen=True)
class SandboxResult:
    ok: bool                  # exited with status 0 and did not time out
    returncode: int | None    # negative = killed by that signal
    stdout: str               # first 64 KiB, decoded with errors="replace"
    stderr: str
    timed_out: bool
    network_isolated: bool = False
    privileges_dropped: bool = False


# ----------------------------------------------------------------------------------------------------------
# process setup

def _preexec(limits: list[tuple[int, int, int]], unshare_flags: int, uid: int | None) -> None:
    """Runs in the forked child before exec. Only pre-resolved callables: no imports, no allocations of note."""
    if unshare_flags and _unshare(unshare_flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.umask(0o077)


def _limits(timeout: float, memory_mb: int, max_file_mb: int, max_processes: int) -> list[tuple[int, int, int]]:
    cpu = max(1, math.ceil(timeout)) + 1
    mem = memory_mb * 1024 * 1024
    fsize = max_file_mb * 1024 * 1024
    return [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NPROC, max_processes, max_processes),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, 64, 64),
    ]


def _is_root() -> bool:
    return os.geteuid() == 0


def _try_spawn(python: str, unshare_flags: int, uid: int | None, cwd: str) -> bool:
    try:
        proc = subprocess.Popen(
            [python, "-I", "-S", "-B", "-c", "pass"], cwd=cwd, env=_env(cwd), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=functools.partial(_preexec, _limits(10, 512, 1, 32), unshare_flags, uid))
        return proc.wait(timeout=20) == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=1)
def sandbox_capabilities() -> dict:
    """Probe once what isolation this host allows: ``{"python", "root", "network_isolation", "unshare_flags"}``.

    As root the interpreter must be runnable by an unprivileged uid (a venv under ``/root`` is not), so
    candidates are tried in order: ``sys.executable``, the base interpreter, ``/usr/bin/python3``.
    """
    root = _is_root()
    flags = _CLONE_NEWNET if root else (_CLONE_NEWUSER | _CLONE_NEWNET)
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), os.path.realpath(sys.executable),
                  "/usr/bin/python3", "/usr/local/bin/python3"]
    seen: list[str] = []
    for c in candidates:
        if c and c not in seen and os.path.isfile(c):
            seen.append(c)
    with tempfile.TemporaryDirectory(dir="/tmp" if root else None) as d:
        uid = _UID_BASE + _UID_SPAN - 1 if root else None
        if root:
            os.chown(d, uid, uid)
        for python in seen:
            if _try_spawn(python, flags, uid, d):
                return {"python": python, "root": root, "network_isolation": True, "unshare_flags": flags}
        for python in seen:
            if _try_spawn(python, 0, uid, d):
                return {"python": python, "root": root, "network_isolation": False, "unshare_flags": 0}
    raise RuntimeError(f"no Python interpreter runnable in the sandbox (tried {seen}); "
                       "as root, the interpreter and its stdlib must be readable by other users")


def _env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": _LANG}


def _acquire_uid() -> int:
    with _uid_lock:
        for _ in range(1000):
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN - 1)
            if uid not in _uids_in_use and not _pids_of_uid(uid):
                _uids_in_use.add(uid)
                return uid
    raise RuntimeError("could not find a free sandbox uid")


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                        break   # already dead, waiting to be reaped: nothing left to kill
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(name))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` until none is left (also ones that escaped the group via setsid)."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _remove_files_of_uid(uid: int) -> None:
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def _read_head(f, limit: int = MAX_OUTPUT) -> str:
    f.seek(0)
    return f.read(limit).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------------------
# running

def _run(argv_tail: list[str], files: dict[str, str], *, timeout: float, memory_mb: int, max_file_mb: int,
         max_processes: int, secret: bytes | None = None) -> tuple[SandboxResult, object]:
    """Run ``python -I -S -B <argv_tail>`` in a fresh dir holding ``files``. Returns the result and the
    (still open, caller closes) stdout file. ``secret`` is written into a pipe whose read end is passed as fd
    and its number appended to argv."""
    caps = sandbox_capabilities()
    root = caps["root"]
    uid = _acquire_uid() if root else None
    workdir = tempfile.mkdtemp(prefix="grouprl-sbx-", dir="/tmp" if root else None)
    out = tempfile.TemporaryFile()  # noqa: SIM115 - returned open to the caller
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = None
    rfd = None
    timed_out = False
    try:
        for name, text in files.items():
            path = os.path.join(workdir, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            if uid is not None:
                os.chown(path, uid, uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        argv = [caps["python"], "-I", "-S", "-B", *argv_tail]
        pass_fds: tuple[int, ...] = ()
        if secret is not None:
            rfd, wfd = os.pipe()
            os.write(wfd, secret)   # small: fits the pipe buffer
            os.close(wfd)
            pass_fds = (rfd,)
            argv.append(str(rfd))
        proc = subprocess.Popen(
            argv, cwd=workdir, env=_env(workdir), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            close_fds=True, pass_fds=pass_fds, start_new_session=True,
            preexec_fn=functools.partial(_preexec, _limits(timeout, memory_mb, max_file_mb, max_processes),
                                         caps["unshare_flags"], uid))
        if rfd is not None:
            os.close(rfd)
            rfd = None
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        if rfd is not None:
            os.close(rfd)
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)   # the whole group, also background children
            proc.wait()
        if uid is not None:
            _kill_uid(uid)
            _remove_files_of_uid(uid)
            _release_uid(uid)
        shutil.rmtree(workdir, ignore_errors=True)
        err_text = _read_head(err)
        err.close()
    rc = proc.returncode if proc is not None else None
    result = SandboxResult(ok=(rc == 0 and not timed_out), returncode=rc, stdout=_read_head(out),
                           stderr=err_text, timed_out=timed_out, network_isolated=caps["network_isolation"],
                           privileges_dropped=uid is not None)
    return result, out


def run_sandboxed(source: str, *, timeout: float = 5.0, memory_mb: int = 512, max_file_mb: int = 16,
                  max_processes: int = 32) -> SandboxResult:
    """Run ``source`` as a script in a fresh, isolated interpreter (see the module docstring).

    >>> r = run_sandboxed("print(6 * 7)")
    >>> r.ok, r.stdout, r.timed_out
    (True, '42\\n', False)
    """
    result, out = _run(["main.py"], {"main.py": source}, timeout=timeout, memory_mb=memory_mb,
                       max_file_mb=max_file_mb, max_processes=max_processes)
    out.close()
    return result


# ----------------------------------------------------------------------------------------------------------
# reward

_HARNESS = r'''
import os, sys, json
def _main(_read=os.read, _write=os.write, _close=os.close, _dup=os.dup, _exec=exec, _compile=compile,
          _settrace=sys.settrace, _setprofile=sys.setprofile, _base=BaseException):
    fd = int(sys.argv[-1])
    tag = _read(fd, 256)
    _close(fd)
    out = _dup(1)
    with open("tests.json", encoding="utf-8") as f:
        tests = json.load(f)
    with open("solution.py", encoding="utf-8") as f:
        src = f.read()
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    del sys.argv[1:]
    try:
        _exec(_compile(src, "solution.py", "exec"), ns)
    except _base:
        pass
    for i, (counted, code) in enumerate(tests):
        _settrace(None)
        _setprofile(None)
        try:
            _exec(_compile(code, "test_%d" % i, "exec"), ns)
        except _base:
            continue
        if counted:
            _write(out, tag + b" PASS %d\n" % i)
_main()
'''

_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)\b[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(completion) -> str:
    """The last ```python fenced block, else the whole text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nand\\n```python\\ndef f():\\n    return 2\\n```")
    'def f():\\n    return 2\\n'
    >>> extract_code("x = 3")
    'x = 3'
    """
    if isinstance(completion, list):   # conversational format: the last message's content
        completion = completion[-1].get("content", "") if completion else ""
    if not isinstance(completion, str):
        return ""
    blocks = _FENCE_RE.findall(completion)
    return blocks[-1] if blocks else completion


def _split_tests(tests) -> list[tuple[bool, str]]:
    """A list → one counted test per element. One string → each top-level ``assert`` is a counted test and
    other top-level statements (imports, helpers) are uncounted setup, run in order."""
    if tests is None:
        return []
    if isinstance(tests, str):
        import ast
        try:
            tree = ast.parse(tests)
        except SyntaxError:
            return [(True, tests)]
        lines = tests.splitlines(keepends=True)
        out = []
        for node in tree.body:
            seg = "".join(lines[node.lineno - 1:node.end_lineno])
            seg = ast.get_source_segment(tests, node) or seg
            out.append((isinstance(node, ast.Assert), seg))
        return out
    return [(True, str(t)) for t in tests if str(t).strip()]


def _score_one(completion, tests, timeout: float, memory_mb: int) -> float:
    code = extract_code(completion)
    cases = _split_tests(tests)
    n = sum(1 for counted, _ in cases if counted)
    if n == 0 or not code.strip():
        return 0.0
    nonce = secrets.token_hex(16).encode()
    try:
        _, out = _run(["harness.py"], {"harness.py": _HARNESS, "solution.py": code,
                                       "tests.json": json.dumps(cases)},
                      timeout=timeout, memory_mb=memory_mb, max_file_mb=16, max_processes=32, secret=nonce)
    except (OSError, subprocess.SubprocessError):
        return 0.0
    passed: set[int] = set()
    prefix = nonce + b" PASS "
    try:
        out.seek(0)
        for line in out:   # whole stdout (bounded by RLIMIT_FSIZE), not just the kept head
            if line.startswith(prefix):
                tail = line[len(prefix):].strip()
                if tail.isdigit():
                    passed.add(int(tail))
    finally:
        out.close()
    valid = {i for i, (counted, _) in enumerate(cases) if counted}
    return len(passed & valid) / n


def code_tests_reward(prompts, completions, completion_ids=None, *, tests, timeout: float = 5.0,
                      memory_mb: int = 512, max_workers: int | None = None, **kw) -> list[float]:
    """Fraction of the sample's tests (assert statements) that pass against the completion's code.

    ``tests`` is the dataset column: per sample a list of assert strings, or one string of code. All tests
    of a completion run in one sandboxed process (a timeout keeps the credit of the tests already passed);
    completions run in parallel, ``max_workers`` at a time (default: CPU count).

    >>> code_tests_reward(["p", "p"], ["```python\\ndef add(a, b):\\n    return a + b\\n```", "def add(a, b): return 0"],
    ...                   tests=[["assert add(1, 2) == 3", "assert add(0, 0) == 0"]] * 2)
    [1.0, 0.5]
    """
    if isinstance(tests, (str, bytes)) or not isinstance(tests, Sequence):
        tests = [tests] * len(completions)
    workers = max(1, min(len(completions), max_workers or os.cpu_count() or 1))
    jobs = list(zip(completions, tests))
    if workers == 1:
        return [_score_one(c, t, timeout, memory_mb) for c, t in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda ct: _score_one(ct[0], ct[1], timeout, memory_mb), jobs))


REWARDS = {"code_tests": code_tests_reward}
