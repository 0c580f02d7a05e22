"""Hostile code in the test process: real processes through the sandboxed ``exec``.

Every hostile program carries a per-test marker in its argv (forks inherit it), so
``survivors(mark)`` can look through /proc for anything a run left behind. Each test is
bounded by short timeouts; the module needs bwrap and root (the pids cgroup), which the
benchmark machine has, and is skipped elsewhere.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from fastagent.config import Config
from fastagent.errors import SandboxError
from fastagent.sandbox import policy as sandbox_mod
from fastagent.sandbox.channel import ProbeChannel
from fastagent.sandbox.policy import Limits, Sandbox
from fastagent.sandbox.tools import ExecResult, ToolDispatcher
from fastagent.verify import passed, pytest_argv

PASS_MARKER = b"PASSED test_solution.py::test_humaneval"  # what pytest -rA prints

PY = sys.executable
TEST = "from solution import add\n\n\ndef test_humaneval():\n    assert add(2, 3) == 5\n"
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
LIMITS = Limits(processes=32)


def make_sandbox(mode: str = "bwrap", **kwargs: object) -> Sandbox:
    try:
        return Sandbox(mode=mode, warn=None, **kwargs)  # type: ignore[arg-type]
    except SandboxError as exc:
        pytest.skip(f"sandbox mode {mode} unavailable here: {exc}")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    sb = make_sandbox("bwrap", limits=LIMITS)
    if sb.cgroups is None:
        pytest.skip("no pids cgroup here (needs root and cgroup v1 pids)")
    return sb


@pytest.fixture
def mark() -> str:
    return f"fastagent-hostile-{uuid.uuid4().hex}"


@pytest.fixture
def tools(tmp_path: Path, sandbox: Sandbox) -> ToolDispatcher:
    return ToolDispatcher(tmp_path / "ws", sandbox=sandbox, timeout=10)


def survivors(mark: str) -> list[int]:
    """Live processes whose command line contains ``mark`` (zombies have none)."""
    found = []
    needle = mark.encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def run(tools: ToolDispatcher, code: str, mark: str = "", **kwargs: object) -> ExecResult:
    argv = [PY, "-c", code] + ([mark] if mark else [])
    return uvloop.run(tools.exec(argv, **kwargs))  # type: ignore[arg-type]


def verify(tools: ToolDispatcher, solution: str, test: str = TEST) -> ExecResult:
    """What the agent does for one attempt: fresh workspace, the two files, probed pytest."""
    tools.reset()
    tools.write_file("solution.py", solution)
    tools.write_file("test_solution.py", test)
    return uvloop.run(tools.exec(pytest_argv(PY), timeout=30, probe=True))


#: How long the descendants the tests leave behind sleep: a run that returns sooner than this
#: did not wait for them (no other upper bound on time: the machine may be busy).
SLEEPER_S = 600

# A program that leaves three kinds of descendants behind: a plain child, one in a new
# session (outside the process group), and a double-forked daemon (reparented away).
SCATTER = """
import os, subprocess, sys, time
mark = sys.argv[1]
sleeper = [sys.executable, "-c", "import time; time.sleep(600)", mark]
subprocess.Popen(sleeper)
subprocess.Popen(sleeper, start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
print("scattered", flush=True)
"""


# ---- the timeout kills every descendant ------------------------------------------------------


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "rlimits"])
@pytest.mark.parametrize("tail", ["while True: pass", "time.sleep(600)"], ids=["loop", "sleep"])
def test_timeout_kills_every_descendant(tmp_path: Path, mark: str, mode: str, tail: str) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode, limits=LIMITS))
    t0 = time.monotonic()
    result = run(tools, SCATTER + tail + "\n", mark, timeout=1.5)
    assert result.cause == "timeout" and result.stdout == b"scattered\n"
    assert time.monotonic() - t0 < SLEEPER_S  # the sleepers' pipes did not hold it
    assert result.sandbox.startswith(mode)
    assert survivors(mark) == []


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "rlimits"])
def test_escapees_die_when_the_child_exits(tmp_path: Path, mark: str, mode: str) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode, limits=LIMITS))
    t0 = time.monotonic()
    result = run(tools, SCATTER, mark, timeout=SLEEPER_S * 2)
    assert result.exit_code == 0 and time.monotonic() - t0 < SLEEPER_S
    assert survivors(mark) == []


def test_without_sandbox_a_setsid_escapee_survives(tmp_path: Path, mark: str) -> None:
    """Why the sandbox exists: the plain process-group kill misses a new session."""
    tools = ToolDispatcher(tmp_path, sandbox=Sandbox(mode="off"))
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]],"
        " start_new_session=True)\n"
    )
    result = run(tools, code, mark)
    try:
        assert result.exit_code == 0 and result.sandbox == "off"
        assert survivors(mark) != []  # exec has killed what it kills by the time it returns
    finally:
        for pid in survivors(mark):
            os.kill(pid, 9)


def test_fork_bomb_is_capped_and_killed(tools: ToolDispatcher, mark: str) -> None:
    code = """
import os, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print(n, exc.errno, flush=True)
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    n += 1
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
    t0 = time.monotonic()
    result = run(tools, code, mark, timeout=2)
    forked, error = map(int, result.stdout.split())
    assert error == errno.EAGAIN and 0 < forked < LIMITS.processes
    assert result.cause == "timeout" and time.monotonic() - t0 < SLEEPER_S
    assert survivors(mark) == []


def test_grandchild_holding_stdout_does_not_hang(tools: ToolDispatcher, mark: str) -> None:
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]])\n"
        "print('bye', flush=True)\n"
    )
    t0 = time.monotonic()
    result = run(tools, code, mark, timeout=SLEEPER_S * 2)
    assert result.exit_code == 0 and result.stdout == b"bye\n"
    assert time.monotonic() - t0 < SLEEPER_S  # its grandchild's open stdout did not hold it
    assert survivors(mark) == []


# ---- resources ---------------------------------------------------------------------------------


def test_two_gib_allocation_fails_with_memory_error(tools: ToolDispatcher) -> None:
    code = (
        "try:\n    x = bytearray(2 << 30)\nexcept MemoryError:\n    print('MemoryError')\n"
        "    raise SystemExit(3)\n"
    )
    result = run(tools, code)
    assert (result.exit_code, result.stdout) == (3, b"MemoryError\n")


def test_gigabyte_print_is_capped_and_counted(tmp_path: Path, sandbox: Sandbox) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=sandbox, output_cap=4096)
    code = "import os\nfor _ in range(1024):\n    os.write(1, b'x' * (1 << 20))\n"
    result = run(tools, code, timeout=600)
    assert result.exit_code == 0 and len(result.stdout) == 4096
    assert result.stdout_dropped == (1 << 30) - 4096


def test_file_size_and_open_files_are_limited(tools: ToolDispatcher) -> None:
    code = """
import errno, os
try:
    with open("big", "wb") as f:
        f.write(b"x" * (100 << 20))
except OSError as exc:
    print(errno.errorcode[exc.errno])
files = []
try:
    while True:
        files.append(open(os.devnull))
except OSError as exc:
    print(errno.errorcode[exc.errno], len(files) < 512)
"""
    result = run(tools, code)
    assert result.stdout.split() == [b"EFBIG", b"EMFILE", b"True"], result.stderr
    assert (tools.workspace / "big").stat().st_size == LIMITS.file_size


def test_cpu_limit_backs_up_the_timeout(tmp_path: Path) -> None:
    sb = make_sandbox("bwrap", limits=Limits(cpu_seconds=1))
    tools = ToolDispatcher(tmp_path, sandbox=sb)
    result = run(tools, "while True: pass", timeout=30)
    assert result.cause == "signal" and result.exit_code in (-24, -9)  # SIGXCPU, then SIGKILL


def test_limits_cannot_be_raised_again(tools: ToolDispatcher) -> None:
    code = (
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)\n"
    )
    result = run(tools, code)
    assert result.exit_code == 1 and b"not allowed to raise maximum limit" in result.stderr


@pytest.mark.parametrize("mode", ["bwrap", "unshare"])
def test_signal_deaths_are_reported_as_signals(tmp_path: Path, mode: str) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode))
    result = run(tools, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert (result.cause, result.exit_code) == ("signal", -15)


@pytest.mark.parametrize("mode", ["bwrap", "unshare"])
def test_other_processes_are_invisible(tmp_path: Path, mode: str) -> None:
    """/proc shows only the run's PID namespace: no other process's environ or cmdline."""
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode))
    code = (
        "import os\n"
        "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(len(pids), os.getpid() in pids)\n"
    )
    result = run(tools, code)
    count, me = result.stdout.split()
    assert int(count) <= 4 and me == b"True"


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "rlimits"])
def test_test_cpu_time_reaches_rusage_children(tmp_path: Path, mode: str) -> None:
    """The runner's children-CPU figure must still see the sandboxed test's CPU time."""
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode))

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = children_cpu()
    result = run(
        tools, "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    )
    assert result.exit_code == 0
    assert children_cpu() - before >= 0.28


# ---- filesystem, environment, network ------------------------------------------------------


def test_writes_outside_the_workspace_are_refused(tools: ToolDispatcher, tmp_path: Path) -> None:
    targets = [
        f"/tmp/outside-{uuid.uuid4().hex}",
        str(tmp_path / "beside-the-workspace"),
        "/sys/fs/cgroup/pids/cgroup.procs",  # leaving the run's cgroup
        "/dev/escape",
    ]
    code = """
import errno, os, sys, tempfile
for target in sys.argv[1:]:
    try:
        with open(target, "w") as f:
            f.write("0")
        print("WROTE", target)
    except OSError as exc:
        print(errno.errorcode[exc.errno])
open("inside.txt", "w").write("ok")
fd, path = tempfile.mkstemp()
print(os.path.dirname(path) == os.getcwd())
"""
    result = uvloop.run(tools.exec([PY, "-c", code, *targets]))
    assert result.stdout.split() == [b"EROFS"] * len(targets) + [b"True"], result.stderr
    assert not any(Path(t).exists() for t in (targets[0], targets[1]))
    assert (tools.workspace / "inside.txt").read_text() == "ok"


def test_environment_has_no_keys(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "LLM_API_KEY": "sk-secret-1",
        "OPENAI_API_KEY": "sk-secret-2",
        "GITHUB_TOKEN": "ghp_secret3",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-4",
        "DB_PASSWORD": "hunter5",
        "DATABASE_URL": "postgres://user:hunter6@db/x",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    tools = ToolDispatcher(tmp_path, sandbox=sandbox)
    code = "import os; print(repr(dict(os.environ))); print(open('/proc/self/environ').read())"
    result = run(tools, code, probe=True)
    text = result.stdout.decode()
    for name, value in secrets.items():
        assert name not in text and value not in text
    env = eval(text.splitlines()[0])
    assert env["HOME"] == env["TMPDIR"] == str(tools.workspace)
    # the probe's variable names two fds; the nonce itself never is in the environment
    assert all(part.isdigit() for part in env["FASTAGENT_PROBE"].split(","))


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


CONNECT = """
import errno, socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("connected")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc))
"""


@pytest.mark.parametrize("mode", ["bwrap", "unshare"])
def test_network_is_isolated_by_default(tmp_path: Path, listener: int, mode: str) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox(mode))
    result = uvloop.run(tools.exec([PY, "-c", CONNECT, str(listener)]))
    # bwrap brings up a private loopback (refused); unshare leaves it down (unreachable)
    assert result.stdout in (b"ECONNREFUSED\n", b"ENETUNREACH\n")


def test_network_flag_allows_connections(tmp_path: Path, listener: int) -> None:
    tools = ToolDispatcher(tmp_path, sandbox=make_sandbox("bwrap", network=True))
    result = uvloop.run(tools.exec([PY, "-c", CONNECT, str(listener)]))
    assert result.stdout == b"connected\n"


# ---- faking a pass -------------------------------------------------------------------------


def test_a_real_pass_is_counted(tools: ToolDispatcher) -> None:
    result = verify(tools, RIGHT)
    assert result.probe == "passed" and passed(result), result.stdout


def test_a_real_failure_is_not(tools: ToolDispatcher) -> None:
    result = verify(tools, WRONG)
    assert result.probe == "failed" and not passed(result)


def test_exit_zero_at_import_is_not_a_pass(tools: ToolDispatcher) -> None:
    result = verify(tools, "import os\nos._exit(0)\n" + WRONG)
    assert result.exit_code == 0 and result.probe == "missing" and not passed(result)


def test_printing_the_marker_is_not_a_pass(tools: ToolDispatcher) -> None:
    """The test fails, then an atexit hook prints pytest's PASSED line and exits 0."""
    fake = (
        "import atexit, os\n\n"
        "def fake():\n"
        f"    print({PASS_MARKER.decode()!r}, flush=True)\n"
        "    os._exit(0)\n\n"
        "atexit.register(fake)\n"
    )
    result = verify(tools, fake + WRONG)
    assert result.exit_code == 0 and PASS_MARKER in result.stdout  # the old rule: a pass
    assert result.probe == "failed" and not passed(result)


def test_writing_a_guessed_report_is_not_a_pass(tools: ToolDispatcher) -> None:
    forge = """
import os
for fd in map(int, os.listdir("/proc/self/fd")):
    if fd > 2:
        try:
            os.write(fd, b"0123456789abcdef0123456789abcdef passed 0\\n")
        except OSError:
            pass
os._exit(0)
"""
    result = verify(tools, forge + WRONG)
    assert result.exit_code == 0 and result.probe in ("forged", "missing")
    assert not passed(result)


def test_leftover_files_do_not_change_the_next_attempt(tools: ToolDispatcher) -> None:
    """Attempt 1 plants files that would fake a pass; the reset before attempt 2 drops them."""
    conftest = (
        "import pytest\n\n@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n"
    )
    plant = f"""
import os
files = {{
    "conftest.py": {conftest!r},
    "pytest.ini": "[pytest]\\naddopts = -p no:python\\n",
    "pytest.py": "print('SHADOW'); import os; os._exit(0)\\n",
    "sitecustomize.py": "print('SITECUSTOMIZE')\\n",
    ".hidden/conftest.py": {conftest!r},
}}
for name, text in files.items():
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    open(name, "w").write(text)
os.chmod(".hidden", 0o500)
"""
    first = verify(tools, plant + WRONG)
    assert not passed(first)
    assert (tools.workspace / "conftest.py").exists()  # the plant worked in attempt 1
    second = verify(tools, "import os\nprint(sorted(os.listdir('.')))\n" + WRONG)
    assert sorted(os.listdir(tools.workspace)) == ["solution.py", "test_solution.py"]
    assert second.probe == "failed" and not passed(second)


def test_workspace_modules_do_not_shadow_pytest(tools: ToolDispatcher) -> None:
    tools.reset()
    site = tools.workspace / ".local/lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    shadows = {
        "pytest.py": "print('SHADOW'); import os; os._exit(0)\n",
        "sitecustomize.py": "print('SITECUSTOMIZE')\n",
        str(site / "site-packages/usercustomize.py"): "print('USERCUSTOMIZE')\n",
    }
    for name, text in shadows.items():
        path = tools.workspace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tools.write_file("solution.py", RIGHT)
    tools.write_file("test_solution.py", TEST)
    result = uvloop.run(tools.exec(pytest_argv(PY), timeout=30, probe=True))
    output = result.stdout + result.stderr
    assert passed(result), output
    assert b"SHADOW" not in output and b"CUSTOMIZE" not in output


# ---- the report channel ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "verdict"),
    [
        (None, "missing"),
        ("{nonce} passed 0 0.5\n", "passed"),
        ("{nonce} passed 1 0.5\n", "failed"),
        ("{nonce} failed 1 0.5\n", "failed"),
        ("0000 passed 0 0.5\n", "forged"),
        ("{nonce} passed 0 0.5\n{nonce} passed 0 0.5\n", "forged"),
        ("{nonce} passed 0 0.5", "forged"),
        ("{nonce} passed 0\n", "forged"),
        ("{nonce} great 0 0.5\n", "forged"),
        ("x" * 10000, "forged"),
    ],
)
def test_probe_channel_accepts_only_its_own_line(written: str | None, verdict: str) -> None:
    channel = ProbeChannel()
    nonce_fd, out_fd = channel.child_fds
    assert os.read(nonce_fd, 100).decode() == channel.nonce
    if written is not None:
        os.write(out_fd, written.format(nonce=channel.nonce).encode())
    assert channel.verdict() == verdict
    assert channel.cpu_s == (0.5 if verdict in ("passed", "failed") else None)


# ---- degrading -------------------------------------------------------------------------------


@pytest.fixture
def fresh_detection() -> Iterator[None]:
    sandbox_mod._choose.cache_clear()
    yield
    sandbox_mod._choose.cache_clear()


@pytest.mark.usefixtures("fresh_detection")
def test_missing_bwrap_degrades_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_mod, "find_bwrap", lambda: None)
    lines: list[str] = []
    sb = Sandbox(warn=lines.append)
    assert sb.mode == "unshare" and len(lines) == 1 and "bwrap" in lines[0]
    assert sb.warning == lines[0]
    result = uvloop.run(ToolDispatcher(tmp_path, sandbox=sb).exec(["true"]))
    assert result.sandbox == sb.label == "unshare+cgroup"
    with pytest.raises(SandboxError, match="bwrap"):
        Sandbox(mode="bwrap", warn=None)


def test_no_sandbox_config_runs_the_plain_process_group(tmp_path: Path) -> None:
    sb = Sandbox.from_config(Config(sandbox=False))
    tools = ToolDispatcher(tmp_path, sandbox=sb)
    result = uvloop.run(tools.exec([PY, "-c", "print('hi')"]))
    assert (result.stdout, result.sandbox, tools.sandbox_mode) == (b"hi\n", "off", "off")
    assert Sandbox.from_config(Config()).mode != "off"


def test_every_run_leaves_its_cgroup_empty_for_the_next(
    tools: ToolDispatcher, sandbox: Sandbox
) -> None:
    assert sandbox.cgroups is not None
    before = set(sandbox.cgroups.path.glob("run-*"))  # kept by the module's earlier tests
    run(tools, "print(1)")
    run(tools, "while True: pass", timeout=0.5)
    run(tools, SCATTER, "cg-reuse")
    left = set(sandbox.cgroups.path.glob("run-*"))
    # runs one after another share one cgroup, emptied (every process killed) after each
    assert len(left - before) <= 1
    assert all((cg / "cgroup.procs").read_text() == "" for cg in left)
    assert survivors("cg-reuse") == []


def test_the_cgroups_go_when_the_runtime_exits(tmp_path: Path, sandbox: Sandbox) -> None:
    code = (
        "import uvloop, sys; from fastagent.sandbox.policy import Sandbox; "
        "from fastagent.sandbox.tools import ToolDispatcher; "
        "sb = Sandbox(); t = ToolDispatcher(sys.argv[1], sandbox=sb); "
        "uvloop.run(t.exec(['true'])); print(sb.cgroups.path)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert not Path(proc.stdout.strip()).exists()
