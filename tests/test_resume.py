"""Crash safety: SIGINT/SIGTERM write what finished; --resume completes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _child import child_env, read_summary
from _wait import wait_until

from fastagent.results import CsvWriter, read_rows
from fastagent.schema import COLUMNS

SLOW = "ttft_ms=100,itl_ms=3"


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = child_env()
    return subprocess.Popen(
        [sys.executable, "-m", "fastagent", "bench", "--results-dir", "out", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(tmp_path: Path, n: int, proc: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list((tmp_path / "out").glob("python_*.csv"))
        if found and len(read_rows(found[0])) >= n:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no rows appeared")


def pytest_processes(tmp_path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(tmp_path) in os.readlink(f"/proc/{pid}/cwd") and int(pid) != os.getpid():
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_summary_and_resume_completes(tmp_path: Path, signum: int) -> None:
    workload = ["--tasks", "12", "--concurrency", "3", "--max-procs", "1", "--sim-profile", SLOW]
    proc = start(tmp_path, *workload)
    csv_path = wait_for_rows(tmp_path, 3, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "INTERRUPTED" in out
    summary_path = csv_path.with_name(csv_path.stem + "_summary.json")
    summary = read_summary(summary_path)
    rows = read_rows(csv_path)
    assert summary.interrupted is True and summary.interrupted_by_signal == signum
    assert summary.outcomes.tasks == len(rows) < 12
    assert wait_until(lambda: pytest_processes(tmp_path) == [])

    proc = start(tmp_path, *workload, "--resume", str(csv_path))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{len(rows)} tasks done" in err
    rows_after = read_rows(csv_path)
    ids = [r.task_id for r in rows_after]
    assert len(ids) == len(set(ids)) == 12
    assert rows_after[: len(rows)] == rows
    summary = read_summary(summary_path)
    assert summary.outcomes.tasks == 12 and summary.interrupted is False
    assert summary.outcomes.passed == sum(r.status == "passed" for r in rows_after)


def test_half_written_row_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    header = ",".join(COLUMNS)
    full = "HumanEval/0,passed,,1,0,True,1.0,0.5,0.4,0.0,0.1,0.0,1,0,10,10,5.0,1.0,exit_0,0.5"
    path.write_text(f"{header}\n{full}\nHumanEval/1,pass")
    assert [r.task_id for r in read_rows(path)] == ["HumanEval/0"]
    CsvWriter(path).close()
    assert path.read_text() == f"{header}\n{full}\n"


def test_resume_refuses_a_foreign_csv(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    proc = start(tmp_path, "--tasks", "2", "--resume", "other.csv")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "not a fastagent results CSV" in err
    assert "Traceback" not in err
