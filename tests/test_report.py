"""`fastagent report`: side-by-side table of this stack's and the C++ stack's summaries.

The two python fixtures are trimmed copies of real `fastagent bench --tasks 3
--concurrency 3` summaries (cython and --pure-python); the C++ one carries the figures of
that stack's README under guessed key names (tests/data/cpp_summary.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastagent.analysis import report

DATA = Path(__file__).parent / "data"
CYTHON = DATA / "python_cython_summary.json"
PURE = DATA / "python_pure_summary.json"
CPP = DATA / "cpp_summary.json"
FIXTURES = [str(CYTHON), str(PURE), str(CPP)]
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="fastagent report")
    report.add_arguments(parser)
    code = report.main(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(text: str) -> dict[str, list[str]]:
    """metric label → cells of a plain-text report (split on runs of 2+ spaces)."""
    import re

    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def test_three_fixtures_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(FIXTURES, capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert rows["metric"] == ["python/cython c=3", "python/pure c=3", "cpp c=100"]
    assert rows["tasks"] == ["3", "3", "100"]
    # the C++ stack's keys mapped onto ours
    assert rows["passed"][2] == "96"
    assert rows["pass@1"] == ["100.0 %", "100.0 %", "96.0 %"]
    assert rows["first-attempt passes"][2] == "87"
    assert rows["recovered"][2] == "6"
    assert rows["failed"][2] == "4"
    assert rows["avg retries"][2] == "0.27"
    assert rows["model"][2] == "qwen2.5-coder:7b"
    # ratios vs the first column
    cy = json.loads(CYTHON.read_text())
    pure = json.loads(PURE.read_text())
    assert rows["peak RSS (MiB)"] == [
        f"{cy['peak_rss_mib']:.1f}",
        f"{pure['peak_rss_mib']:.1f} (×{pure['peak_rss_mib'] / cy['peak_rss_mib']:.2f})",
        f"93.0 (×{93.0 / cy['peak_rss_mib']:.2f})",
    ]
    assert rows["wall (s)"][2] == f"126.0 (×{126.0 / cy['wall_seconds']:.2f})"
    # keys the C++ summary lacks show as a dash, never a number or an error
    for label in (
        "errors",
        "runtime CPU / task (ms)",
        "runtime overhead p99 (ms)",
        "TTFT p50 (ms)",
    ):
        assert rows[label][2] == report.MISSING, label
    assert rows["runtime overhead p99 (ms)"][0] == f"{cy['latency']['llm_overhead_ms']['p99']:.2f}"
    assert "runs differ in concurrency (3, 3, 100)" in out
    assert "keys not shown" not in out  # every key of the three files is known


def test_cpp_mapping_and_units(tmp_path: Path) -> None:
    run = report.load_run(CPP)
    assert run.label == "cpp c=100"
    assert run.values["peak_rss_mib"] == 93.0
    assert run.values["wall_seconds"] == 126.0
    assert run.values["first_attempt_passes"] == 87
    assert run.values["tasks"] == 100
    assert run.values["runtime_cpu_seconds"] is None
    assert run.values["latency.llm_overhead_ms.p99"] is None

    other = tmp_path / "cpp_20250101T000000Z_summary.json"
    other.write_text(
        json.dumps(
            {
                "peak_rss_kb": 95232,
                "pass_at_1_pct": 96,
                "wall_time_ms": 126000,
                "task_latency_p99": 2.5,
                "threads_spawned": 100,
            }
        )
    )
    run = report.load_run(other)
    assert run.label == "cpp"  # no runtime key: taken from the file name
    assert run.values["peak_rss_mib"] == 93.0
    assert run.values["pass_at_1"] == pytest.approx(0.96)
    assert run.values["wall_seconds"] == pytest.approx(126.0)
    assert run.values["latency.task_wall_ms.p99"] == pytest.approx(2500.0)
    assert run.unrecognised == ["threads_spawned"]
    assert "keys not shown: threads_spawned" in report.render([run])


def test_percent_pass_at_1_is_read_as_percent() -> None:
    assert report.resolve({"pass_at_1": 96}, "pass_at_1") == (0.96, "pass_at_1")
    assert report.resolve({"pass_at_1": 1.0}, "pass_at_1") == (1.0, "pass_at_1")


def test_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_report([*FIXTURES, "--format", "markdown"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "| metric | python/cython c=3 | python/pure c=3 | cpp c=100 |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert "| **outcomes (model properties)** | | | |" in lines
    assert "| pass@1 | 100.0 % | 100.0 % | 96.0 % |" in lines
    assert "| errors | 0 | 0 | — |" in lines
    table = [line for line in lines if line.startswith("|")]
    assert all(line.count("|") == 5 for line in table)
    assert any(line.startswith("- (×r) = value / the first column's") for line in lines)


def test_labels_and_duplicates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_report([str(CYTHON), str(CYTHON), "--label", "a", "--label", "b"], capsys)
    assert code == 0
    assert table_rows(out)["metric"] == ["a", "b"]
    code, out, _ = run_report([str(CYTHON), str(CYTHON)], capsys)
    assert table_rows(out)["metric"] == ["python/cython c=3", "python/cython c=3 #2"]
    code, _, err = run_report([str(CYTHON), str(PURE), "--label", "a"], capsys)
    assert code == 2 and "--label" in err


def test_rows_nobody_reports_are_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_report([str(CPP)], capsys)
    assert code == 0
    rows = table_rows(out)
    assert "TTFT p50 (ms)" not in rows and "per LLM call" not in out
    assert rows["peak RSS (MiB)"] == ["93.0"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a benchmark summary (expected a JSON object"),
        ('{"hello": 1}', "not a benchmark summary (none of the keys"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "bad_summary.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_report([str(CYTHON), str(path)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fastagent report: error: ") and expected in lines[0]
    assert str(path) in lines[0]


def test_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report([str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (fastagent[plot]) not installed")
def test_plot_writes_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "plots"
    code, out, err = run_report([*FIXTURES, "--plot", str(out_dir)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["latency_percentiles.png", "overhead_per_call.png", "rss_timeline.png"]
    for path in out_dir.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
    assert "python/cython c=3" in out  # the table is still printed


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    code, out, err = run_report([*FIXTURES, "--plot", str(tmp_path / "p")], capsys)
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "fastagent report: error: --plot needs matplotlib: pip install 'fastagent[plot]'"
    ]
    assert not (tmp_path / "p").exists()


def _imports_after(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bench_never_imports_report_or_matplotlib() -> None:
    _imports_after(
        "import fastagent.cli, fastagent.runner, sys; "
        "assert 'matplotlib' not in sys.modules and 'fastagent.analysis.report' not in sys.modules"
    )
    # Building the whole CLI and parsing a bench command line must not import them either,
    # however `report` and `sweep` are wired into the parser.
    _imports_after(
        "import sys; from fastagent.cli import build_parser; "
        "build_parser().parse_args(['bench', '--tasks', '1']); import fastagent.runner; "
        "bad = [m for m in ('matplotlib', 'fastagent.analysis.report', 'fastagent.analysis.sweep') "
        "if m in sys.modules]; assert not bad, bad"
    )


def test_report_module_does_not_import_matplotlib() -> None:
    _imports_after(
        "import sys, fastagent.analysis.report, fastagent.analysis.sweep; "
        "assert 'matplotlib' not in sys.modules"
    )


def test_wired_into_cli(tmp_path: Path) -> None:
    from fastagent.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        pytest.skip("`fastagent report` is not wired into fastagent/cli.py yet")
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "report", *FIXTURES, "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| metric | python/cython c=3 |")
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "report", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
