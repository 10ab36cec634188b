"""The code sandbox and the code_tests reward: correctness, and hostile completions that must earn 0.0 and
leave the host untouched. The host-harm tests need root (privilege drop); as non-root they are skipped,
since e.g. ``os.kill(-1, 9)`` would then really kill the test runner.

Nothing here depends on how fast the machine is, other than through generous bounds (``within``): the suite
must pass beside other work on a loaded machine. Process counts are of the sandbox's own uids only."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from grouprl.rewards import code as sandbox
from grouprl.rewards.code import REWARDS, code_tests_reward, extract_code, run_sandboxed, sandbox_capabilities

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="host isolation (uid drop) requires running as root")

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
GOOD = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n"


def score(code: str, tests=None, timeout: float = 3.0) -> float:
    return code_tests_reward(["p"], [code], tests=[tests if tests is not None else ADD_TESTS],
                             timeout=timeout)[0]


def within(timeout: float) -> float:
    """A bound on the wall-clock time of a run with this timeout that a loaded machine still meets."""
    return 4 * timeout + 5


@pytest.fixture
def sandbox_uids(monkeypatch) -> list[int]:
    """The uids the sandbox hands out during the test, one per sandboxed process (as root)."""
    uids: list[int] = []
    acquire = sandbox._acquire_uid

    def recorded() -> int:
        uids.append(acquire())
        return uids[-1]

    monkeypatch.setattr(sandbox, "_acquire_uid", recorded)
    return uids


def live_processes_of(uids: list[int]) -> list[int]:
    """Processes anywhere on the machine that run as one of ``uids`` and are not zombies. Only this test's
    sandboxes use these uids, so other work on the machine does not count."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = dict(line.split(":", 1)
                          for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if int(status["Uid"].split()[0]) in uids and status["State"].split()[0] not in ("Z", "X"):
            found.append(int(pid))
    return found


def gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


# ------------------------------------------------------------------------------------------------ correctness

def test_correct_wrong_syntax_empty_partial():
    completions = [GOOD, "def add(a, b):\n    return a - b", "def add(a, b) return a + b", "", "   \n",
                   "def add(a, b):\n    return 3 if a == 1 else 0", "no code here, just words."]
    got = code_tests_reward(["p"] * len(completions), completions, tests=[ADD_TESTS] * len(completions))
    assert got == [1.0, 0.0, 0.0, 0.0, 0.0, pytest.approx(2 / 3), 0.0]
    assert REWARDS == {"code_tests": code_tests_reward}


def test_single_string_tests_and_setup_statements():
    tests = ("import math\nassert add(1, 2) == 3\nassert math.isclose(add(0.1, 0.2), 0.3)\n"
             "assert add(1, 1) == 3\n")
    assert score(GOOD, tests) == pytest.approx(2 / 3)


def test_last_python_block_is_used():
    text = ("```python\ndef add(a, b):\n    return 0\n```\n"
            "fixed:\n```python\ndef add(a, b):\n    return a + b\n```")
    assert extract_code(text).strip().endswith("return a + b")
    assert score(text) == 1.0


def test_timeout_keeps_credit_for_tests_already_passed():
    code = "def add(a, b):\n    if a == 10:\n        while True: pass\n    return a + b"
    t0 = time.monotonic()
    assert score(code, timeout=3.0) == pytest.approx(2 / 3)
    assert time.monotonic() - t0 < within(3.0)


def test_run_sandboxed_basics():
    r = run_sandboxed("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (r.ok, r.returncode, r.stdout, r.stderr, r.timed_out) == (False, 3, "out\n", "err\n", False)
    r = run_sandboxed("print('x' * 200_000)")
    assert r.ok and len(r.stdout) == 64 * 1024


# ------------------------------------------------------------------------------------------ forgery attempts

def test_exit_zero_before_tests_does_not_pass():
    assert score("import sys\nsys.exit(0)") == 0.0
    assert score("import os\nos._exit(0)") == 0.0
    assert score("def add(a, b):\n    raise SystemExit(0)") == 0.0


def test_fake_markers_and_fd_snooping_do_not_pass():
    code = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try: print('stolen', os.read(fd, 256))\n"
        "    except OSError: pass\n"
        "for i in range(10):\n"
        "    print(f'PASS {i}'); print(f'ok {i}'); os.write(1, b'00 PASS %d\\n' % i)\n"
        "os._exit(0)\n")
    assert score(code) == 0.0


def test_plain_data_crosses_between_the_tests_and_the_solution():
    code = ("import math\n"
            "def f(x):\n"
            "    return (x, [x], {x: {x}}, b'b', 1j, None, True, frozenset([x]), math.inf, 'é\\n')\n"
            "def g(x):\n    raise KeyError(x)\n"
            "def h(*args, **kwargs):\n    return [args, kwargs]\n")
    tests = ["assert f(1) == (1, [1], {1: {1}}, b'b', 1j, None, True, frozenset([1]), float('inf'), 'é\\n')",
             "assert f(1)[1] != (1,) and type(f(1)[2]) is dict",    # a list is not a tuple
             "try:\n    g(1)\nexcept KeyError:\n    pass\nelse:\n    raise AssertionError",
             "assert h(1, (2,), k=[3]) == [(1, (2,)), {'k': [3]}]",
             "assert math.isclose(f(2.0)[0], 2.0)"]      # math: imported by the solution, not by the test
    assert score(code, tests) == 1.0


def test_what_cannot_cross_fails_that_test_only():
    code = ("def gen(n):\n    yield from range(n)\n"
            "def apply(fn, x):\n    return fn(x)\n"
            "class Point:\n    pass\n"
            "LIMIT = 3\n"
            "def add(a, b):\n    return a + b\n")
    tests = ["assert list(gen(2)) == [0, 1]", "assert apply(lambda x: x, 1) == 1",
             "assert Point() is not None", "assert LIMIT == 3", "assert add(1, 2) == 3"]
    assert score(code, tests) == pytest.approx(1 / 5)


# ---------------------------------------------------------------------------------------------- hidden tests

SNOOPER = (pathlib.Path(__file__).parent / "snooping_solution.py").read_text()
HIDDEN = ["assert add(17, 25) == 42", "assert add(-8, 3) == -5", "assert add(100, 23) == 123"]
FOUND_ALL = {(17, 25): 42, (-8, 3): -5, (100, 23): 123}


# Runs the snooper in one process with the tests, the way the harness before the judge did, and reports what
# each of its searches finds there. argv: the snooper's source, the tests (JSON), the pid of a process that
# holds them in its memory. Run in a fresh interpreter: gc in this one, with torch loaded, is slow to walk.
CONTROL = """
import json, os, sys
source, tests, holder = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
ns = {"__name__": "__main__"}
exec(compile(source, "solution.py", "exec"), ns)   # its import-time search walks the frames of this script
found, report = ns["FOUND"], {}
report["frames, at import"] = len(found)
passed = 0
for test in tests:
    exec(compile(test, "test", "exec"), ns)   # raises AssertionError where add answered wrong
    passed += 1
report["asserts passed"] = passed
for name, search in [("gc", ns["from_memory"]), ("files", ns["from_files"]),
                     ("another process's memory", lambda: ns["read_memory"](holder))]:
    found.clear()
    search()
    report[name] = len(found)
found.clear()
# no search at all: only the caller-frame trick, from the asserting code's constants
ns["snoop"] = lambda: None
for test in tests:
    exec(compile(test, "test", "exec"), ns)
report["asserts passed by the caller-frame trick"] = len(tests)
print(json.dumps(report))
"""


def test_the_snooper_finds_the_tests_wherever_it_can_reach_them(tmp_path):
    """The control for the test below: with the tests in its process (as the harness before the judge had
    them), beside it on disk, or in memory it may read, the snooper finds every one; so its 0 in the sandbox
    is the sandbox's doing."""
    (tmp_path / "tests.json").write_text(json.dumps(HIDDEN))   # where the harness before the judge put them
    holder = subprocess.Popen([sys.executable, "-c", f"tests = {HIDDEN!r}\nprint(flush=True)\ninput()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()   # its list of tests exists now
        out = subprocess.run([sys.executable, "-c", CONTROL, SNOOPER, json.dumps(HIDDEN), str(holder.pid)],
                             cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)}, capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(out) == {"frames, at import": 3, "asserts passed": 3, "gc": 3, "files": 3,
                               "another process's memory": 3, "asserts passed by the caller-frame trick": 3}


@needs_root
def test_a_solution_that_snoops_for_the_tests_finds_nothing_and_scores_zero():
    """The acceptance test of 'tests the solution cannot see': the snooper searches its cwd and the dirs
    above, HOME, its frames and callers' constants, gc, sys.modules, its descriptors, and every /proc entry
    and process memory it can open. It passes only alive(), which proves the search ran to its end."""
    assert score(SNOOPER, [*HIDDEN, "assert alive() == 'snooped'"], timeout=20.0) == pytest.approx(1 / 4)


@needs_root
def test_a_world_readable_copy_of_the_tests_is_not_hidden():
    """The documented limit, and the control of the test above inside the sandbox: a copy of the tests that
    any uid may read, here in /tmp, is found."""
    leak = pathlib.Path("/tmp/grouprl_sbx_leaked_tests.txt")
    leak.write_text("\n".join(HIDDEN))
    leak.chmod(0o644)
    try:
        assert score(SNOOPER, [*HIDDEN, "assert alive() == 'snooped'"], timeout=20.0) == 1.0
    finally:
        leak.unlink()


ALWAYS_EQUAL = {
    "object": "class Any:\n    def __eq__(self, other): return True\n    __hash__ = None\n"
              "def add(a, b):\n    return Any()",
    "int_subclass": "class Any(int):\n    def __eq__(self, other): return True\n    __hash__ = int.__hash__\n"
                    "def add(a, b):\n    return Any(12345)",
    "str_subclass": "class Any(str):\n    def __eq__(self, other): return True\n    __hash__ = str.__hash__\n"
                    "def add(a, b):\n    return Any('')",
    "in_a_list": "class Any:\n    def __eq__(self, other): return True\ndef add(a, b):\n    return [Any()]",
}


@pytest.mark.parametrize("name", sorted(ALWAYS_EQUAL))
def test_objects_equal_to_everything_do_not_pass(name):
    assert score(ALWAYS_EQUAL[name]) == 0.0
    assert score(ALWAYS_EQUAL[name], ["assert add(1, 2) == [3]"]) == 0.0


def test_a_solution_cannot_replace_the_builtins_the_tests_use():
    shadow = "def abs(x):\n    return 0\ndef sqrt2():\n    return 0.0\n"
    tests = ["assert abs(sqrt2() - 1.4142) < 0.001"]
    assert score(shadow, tests) == 0.0
    assert score("def sqrt2():\n    return 2 ** 0.5\n", tests) == 1.0


# ------------------------------------------------------------------------------------------- hostile snippets

HOSTILE_FAST = {
    "alloc_10gb": "x = bytearray(10 * 1024 ** 3)",
    "huge_file": "with open('big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'0' * (1 << 20))",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)",
    "killpg_parent": "import os\nos.killpg(os.getpgid(os.getppid()), 9)",
    "kill_everything": "import os\nos.kill(-1, 9)",
    "kill_init": "import os\nos.kill(1, 9)",
    "fd_exhaustion": "fs = []\nwhile True:\n    fs.append(open('/dev/null'))",
    "os_system": "import os\nos.system('cat /etc/shadow; id; echo pwned > /root/pwned_by_sandbox')",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'cat /etc/shadow > /tmp/shadow_copy_sbx'])",
    "setuid_root": "import os\nos.setuid(0)\nopen('/etc/shadow').read()",
    "deep_recursion": "def f(n): return f(n + 1)\nf(0)",
}


@needs_root
@pytest.mark.parametrize("name", sorted(HOSTILE_FAST))
def test_hostile_fast_snippets_score_zero(name):
    t0 = time.monotonic()
    assert score(HOSTILE_FAST[name], timeout=3.0) == 0.0
    assert time.monotonic() - t0 < within(3.0)
    assert not os.path.exists("/root/pwned_by_sandbox")
    assert not os.path.exists("/tmp/shadow_copy_sbx")


@needs_root
def test_infinite_loop_times_out():
    t0 = time.monotonic()
    r = run_sandboxed("while True: pass", timeout=1.0)
    assert r.timed_out and not r.ok and time.monotonic() - t0 < within(1.0)
    assert score("while True: pass", timeout=1.0) == 0.0


@needs_root
def test_huge_file_is_capped():
    r = run_sandboxed("f = open('big', 'wb')\nfor _ in range(200): f.write(b'0' * (1 << 20))", max_file_mb=4)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process being killed
    assert not r.ok and "File too large" in r.stderr


@needs_root
def test_read_secrets(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-123")
    secret.chmod(0o600)
    code = (f"for p in [{str(secret)!r}, '/etc/shadow']:\n"
            "    try: print(open(p).read())\n"
            "    except Exception as e: print('denied', type(e).__name__)\n")
    r = run_sandboxed(code)
    assert "TOPSECRET" not in r.stdout and "root:" not in r.stdout
    assert r.stdout.count("denied PermissionError") == 2
    assert score(code) == 0.0


@needs_root
def test_environment_secrets_not_inherited(monkeypatch):
    monkeypatch.setenv("GROUPRL_SECRET", "hunter2-fake")
    r = run_sandboxed("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ', 'rb').read())")
    assert r.ok and "hunter2" not in r.stdout and "GROUPRL_SECRET" not in r.stdout
    assert score("import os\nassert 'GROUPRL_SECRET' in os.environ\ndef add(a, b): return a + b") == 0.0


@needs_root
def test_write_outside_and_delete_things(tmp_path):
    target = tmp_path / "pwned.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    tmp_path.chmod(0o777)   # even a world-writable dir deeper in a private tree is unreachable
    victim = "/tmp/grouprl_sbx_victim.txt"
    with open(victim, "w") as f:
        f.write("victim")
    try:
        code = ("import os, shutil\n"
                f"for p in [{str(target)!r}, '/etc/pwned', '/root/pwned', '/work/pwned']:\n"
                "    try: open(p, 'w').write('x')\n"
                "    except Exception: pass\n"
                "os.chdir('/')\n"
                f"for p in [{str(keep)!r}, {victim!r}, '/etc/hostname']:\n"
                "    try: os.remove(p)\n"
                "    except Exception: pass\n"
                f"shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)\n"
                "shutil.rmtree('/work', ignore_errors=True)\n")
        assert score(code) == 0.0
        assert not target.exists() and keep.read_text() == "keep"
        assert os.path.exists(victim) and os.path.exists("/etc/hostname")
        assert not any(os.path.exists(p) for p in ["/etc/pwned", "/root/pwned", "/work/pwned"])
    finally:
        os.unlink(victim)


@needs_root
def test_no_network_to_localhost():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        code = ("import socket\n"
                f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "s.sendall(b'stolen')\n")
        r = run_sandboxed(code)
        assert not r.ok
        assert score(code) == 0.0
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    assert sandbox_capabilities()["network_isolation"]


@needs_root
def test_fork_bomb_is_contained(sandbox_uids):
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    t0 = time.monotonic()
    r = run_sandboxed(bomb, timeout=1.5)
    assert not r.ok and time.monotonic() - t0 < within(1.5)
    assert len(sandbox_uids) == 1 and live_processes_of(sandbox_uids) == []   # none left when it returns
    assert os.system("true") == 0   # the machine still responds
    assert score(bomb, timeout=1.5) == 0.0
    assert len(sandbox_uids) == 3 and live_processes_of(sandbox_uids) == []   # the judge's and the bomb's


@needs_root
def test_daemon_does_not_outlive_the_run():
    code = ("import os, sys, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        print('daemon', os.getpid(), flush=True)\n"
            "        while True: time.sleep(0.05)\n"
            "    os._exit(0)\n"
            "time.sleep(0.3)\n")
    r = run_sandboxed(code, timeout=2.0)
    pid = int(r.stdout.split()[1])
    assert gone_or_zombie(pid)
    time.sleep(0.2)
    assert gone_or_zombie(pid)


@needs_root
def test_leftover_files_in_tmp_are_removed():
    r = run_sandboxed("import os\nopen('/tmp/grouprl_sbx_left', 'w').write('x')\n"
                      "open('/dev/shm/grouprl_sbx_left', 'w').write('x')\nprint(os.getcwd())")
    assert r.ok
    assert not os.path.exists("/tmp/grouprl_sbx_left") and not os.path.exists("/dev/shm/grouprl_sbx_left")
    assert not os.path.exists(r.stdout.strip())   # the sandbox dir itself is gone
