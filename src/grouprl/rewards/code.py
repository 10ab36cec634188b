"""Sandboxed execution of model-written Python, and a unit-test based reward.

``run_sandboxed(source)`` runs untrusted code in a *separate* interpreter (``python -I -S -B``); nothing
is ever executed in the trainer's own process. ``code_tests_reward`` extracts the code from each
completion, runs the sample's assert-style tests against it from a second interpreter that the code cannot
reach, and returns the fraction that passed.

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
flooded), or discarded by ``code_tests_reward``; its own session/process group, SIGKILLed as a whole on the
wall-clock timeout and after every run; rlimits: CPU ≈ timeout, address space = ``memory_mb``, file size =
``max_file_mb``, processes = ``max_processes``, no core dumps, 64 file descriptors.

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

Hidden tests and forged passes (``code_tests_reward``)
-----------------------------------------------------
The completion must not be able to read the tests it is judged by, nor to claim passes it did not earn. So
the tests and the completion never share a process. Each completion gets two sandboxed interpreters, each
with everything above (as root: each its own fresh uid):

* the **judge** marks itself non-dumpable (``PR_SET_DUMPABLE`` 0: processes of the same uid cannot read its
  memory or open its descriptors through ``/proc``), receives the tests through a pipe (no file anywhere),
  and only then tells the solution runner to start the completion. It runs the tests in its own namespace,
  where each function the completion defines is a proxy; it writes ``PASS <i>`` for each passing assert to a
  file descriptor only it holds;
* the **solution runner** executes the completion, then answers the proxies' calls: the function's name and
  its arguments come in, the return value (or the name of the exception it raised) goes out, both as plain
  data (JSON of numbers, strings, bools, None, lists, tuples, dicts, sets, bytes, complex).

A second interpreter costs time: about 90 ms per completion instead of 30 ms on an idle 2-core machine
(completions are scored ``max_workers`` at a time).

The completion therefore sees the arguments of each call, in order, and nothing else of the tests. Closed by
this: reading the tests from disk or from inherited descriptors (there is none with them), finding them in
its own memory by walking frames, ``gc.get_objects()``, ``sys.modules`` or a caller's ``co_consts`` (the test
code is not in its process; ``add`` called by ``assert add(1, 2) == 3`` sees ``(1, 2)`` only), reading the
judge's ``/proc/<pid>/mem``, ``fd`` or ``environ`` (another uid; not dumpable), forging results (printing
markers, ``sys.exit(0)``, ``os._exit``, killing the judge, trace functions: the verdicts are the judge's),
objects whose ``__eq__`` is always true (only plain data crosses, and the comparison runs in the judge), and
shadowing a built-in the tests use (a completion's ``abs`` is never what ``abs(f(x) - 1.5) < 1e-6`` calls).

Not closed, and what to do about it:

* anything readable on the host filesystem by an arbitrary uid: a world-readable copy of the dataset, or of
  a test suite that holds the same asserts, can be found and parsed. Keep datasets and caches readable by
  their owner only (``/root`` is usually 0700);
* as **non-root** the solution runs as the trainer's user: it can read that user's files, the dataset
  included, and, unless ``kernel.yama.ptrace_scope`` forbids it, the memory of the reward worker that holds
  the tests. Hidden tests need root (e.g. the trainer in a container);
* the tests' *inputs* are visible by design, and asserts of truthiness only (``assert is_prime(7)``) pass
  with a constant answer of the right truth value: mix positive and negative cases, compare with ``==``;
* a test that hands an expected value to the completion's own code (``assert same(f(1), 3)`` with ``same``
  from the completion) shows it that value, as it would in a single process;
* kernel exploits, and anything the isolation above does not cover.

What tests can do: call the completion's top-level functions with plain-data arguments and use plain-data
results, and use modules the completion imported (the judge imports its own copy of the same standard-library
module). What fails (that test scores 0): passing callables or objects to the completion, results that are
not plain data (instances of its classes, generators, iterators), reading the completion's non-callable
globals, and expecting it to modify an argument in place.
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

from grouprl.messages import completion_text

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
    """Runs in the forked child before exec. Only pre-resolved callables: no imports, no allocations of
    note."""
    if unshare_flags and _unshare(unshare_flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.umask(0o077)


def _limits(timeout: float, memory_mb: int, max_file_mb: int,
            max_processes: int) -> list[tuple[int, int, int]]:
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
    """Probe once what isolation this host allows:
    ``{"python", "root", "network_isolation", "unshare_flags"}``.

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

class _Box:
    """Where one sandboxed process runs: a fresh uid (as root), a private directory holding ``files`` as its
    cwd and ``HOME``, and ``limits``. Leaving the ``with`` block SIGKILLs the process's group and (as root)
    every process of the uid, and removes the directory and what the uid left in the shared temp dirs."""

    def __init__(self, files: dict[str, str], limits: list[tuple[int, int, int]]) -> None:
        self.caps, self.limits, self.proc = sandbox_capabilities(), limits, None
        self.uid = _acquire_uid() if self.caps["root"] else None
        self.workdir = tempfile.mkdtemp(prefix="grouprl-sbx-", dir="/tmp" if self.caps["root"] else None)
        try:
            for name, text in files.items():
                path = os.path.join(self.workdir, name)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                if self.uid is not None:
                    os.chown(path, self.uid, self.uid)
            if self.uid is not None:
                os.chown(self.workdir, self.uid, self.uid)
            os.chmod(self.workdir, 0o700)
        except BaseException:
            self.__exit__()
            raise

    def start(self, argv_tail: list[str], *, stdout, stderr,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        """``python -I -S -B <argv_tail>`` in the box; of the caller's descriptors only ``pass_fds`` go
        along."""
        self.proc = subprocess.Popen(
            [self.caps["python"], "-I", "-S", "-B", *argv_tail], cwd=self.workdir, env=_env(self.workdir),
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, close_fds=True, pass_fds=pass_fds,
            start_new_session=True,
            preexec_fn=functools.partial(_preexec, self.limits, self.caps["unshare_flags"], self.uid))
        return self.proc

    def __enter__(self) -> _Box:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)   # the whole group, also background children
            self.proc.wait()
        if self.uid is not None:
            _kill_uid(self.uid)
            _remove_files_of_uid(self.uid)
            _release_uid(self.uid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_sandboxed(source: str, *, timeout: float = 5.0, memory_mb: int = 512, max_file_mb: int = 16,
                  max_processes: int = 32) -> SandboxResult:
    """Run ``source`` as a script in a fresh, isolated interpreter (see the module docstring).

    >>> r = run_sandboxed("print(6 * 7)")
    >>> r.ok, r.stdout, r.timed_out
    (True, '42\\n', False)
    """
    limits = _limits(timeout, memory_mb, max_file_mb, max_processes)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with _Box({"main.py": source}, limits) as box:
            proc = box.start(["main.py"], stdout=out, stderr=err)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
        return SandboxResult(ok=(proc.returncode == 0 and not timed_out), returncode=proc.returncode,
                             stdout=_read_head(out), stderr=_read_head(err), timed_out=timed_out,
                             network_isolated=box.caps["network_isolation"],
                             privileges_dropped=box.uid is not None)


# ----------------------------------------------------------------------------------------------------------
# reward

# Shared by the judge and the solution runner: plain data as one JSON line. Lists, numbers, strings, bools
# and None are themselves; tuples, sets, frozensets, dicts (any hashable keys), bytes and complex numbers are
# tagged. Decoding builds only built-in types, whatever the line came from.
_CODEC = r'''
import json

_TAGS = {"t": tuple, "s": set, "f": frozenset}


def _encode(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if isinstance(x, dict):
        return {"d": [[_encode(k), _encode(v)] for k, v in x.items()]}
    for tag, kind in _TAGS.items():
        if isinstance(x, kind):
            return {tag: [_encode(v) for v in x]}
    if isinstance(x, (bytes, bytearray)):
        return {"b": bytes(x).hex()}
    if isinstance(x, complex):
        return {"c": [x.real, x.imag]}
    raise TypeError("a %s is not plain data" % type(x).__name__)


def _decode(x):
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    (tag, v), = x.items()
    if tag in _TAGS:
        return _TAGS[tag](_decode(i) for i in v)
    if tag == "d":
        return {_decode(k): _decode(w) for k, w in v}
    if tag == "b":
        return bytes.fromhex(v)
    if tag == "c":
        return complex(*v)
    raise ValueError("unknown tag")


def _line(message):
    return json.dumps(_encode(message)).encode() + b"\n"


def _parse(line):
    return _decode(json.loads(line))
'''

# Waits for the judge's "start", runs the completion, then answers the judge's calls of its functions:
# [name, args, kwargs] in, ["ok", result] or ["raised", exception name] out. First it names its callables and
# the modules it imported (the tests may use those without importing them). Once the completion has run,
# nothing in this process is trusted.
_SOLUTION_RUNNER = _CODEC + r'''
import os, sys


def _main():
    calls, answers = os.fdopen(int(sys.argv[1]), "rb"), os.fdopen(int(sys.argv[2]), "wb")
    del sys.argv[1:]
    with open("solution.py", encoding="utf-8") as f:
        source = f.read()
    if calls.readline() != b"start\n":   # the judge holds the tests and is sealed: the completion may run
        return
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "solution.py", "exec"), ns)
    except BaseException:
        pass
    names = list(ns.items())
    answers.write(_line([[name for name, value in names if callable(value)],
                         {name: value.__name__ for name, value in names if type(value) is type(sys)}]))
    answers.flush()
    for call in calls:
        try:
            name, args, kwargs = _parse(call)
            answer = _line(["ok", ns[name](*args, **kwargs)])
        except BaseException as err:
            answer = _line(["raised", type(err).__name__])
        answers.write(answer)
        answers.flush()


_main()
'''

# Seals itself, reads the tests from a pipe (never a file), lets the solution runner start the completion,
# and runs the tests, each name the completion defines bound to a proxy that calls it in the runner's
# process. Writes "PASS <i>" to its verdict descriptor.
_JUDGE = _CODEC + r'''
import builtins, importlib, os, sys

_MAX_LINE = 1 << 24   # longer answers are cut, so they fail to parse


def _not_dumpable():
    # then processes of the same uid can neither read this one's memory nor open its descriptors
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        pass


class _Remote:
    def __init__(self, name, calls, answers):
        self._name, self._calls, self._answers = name, calls, answers

    def __call__(self, *args, **kwargs):
        self._calls.write(_line([self._name, list(args), kwargs]))
        self._calls.flush()
        status, value = _parse(self._answers.readline(_MAX_LINE))
        if status == "ok":
            return value
        kind = getattr(builtins, value, None) if isinstance(value, str) else None
        if isinstance(kind, type) and issubclass(kind, Exception):
            raise kind()
        raise RuntimeError("the solution raised something else")


def _bindable(name):
    # never a built-in: a solution's own abs() must not see what the tests pass to abs()
    return isinstance(name, str) and name.isidentifier() and not name.startswith("__") \
        and not hasattr(builtins, name)


def _main():
    _not_dumpable()
    tests, calls, answers, verdicts = (int(a) for a in sys.argv[1:5])
    del sys.argv[1:]
    with os.fdopen(tests, "rb") as f:
        cases = json.loads(f.read())
    calls, answers = os.fdopen(calls, "wb"), os.fdopen(answers, "rb")
    calls.write(b"start\n")
    calls.flush()
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        functions, modules = _parse(answers.readline(_MAX_LINE))
        for name in functions:
            if _bindable(name):
                ns[name] = _Remote(name, calls, answers)
        for name, module in modules.items():
            if _bindable(name) and isinstance(module, str):
                try:
                    ns[name] = importlib.import_module(module)   # our own copy: only the standard library
                except Exception:
                    pass
    except Exception:
        pass   # the solution died or lied before naming its functions: the tests fail with NameError
    for i, (counted, code) in enumerate(cases):
        try:
            exec(compile(code, "test_%d" % i, "exec"), ns)
        except BaseException:
            continue
        if counted:
            os.write(verdicts, b"PASS %d\n" % i)


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
    text = completion_text(completion)  # a conversational completion: its last message's content
    if text is None:
        return ""
    blocks = _FENCE_RE.findall(text)
    return blocks[-1] if blocks else text


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
    counted = {i for i, (is_test, _) in enumerate(cases) if is_test}
    if not counted or not code.strip():
        return 0.0
    try:
        passed = _judge(code, cases, timeout, memory_mb)
    except (OSError, subprocess.SubprocessError):
        return 0.0
    return len(passed & counted) / len(counted)


def _judge(code: str, cases: list[tuple[bool, str]], timeout: float, memory_mb: int) -> set[int]:
    """Indices of the cases that passed: the judge runs them against ``code``, which the solution runner runs.

    Both interpreters start at once; the runner executes the code only when the judge, sealed and holding
    the tests (through a pipe), says so. Both share one wall-clock ``timeout``; the passes written before it
    ran out count.
    """
    deadline = time.monotonic() + timeout
    limits = _limits(timeout, memory_mb, max_file_mb=16, max_processes=32)
    with tempfile.TemporaryFile() as verdicts:
        with (_Pipes() as pipes, _Box({"judge.py": _JUDGE}, limits) as judge_box,
              _Box({"runner.py": _SOLUTION_RUNNER, "solution.py": code}, limits) as solution_box):
            tests_r, tests_w = pipes.new()
            calls_r, calls_w = pipes.new()
            answers_r, answers_w = pipes.new()
            judge_fds = (tests_r, calls_w, answers_r, verdicts.fileno())
            judge = judge_box.start(["judge.py", *map(str, judge_fds)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, pass_fds=judge_fds)
            solution_box.start(["runner.py", str(calls_r), str(answers_w)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, pass_fds=(calls_r, answers_w))
            pipes.close(tests_r, calls_w, answers_r, calls_r, answers_w)
            if pipes.deliver(tests_w, json.dumps(cases).encode()):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    judge.wait(timeout=max(0.0, deadline - time.monotonic()))
        verdicts.seek(0)   # both are dead now: nothing writes any more
        return {int(line.split()[1]) for line in verdicts if re.fullmatch(rb"PASS \d+\n", line)}


class _Pipes:
    """The parent's ends of one run's pipes; those still open are closed on leaving ``with``."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def new(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.open.update((r, w))
        return r, w

    def close(self, *fds: int) -> None:
        for fd in fds:
            self.open.discard(fd)
            os.close(fd)

    def deliver(self, fd: int, data: bytes) -> bool:
        """Write all of ``data`` and close ``fd``; False if the reader is gone."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            return False
        self.close(fd)
        return True

    def __enter__(self) -> _Pipes:
        return self

    def __exit__(self, *exc) -> None:
        self.close(*list(self.open))


def code_tests_reward(prompts, completions, completion_ids=None, *, tests, timeout: float = 5.0,
                      memory_mb: int = 512, max_workers: int | None = None, **kw) -> list[float]:
    """Fraction of the sample's tests (assert statements) that pass against the completion's code.

    ``tests`` is the dataset column: per sample a list of assert strings, or one string of code. All tests
    of a completion run against one run of its code, from a judge process that the code cannot reach (see
    the module docstring; a timeout keeps the credit of the tests already passed); completions run in
    parallel, ``max_workers`` at a time (default: CPU count).

    >>> code_tests_reward(["p", "p"],
    ...                   ["```python\\ndef add(a, b):\\n    return a + b\\n```", "def add(a, b): return 0"],
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
