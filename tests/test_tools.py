"""ToolDispatcher with real files and real processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import uvloop
from _wait import wait_until

from fastagent.errors import ToolError
from fastagent.sandbox.tools import ToolDispatcher, scrubbed_env


@pytest.fixture
def tools(tmp_path: Path) -> ToolDispatcher:
    return ToolDispatcher(tmp_path / "ws", timeout=10)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # reaped meanwhile
        return False


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape.py", "a/../../b", ""])
def test_paths_outside_the_workspace_are_refused(tools: ToolDispatcher, path: str) -> None:
    with pytest.raises(ToolError):
        tools.write_file(path, "x")


def test_symlink_escape_is_refused(tools: ToolDispatcher, tmp_path: Path) -> None:
    (tools.workspace / "link").symlink_to(tmp_path)
    with pytest.raises(ToolError, match="outside"):
        tools.write_file("link/evil.py", "x")
    assert not (tmp_path / "evil.py").exists()


def test_write_is_atomic_and_leaves_no_temp_file(tools: ToolDispatcher) -> None:
    tools.write_file("pkg/mod.py", "a = 1\n")
    tools.write_file("pkg/mod.py", "a = 2\n")
    assert tools.read_file("pkg/mod.py") == "a = 2\n"
    assert tools.list_dir("pkg") == ["mod.py"]
    assert tools.list_dir() == ["pkg/"]


def test_search_and_reset(tools: ToolDispatcher) -> None:
    tools.write_file("a.py", "def f():\n    return 1\n")
    tools.write_file("sub/b.py", "x = 1\ndef g(): pass\n")
    assert tools.search(r"^def ") == [("a.py", 1, "def f():"), ("sub/b.py", 2, "def g(): pass")]
    tools.reset()
    assert tools.list_dir() == []


def test_exec_separates_stdout_and_stderr(tools: ToolDispatcher) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = uvloop.run(tools.exec(py(code)))
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert result.exit_code == 3 and result.cause == "exit"
    assert result.spawn_s >= 0 and result.wall_s > 0


def test_exec_runs_in_the_workspace_with_stdin_closed(tools: ToolDispatcher) -> None:
    code = "import os, sys; print(os.getcwd()); print(repr(sys.stdin.read()))"
    result = uvloop.run(tools.exec(py(code)))
    cwd, stdin = result.stdout.decode().splitlines()
    assert cwd == str(tools.workspace) and stdin == "''"


def test_output_is_capped_and_overflow_counted(tmp_path: Path) -> None:
    tools = ToolDispatcher(tmp_path, output_cap=1000)
    result = uvloop.run(tools.exec(py("import sys; sys.stdout.write('x' * 1_000_000)")))
    assert len(result.stdout) == 1000 and result.stdout_dropped == 999_000


def test_children_get_no_api_keys(tools: ToolDispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp")
    fresh = ToolDispatcher(tools.workspace, env=scrubbed_env())
    result = uvloop.run(fresh.exec(py("import os; print(sorted(os.environ))")))
    names = result.stdout.decode()
    assert "LLM_API_KEY" not in names and "OPENAI_API_KEY" not in names
    assert "GITHUB_TOKEN" not in names and "PATH" in names


def test_timeout_kills_the_whole_process_group(tools: ToolDispatcher) -> None:
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(p.pid, flush=True)\n"
        "while True: pass\n"
    )
    result = uvloop.run(tools.exec(py(code), timeout=1.5))
    assert result.cause == "timeout" and result.timed_out and result.exit_code == -9
    grandchild = int(result.stdout.split()[0])
    assert wait_until(lambda: not alive(grandchild))  # SIGKILLed with its group


def test_grandchild_holding_stdout_open_does_not_hang(tools: ToolDispatcher) -> None:
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(p.pid, flush=True)\n"
    )
    t0 = time.monotonic()
    result = uvloop.run(tools.exec(py(code), timeout=1200))
    assert result.exit_code == 0 and time.monotonic() - t0 < 600  # not its grandchild's sleep
    grandchild = int(result.stdout.split()[0])
    assert wait_until(lambda: not alive(grandchild))


def test_bash_and_missing_program(tools: ToolDispatcher) -> None:
    assert uvloop.run(tools.bash("echo $((6 * 7))")).stdout == b"42\n"
    with pytest.raises(ToolError, match="cannot start"):
        uvloop.run(tools.exec(["/nonexistent/program"]))


def test_killed_by_signal(tools: ToolDispatcher) -> None:
    result = uvloop.run(tools.exec(py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")))
    assert result.cause == "signal" and result.exit_code == -15


def test_default_env_puts_home_and_tmpdir_in_the_workspace(
    tools: ToolDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://user:hunter2@db/app")
    monkeypatch.setenv("PLAIN_URL", "https://example.org/path")
    fresh = ToolDispatcher(tools.workspace)
    code = "import os; print(os.environ['HOME']); print(os.environ['TMPDIR'])"
    home, tmpdir = uvloop.run(fresh.exec(py(code))).stdout.decode().split()
    assert home == tmpdir == str(tools.workspace)
    assert "DATABASE_URL" not in fresh.env and fresh.env["PLAIN_URL"] == "https://example.org/path"
    assert fresh.sandbox_mode == "off"


def test_reset_refuses_to_run_beside_leftovers(tools: ToolDispatcher) -> None:
    import shutil
    import subprocess

    tools.write_file("conftest.py", "x = 1\n")
    chattr = shutil.which("chattr")
    target = str(tools.workspace / "conftest.py")
    if chattr is None or subprocess.run([chattr, "+i", target], capture_output=True).returncode:
        pytest.skip("cannot make a file immutable here (needs root and a supporting fs)")
    try:
        with pytest.raises(ToolError, match=r"conftest\.py"):
            tools.reset()
    finally:
        subprocess.run([chattr, "-i", target], check=True)
    tools.reset()
    assert tools.list_dir() == []


def test_probe_without_the_plugin_reports_missing(tools: ToolDispatcher) -> None:
    result = uvloop.run(tools.exec(py("print('no pytest here')"), probe=True))
    assert result.exit_code == 0 and result.probe == "missing" and result.sandbox == "off"
