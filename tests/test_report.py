"""`fastagent report` and the summaries it reads: this stack's schema 2 and 1, the C++ keys.

python_v2_summary.json is a real `fastagent bench --tasks 3 --concurrency 3` summary (its
rss_timeline trimmed to 10 samples, its machine paths shortened); the two schema-1 fixtures
are trimmed summaries of the same run, cython and --pure-python, written by an earlier
fastagent; the C++ one carries the figures of that stack's README under guessed key names
(tests/data/cpp_summary.json).
"""

from __future__ import annotations

import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

import fastagent.analysis
from fastagent import cli
from fastagent.analysis import report, summaries
from fastagent.analysis.summaries import METRICS, load_summary, lookup
from fastagent.analysis.tables import MISSING
from fastagent.errors import ReportError
from fastagent.schema import Summary

DATA = Path(__file__).parent / "data"
V2 = DATA / "python_v2_summary.json"
CYTHON = DATA / "python_cython_summary.json"
PURE = DATA / "python_pure_summary.json"
CPP = DATA / "cpp_summary.json"
FIXTURES = [str(CYTHON), str(PURE), str(CPP)]
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

#: what the C++ fixture reports, under its own names
CPP_METRICS = {
    "runtime": "cpp",
    "model": "qwen2.5-coder:7b",
    "dataset": "dataset/humaneval_100.json",
    "concurrency": 100,
    "tasks": 100,
    "passed": 96,
    "pass_at_1": 0.96,
    "first_attempt_passes": 87,
    "recovered": 6,
    "failed": 4,
    "avg_retries": 0.27,
    "wall_seconds": 126.0,
    "peak_rss_mib": 93.0,
}
#: what schema 2 reports and the (older) schema-1 fixtures do not
#: an LLM call's parts and its first-byte wait: schema 2 has them, schema 1 had not
CALL_PARTS = ("first_byte_wait_ms", "pre_send_ms", "endpoint_queue_ms", "server_ms",
              "first_byte_lag_ms", "last_byte_lag_ms", "runtime_overhead_ms")  # fmt: skip
ONLY_IN_V2 = {
    "repeat", "stream", "verify", "http_client", "sandbox", "sim_started_by_bench",
    "open_fds_at_end", "live_children_at_end",
    *(f"latency.{part}.{stat}" for part in CALL_PARTS
      for stat in ("count", "mean", "p50", "p95", "p99", "max")),
}  # fmt: skip
#: schema 1's E2E − server time and queue wait: meant otherwise, not in schema 2
ONLY_IN_V1 = {
    f"latency.{name}.{stat}"
    for name in ("llm_overhead_ms", "llm_queue_wait_ms")
    for stat in ("count", "mean", "p50", "p95", "p99", "max")
}


def run_report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fastagent report ARGV`` in this process, as the console script runs it."""
    try:
        code = cli.main(["report", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(text: str) -> dict[str, list[str]]:
    """metric label → cells of a plain-text report (split on runs of 2+ spaces)."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def reported(path: Path) -> set[str]:
    return {name for name, value in load_summary(path).values.items() if value is not None}


# ---- one mapping, three shapes ---------------------------------------------------------------


def _leaves(tp: Any, whole: set[str], prefix: str = "") -> list[str]:
    """Dotted paths of a Struct type's fields, down to what is not a Struct or is read
    ``whole`` (the RSS timeline, the versions)."""
    hints = typing.get_type_hints(tp)
    paths = []
    for name in tp.__struct_fields__:
        inner, path = hints[name], prefix + name
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct) and path not in whole:
            paths.extend(_leaves(inner, whole, path + "."))
        else:
            paths.append(path)
    return paths


def test_every_schema_2_field_has_a_metric() -> None:
    mapped = {metric.v2 for metric in METRICS}
    whole = {metric.v2 for metric in METRICS if metric.kind == "mapping" and metric.v2}
    leaves = _leaves(Summary, whole)
    assert "memory.peak_rss_mib" in leaves and "latency.ttft_ms.p99" in leaves
    assert "memory.rss_timeline" in leaves and "versions" in leaves
    assert sorted(set(leaves) - mapped) == []
    assert sorted(mapped - set(leaves) - {None}) == []  # no row reads a path schema 2 lacks


def test_same_metrics_from_schema_1_schema_2_and_cpp() -> None:
    v1, v2, cpp = reported(CYTHON), reported(V2), reported(CPP)
    assert v2 - v1 == ONLY_IN_V2
    assert v1 - v2 == ONLY_IN_V1
    assert reported(PURE) == v1
    assert cpp == set(CPP_METRICS)
    assert cpp <= v1  # every figure the C++ stack reports, this stack's summaries report too
    view = load_summary(CPP)
    assert {name: view[name] for name in CPP_METRICS} == CPP_METRICS


def test_schema_2_is_read_at_its_nested_paths() -> None:
    raw = json.loads(V2.read_text())
    view = load_summary(V2)
    assert view.schema == 2 and view.unrecognised == ()
    assert view["peak_rss_mib"] == raw["memory"]["peak_rss_mib"]
    assert view["runtime_cpu_seconds"] == raw["cpu"]["runtime_seconds"]
    assert view["runtime_cpu_ms_per_task"] == raw["cpu"]["runtime_ms_per_task"]
    assert view["children_cpu_seconds"] == raw["cpu"]["children_seconds"]
    assert view["concurrency"] == raw["settings"]["concurrency"] == 3
    assert view["model"] == raw["endpoint"]["model"] == "fastagent-sim"
    assert view["sim_started_by_bench"] is raw["endpoint"]["started_by_bench"] is True
    assert view["tasks"] == raw["outcomes"]["tasks"] == 3
    assert view["llm_calls"] == raw["totals"]["llm_calls"]
    assert view["rss_timeline"] == raw["memory"]["rss_timeline"]
    part = raw["latency"]["runtime_overhead_ms"]["p99"]
    assert view["latency.runtime_overhead_ms.p99"] == part is not None
    assert view["latency.llm_overhead_ms.p99"] is None  # schema 1's, not read from schema 2
    assert view.sources["peak_rss_mib"] == "memory.peak_rss_mib"


def test_schema_1_is_read_at_its_flat_keys() -> None:
    raw = json.loads(CYTHON.read_text())
    view = load_summary(CYTHON)
    assert view.schema == 1 and view.unrecognised == ()
    for name in ("peak_rss_mib", "runtime_cpu_seconds", "runtime_cpu_ms_per_task", "tasks"):
        assert view[name] == raw[name]
        assert view.sources[name] == name
    assert view["latency.task_wall_ms.p99"] == raw["latency"]["task_wall_ms"]["p99"]
    assert view["loop_lag_ms.p99"] == raw["loop_lag_ms"]["p99"]


def test_every_value_matches_its_source_key() -> None:
    """Whatever the shape, a value is the file's value at the key it says it came from."""
    for path in (V2, CYTHON, PURE, CPP):
        view = load_summary(path)
        for name, source in view.sources.items():
            assert view[name] == lookup(view.data, source), (path.name, name)


def test_unknown_metric_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no metric 'peak_rss'"):
        load_summary(V2)["peak_rss"]


def test_cpp_mapping_and_units(tmp_path: Path) -> None:
    run = report.load_run(CPP)
    assert run.label == "cpp c=100"
    assert run.view.schema is None
    assert run.view["runtime_cpu_seconds"] is None
    assert run.view["latency.llm_overhead_ms.p99"] is None
    assert run.view.sources["first_attempt_passes"] == "first_attempt_pass"

    other = tmp_path / "cpp_20250101T000000Z_summary.json"
    other.write_text(
        json.dumps(
            {
                "peak_rss_kb": 95232,
                "pass_at_1_pct": 96,
                "wall_time_ms": 126000,
                "task_latency_p99": 2.5,
                "threads_spawned": 100,
                "pool": {"workers": 100, "steals": 7},
            }
        )
    )
    run = report.load_run(other)
    assert run.label == "cpp"  # no runtime key: taken from the file name
    assert run.view["peak_rss_mib"] == 93.0
    assert run.view["pass_at_1"] == pytest.approx(0.96)
    assert run.view["wall_seconds"] == pytest.approx(126.0)
    assert run.view["latency.task_wall_ms.p99"] == pytest.approx(2500.0)
    assert run.view.unrecognised == ("pool", "threads_spawned")
    assert "keys not shown: pool, threads_spawned" in report.render([run])


def test_a_schema_2_field_no_row_reads_is_listed(tmp_path: Path) -> None:
    data = json.loads(V2.read_text())
    data["memory"]["heap_mib"] = 12.5
    data["gpu"] = {"name": "none"}
    path = tmp_path / "python_new_summary.json"
    path.write_text(json.dumps(data))
    assert load_summary(path).unrecognised == ("gpu", "memory.heap_mib")


def test_percent_pass_at_1_is_read_as_percent() -> None:
    assert summaries.resolve({"pass_at_1": 96}, "pass_at_1") == (0.96, "pass_at_1")
    assert summaries.resolve({"pass_at_1": 1.0}, "pass_at_1") == (1.0, "pass_at_1")
    assert summaries.resolve({"pass_pct": 50}, "pass_at_1") == (0.5, "pass_pct")


# ---- the table -------------------------------------------------------------------------------


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
        "E2E − server (schema 1) p99 (ms)",
        "TTFT p50 (ms)",
    ):
        assert rows[label][2] == MISSING, label
    assert rows["E2E − server (schema 1) p99 (ms)"][0] == (
        f"{cy['latency']['llm_overhead_ms']['p99']:.2f}"
    )
    assert "runs differ in concurrency (3, 3, 100)" in out
    assert "keys not shown" not in out  # every key of the three files is known


def test_schema_2_schema_1_and_cpp_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report([str(V2), str(CYTHON), str(CPP), "--label", "v2",
                                 "--label", "v1", "--label", "cpp"], capsys)  # fmt: skip
    assert code == 0, err
    rows = table_rows(out)
    v2 = json.loads(V2.read_text())
    assert rows["metric"] == ["v2", "v1", "cpp"]
    assert rows["tasks"] == ["3", "3", "100"]
    assert rows["peak RSS (MiB)"][0] == f"{v2['memory']['peak_rss_mib']:.1f}"
    assert rows["runtime CPU / task (ms)"][0] == f"{v2['cpu']['runtime_ms_per_task']:.2f}"
    assert rows["runtime CPU / task (ms)"][2] == MISSING
    assert rows["event-loop lag p99 (ms)"][0] == f"{v2['loop_lag_ms']['p99']:.2f}"
    assert rows["endpoint"][:2] == ["sim ttft 50.0 ms, itl 2.0 ms"] * 2
    # rows only schema 2 has
    assert rows["dataset repeats"] == ["1", MISSING, MISSING]
    assert rows["streamed completions"] == ["yes", MISSING, MISSING]
    assert rows["open fds at the end"] == [str(v2["memory"]["open_fds_at_end"]), MISSING, MISSING]
    assert "keys not shown" not in out


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
    assert code == 2 and "--label given 1 time(s) for 2 summaries" in err


def test_rows_nobody_reports_are_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_report([str(CPP)], capsys)
    assert code == 0
    rows = table_rows(out)
    assert "TTFT p50 (ms)" not in rows and "per LLM call" not in out and "endpoint" not in rows
    assert rows["peak RSS (MiB)"] == ["93.0"]


def test_every_row_names_a_metric() -> None:
    names = {metric.name for metric in METRICS}
    assert [r.metric for _, rows in report.SECTIONS for r in rows if r.metric not in names] == []


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a benchmark summary (expected a JSON object, got an array)"),
        ('{"hello": 1}', "not a benchmark summary (none of the keys"),
        ('{"schema_version": 2, "runtime": "python"}', "not a valid schema-2 summary"),
        ('{"schema_version": 3, "runtime": "python"}', "schema_version 3 is not one"),
        ('{"peak_rss_mb": "93 MiB"}', "peak_rss_mb is '93 MiB', expected a number"),
        ('{"tasks": 3, "sim_profile": [1]}', "sim_profile is [1], expected a JSON object"),
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
    assert len(lines) == 1, err
    assert lines[0].startswith("fastagent report: error: ") and expected in lines[0]
    assert str(path) in lines[0]


def test_a_wrong_schema_2_field_is_named(tmp_path: Path) -> None:
    data = json.loads(V2.read_text())
    data["outcomes"]["tasks"] = "three"
    path = tmp_path / "python_summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=r"Expected `int`, got `str` - at `\$.outcomes.tasks`"):
        load_summary(path)


def test_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report([str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err


def test_bad_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report([str(CYTHON), "--format", "html"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "fastagent report: error: argument --format: invalid choice: 'html' "
        "(choose from 'text', 'markdown') (see --help)"
    ]


# ---- charts ----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (fastagent[plot]) not installed")
def test_plot_writes_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "plots"
    code, out, err = run_report([str(V2), *FIXTURES, "--plot", str(out_dir)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["latency_percentiles.png", "overhead_per_call.png", "rss_timeline.png"]
    for path in out_dir.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
    assert "python/cython c=3" in out  # the table is still printed
    assert f"wrote {out_dir / 'rss_timeline.png'}" in err


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    code, out, err = run_report([*FIXTURES, "--plot", str(tmp_path / "p")], capsys)
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "fastagent report: error: --plot: matplotlib is not installed "
        "(pip install 'fastagent[plot]')"
    ]
    assert not (tmp_path / "p").exists()


def test_plot_into_a_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    code, out, err = run_report([str(CYTHON), "--plot", str(blocker / "plots")], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastagent report: error: --plot: cannot create")


# ---- what imports what -----------------------------------------------------------------------

ANALYSIS_MODULES = sorted(
    f"fastagent.analysis.{m.name}" for m in pkgutil.iter_modules(fastagent.analysis.__path__)
)


def _imports_after(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bench_never_imports_analysis_or_matplotlib() -> None:
    assert [
        f"fastagent.analysis.{m}"
        for m in (
            "children", "compare", "compare_run", "compare_schema", "compare_table", "idle",
            "plots", "proctree", "report", "samples", "summaries", "sweep", "tables",
        )
    ] == ANALYSIS_MODULES  # fmt: skip
    unwanted = ["matplotlib", "fastagent.analysis", *ANALYSIS_MODULES]
    check = f"bad = [m for m in {unwanted!r} if m in sys.modules]; assert not bad, bad"
    _imports_after(f"import sys, fastagent.cli, fastagent.runner; {check}")
    # Building the whole CLI and parsing a bench command line must not import them either,
    # however `report` and `sweep` are wired into the parser.
    _imports_after(
        "import sys; from fastagent.cli import build_parser; "
        f"build_parser().parse_args(['bench', '--tasks', '1']); import fastagent.runner; {check}"
    )


def test_analysis_imports_matplotlib_only_to_draw() -> None:
    _imports_after(
        f"import sys; [__import__(m) for m in {ANALYSIS_MODULES!r}]; "
        "assert 'matplotlib' not in sys.modules"
    )


def test_wired_into_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "report", str(V2), *FIXTURES, "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| metric | python/cython c=3 | python/cython c=3 #2 |")
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "report", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
