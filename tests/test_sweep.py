"""`fastagent sweep`: one bench process per concurrency level against one simulated endpoint,
and the child-process runner it shares with the bench scripts and the tests."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from fastagent import cli
from fastagent.analysis import children, sweep
from fastagent.analysis.summaries import load_summary
from fastagent.dataset import Task, default_dataset_path, load_tasks
from fastagent.sim.launcher import SimProcess

DATA = Path(__file__).parent / "data"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
FAST = "ttft_ms=5,itl_ms=0"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = cli.Parser(prog="fastagent sweep")
    sweep.add_arguments(parser)
    return parser.parse_args(argv)


def run_sweep(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fastagent sweep ARGV`` in this process, as the console script runs it."""
    try:
        code = cli.main(["sweep", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ---- options ---------------------------------------------------------------------------------


def test_parse_levels() -> None:
    assert sweep.parse_levels("1,10,100,1000") == [1, 10, 100, 1000]
    assert sweep.parse_levels("100, 1,10,1,") == [1, 10, 100]
    for bad in ("", "1,x", "0,1", "-5", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_levels(bad)


def test_tasks_for_level() -> None:
    assert sweep.tasks_for_level(1, 100) == 100
    assert sweep.tasks_for_level(1000, 100) == 1000
    assert sweep.tasks_for_level(2, 2) == 2


def test_first_tasks_repeats_with_suffixes() -> None:
    tasks = [Task("A", "a", "ta"), Task("B", "b", "tb")]
    out = sweep.first_tasks(tasks, 5)
    assert [t.id for t in out] == ["A", "B", "A#1", "B#1", "A#2"]
    assert [t.spec for t in out] == ["a", "b", "a", "b", "a"]
    assert sweep.first_tasks(tasks, 1) == tasks[:1]
    assert sweep.first_tasks(tasks, 2) == tasks


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--concurrency", "1,zero"], "argument --concurrency: expected comma-separated integers"),
        (["--concurrency", "0"], "argument --concurrency: expected comma-separated integers"),
        (["--concurrency", "1", "--tasks-per-level", "0"],
         "argument --tasks-per-level: expected an integer >= 1, got '0'"),
        (["--concurrency", "1", "--max-procs", "many"],
         "argument --max-procs: expected an integer >= 1, got 'many'"),
        (["--concurrency", "1", "--sim-profile", "nonsense=1"],
         "--sim-profile: unknown profile key 'nonsense'"),
        (["--concurrency", "1", "--dataset", "/nonexistent/tasks.json"],
         "--dataset: dataset not found"),
        (["--concurrency", "1", "--bench-arg=--bogus"],
         "--bench-arg: unrecognized arguments: --bogus"),
        (["--concurrency", "1", "--bench-arg=--max-retries=x"],
         "--bench-arg: argument --max-retries: expected an integer >= 0, got 'x'"),
        (["--concurrency", "1", "--bench-arg=--concurrency=5"],
         "--bench-arg: --concurrency is set by the sweep itself"),
        (["--concurrency", "1", "--bench-arg=--check"], "--bench-arg: --check runs no benchmark"),
        (["--concurrency", "1", "--bench-arg=--help"], "--bench-arg: --help and --version"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_sweep([*argv, "--out", str(out_dir)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastagent sweep: error: ") and expected in lines[0]
    assert not out_dir.exists()  # nothing was started or written


def test_unusable_out_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    code, out, err = run_sweep(["--concurrency", "1", "--out", str(blocker / "out")], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"fastagent sweep: error: --out: cannot create {blocker / 'out'}: Not a directory"
    ]


# ---- rows, table, chart ----------------------------------------------------------------------


def _row(path: Path) -> dict[str, object]:
    view = load_summary(path)
    bench = children.BenchRun(command=(), returncode=0, stdout="", stderr=None, summary=path)
    return sweep._row(3, 3, view, bench)


def test_level_rows_from_schema_1_and_schema_2_summaries() -> None:
    v1, v2 = _row(DATA / "python_cython_summary.json"), _row(DATA / "python_v2_summary.json")
    assert list(v1) == list(v2)
    parts = [f"{p}_{q}_ms" for p, _ in sweep.CALL_PARTS for q in ("p50", "p99")]
    assert [k for k, v in v2.items() if v is None] == []
    # schema 1 had no per-call parts: they are the only figures missing from its rows
    assert [k for k, v in v1.items() if v is None] == parts
    raw = json.loads((DATA / "python_v2_summary.json").read_text())
    assert v2["peak_rss_mib"] == raw["memory"]["peak_rss_mib"]
    assert v2["runtime_overhead_p99_ms"] == raw["latency"]["runtime_overhead_ms"]["p99"]
    assert v2["endpoint_queue_p50_ms"] == raw["latency"]["endpoint_queue_ms"]["p50"]
    assert v2["loop_lag_p99_ms"] == raw["loop_lag_ms"]["p99"]
    assert v2["runtime_cpu_ms_per_task"] == raw["cpu"]["runtime_ms_per_task"]
    assert (v2["tasks_done"], v2["passed"], v2["concurrency"]) == (3, 3, 3)


def test_render_table() -> None:
    rows = [_row(DATA / "python_v2_summary.json"), {"agents": 10, "tasks": 10}]
    lines = sweep.render_table(rows).splitlines()
    assert lines[0].split("  ")[0].strip() == "agents"
    assert lines[2].split()[-1] == "3/3" and lines[2].split()[:2] == ["3", "3"]
    assert lines[3].split() == ["10", "10", *["—"] * (len(sweep.COLUMNS) - 2)]
    markdown = sweep.render_table(rows, markdown=True).splitlines()
    assert markdown[0] == "| " + " | ".join(h for _, h, _ in sweep.COLUMNS) + " |"


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (fastagent[plot]) not installed")
def test_chart_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{**_row(DATA / "python_v2_summary.json"), "agents": n} for n in (1, 10, 100)]
    sweep._chart(tmp_path, {"implementation": "cython"}, rows)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {tmp_path / 'sweep.png'}" in capsys.readouterr().err


def test_chart_skipped_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    sweep._chart(tmp_path, {"implementation": "cython"}, [_row(DATA / "python_v2_summary.json")])
    assert not (tmp_path / "sweep.png").exists()
    assert capsys.readouterr().err.strip() == (
        "fastagent sweep: chart skipped: matplotlib is not installed "
        "(pip install 'fastagent[plot]')"
    )


# ---- the child runner ------------------------------------------------------------------------


def test_child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLM_BASE_URL", "LLM_API_KEY", "BENCH_CONCURRENCY", "BENCH_PYTHON"):
        monkeypatch.setenv(name, "from the shell")
    monkeypatch.setenv("FASTAGENT_NO_EXTENSIONS", "1")
    monkeypatch.setenv("KEEP_ME", "yes")
    env = children.child_env({"BENCH_DATASET": "given"})
    assert env["PATH"].split(os.pathsep)[0] == children.VENV_BIN == str(Path(sys.executable).parent)
    assert env["KEEP_ME"] == "yes" and env["BENCH_DATASET"] == "given"
    assert not {"LLM_BASE_URL", "LLM_API_KEY", "BENCH_CONCURRENCY", "BENCH_PYTHON"} & set(env)
    assert "FASTAGENT_NO_EXTENSIONS" not in env
    assert children.child_env(pure_python=True)["FASTAGENT_NO_EXTENSIONS"] == "1"


def test_run_bench_reads_back_only_its_own_summary(tmp_path: Path) -> None:
    stale = tmp_path / "python_20200101T000000Z_summary.json"
    stale.write_text("{}")
    run = children.run_bench(["--dataset", str(tmp_path / "missing.json")], results_dir=tmp_path,
                             capture_stderr=True)  # fmt: skip
    assert run.returncode == 2 and "dataset not found" in (run.stderr or "")
    assert run.summary is None  # the file that was there before is not this run's
    assert not run.interrupted and not run.timed_out
    assert run.command[-2:] == ("--results-dir", str(tmp_path))


def _requests(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/sim/stats", timeout=10) as resp:
        return int(json.load(resp)["requests"])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_bench_forwards_an_interrupt_and_keeps_the_summary(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Every completion stalls, so the bench cannot finish: once it has sent a request, this
    process gets the signal; the bench must get one SIGINT and still write its summary."""
    done = threading.Event()

    def interrupt_once_the_bench_waits(base_url: str) -> None:
        deadline = time.monotonic() + 120  # a bound on a wait, not on how fast anything is
        while not done.is_set() and time.monotonic() < deadline:
            if _requests(base_url) >= 1:
                os.kill(os.getpid(), signum)
                return
            done.wait(0.1)

    with SimProcess(["--profile", "faults=stall:1"]) as sim:
        watcher = threading.Thread(target=interrupt_once_the_bench_waits, args=(sim.base_url,))
        watcher.start()
        try:
            run = children.run_bench(
                ["--base-url", sim.base_url, "--tasks", "2", "--concurrency", "2",
                 "--read-timeout", "600", "--call-timeout", "600"],
                results_dir=tmp_path / "out",
                capture_stderr=True,
            )  # fmt: skip
        finally:
            done.set()
            watcher.join()
    assert run.interrupted, run.stderr
    assert run.returncode == 130, run.stderr
    assert run.summary is not None, run.stderr
    summary = children.read_summary(run.summary)
    assert summary.interrupted and summary.interrupted_by_signal == signal.SIGINT
    assert summary.outcomes.tasks == 0


# ---- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_small_sweep_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "sweep"
    argv = ["--concurrency", "2,1", "--tasks-per-level", "2", "--out", str(out_dir),
            "--sim-profile", FAST]  # fmt: skip
    code, out, err = run_sweep(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    header = lines[1].split("  ")
    assert [h.strip() for h in header if h.strip()] == [h for _, h, _ in sweep.COLUMNS]
    body = [line.split() for line in lines[3:] if line.strip()]
    assert [row[0] for row in body] == ["1", "2"]  # agents, ascending
    assert [row[1] for row in body] == ["2", "2"]  # tasks
    assert all(row[-1] == "2/2" for row in body)  # passed

    data = json.loads((out_dir / "sweep.json").read_text())
    assert data["interrupted"] is False
    assert data["sim_profile"]["ttft_ms"] == 5.0
    assert [level["agents"] for level in data["levels"]] == [1, 2]
    for level in data["levels"]:
        summary = children.read_summary(level["summary"])
        assert Path(level["summary"]).parent == out_dir / f"c{level['agents']}"
        assert summary.settings.concurrency == level["agents"] == level["concurrency"]
        assert summary.outcomes.tasks == 2 and summary.outcomes.passed == 2
        assert summary.endpoint.base_url == data["base_url"]  # one endpoint for every level
        assert summary.endpoint.model == "fastagent-sim"
        assert level["peak_rss_mib"] == summary.memory.peak_rss_mib > 0
        assert level["runtime_overhead_p99_ms"] == summary.latency.runtime_overhead_ms.p99
        assert level["endpoint_queue_p99_ms"] == summary.latency.endpoint_queue_ms.p99
        assert level["exit_code"] == 0
        assert not (out_dir / f"c{level['agents']}" / "work").exists()
    assert data["bench_dataset"] == str(default_dataset_path())  # 2 tasks: no repeat needed

    md = (out_dir / "sweep.md").read_text()
    assert "| agents | tasks | peak RSS MiB |" in md and "| 2 | 2 |" in md


@pytest.mark.slow
def test_sweep_repeats_the_dataset_beyond_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3-task dataset and 5 agents: the bench gets the dataset repeated with #k ids."""
    base = tmp_path / "three.json"
    rows = json.loads(default_dataset_path().read_text())[:3]
    base.write_text(json.dumps(rows))
    out_dir = tmp_path / "sweep"
    argv = ["--concurrency", "5", "--tasks-per-level", "1", "--dataset", str(base),
            "--out", str(out_dir), "--sim-profile", FAST]  # fmt: skip
    code, _, err = run_sweep(argv, capsys)
    assert code == 0, err
    repeated = out_dir / "dataset_5.json"
    assert [t.id for t in load_tasks(repeated)] == [
        rows[0]["id"], rows[1]["id"], rows[2]["id"], rows[0]["id"] + "#1", rows[1]["id"] + "#1",
    ]  # fmt: skip
    data = json.loads((out_dir / "sweep.json").read_text())
    (level,) = data["levels"]
    summary = children.read_summary(level["summary"])
    assert summary.settings.concurrency == 5 and summary.outcomes.tasks == 5
    assert summary.outcomes.passed == 5  # copies get their original's (here: right) answers
    assert summary.totals.peak_agents_in_flight == 5
