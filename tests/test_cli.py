"""`fastagent bench` as a user runs it: a real subprocess against the simulated endpoint."""

from __future__ import annotations

import csv
import enum
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from _child import VENV_BIN, child_env

from fastagent.cli import _Flag, _unwrap, bench_flags, build_parser, config_from_args
from fastagent.cli import main as cli_main
from fastagent.dataset import default_dataset_path, default_solutions_path
from fastagent.schema import COLUMNS, Summary
from fastagent.sim.data import plan
from fastagent.sim.profile import SimProfile


def fastagent(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "fastagent", *args],
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def expected_outcomes(n: int) -> dict[str, str]:
    ids = [row["id"] for row in msgspec.json.decode(default_solutions_path().read_bytes())]
    classes = plan(SimProfile(), ids)
    wanted = [row["id"] for row in msgspec.json.decode(default_dataset_path().read_bytes())[:n]]
    return {task_id: classes[task_id] for task_id in wanted}


@pytest.mark.slow
def test_bench_ten_tasks_end_to_end(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    proc = fastagent(
        "bench", "--tasks", "10", "--concurrency", "10", "--results-dir", "out",
        "--trace", str(trace), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "python / cython / uvloop" in proc.stdout
    csv_files = sorted((tmp_path / "out").glob("python_*.csv"))
    assert len(csv_files) == 1
    summary_file = csv_files[0].with_name(csv_files[0].stem + "_summary.json")
    with open(csv_files[0], newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = {row["task_id"]: row for row in reader}
    outcomes = expected_outcomes(10)
    assert set(rows) == set(outcomes)
    for task_id, klass in outcomes.items():
        row = rows[task_id]
        if klass == "first":
            assert (row["status"], row["attempts"], row["first_attempt_pass"]) == (
                "passed", "1", "True"
            ), row  # fmt: skip
        elif klass == "recover":
            assert (row["status"], row["attempts"]) == ("passed", "2"), row
        else:
            assert (row["status"], row["attempts"]) == ("failed", "4"), row
        assert float(row["wall_s"]) >= float(row["model_s"]) > 0
        assert float(row["ttft_ms"]) > 0

    summary = msgspec.json.decode(summary_file.read_bytes(), type=Summary)
    passed = sum(k != "wrong" for k in outcomes.values())
    assert summary.schema_version == 2
    assert (summary.runtime, summary.implementation, summary.event_loop) == (
        "python", "cython", "uvloop"
    )  # fmt: skip
    endpoint = summary.endpoint
    assert endpoint.simulated and endpoint.started_by_bench and endpoint.model == "fastagent-sim"
    assert endpoint.sim_profile is not None and endpoint.sim_profile["p_first"] == 0.87
    o = summary.outcomes
    assert (o.tasks, o.passed, o.failed, o.errors) == (10, passed, 10 - passed, 0)
    assert o.first_attempt_passes == sum(k == "first" for k in outcomes.values())
    assert o.recovered == sum(k == "recover" for k in outcomes.values())
    assert o.pass_at_1 == passed / 10
    assert 0 < summary.memory.peak_rss_mib < 200
    wall = summary.latency.task_wall_ms
    assert wall.count == 10 and wall.p50 is not None and wall.p99 is not None
    assert wall.p50 <= wall.p99
    assert summary.latency.ttft_ms.count == summary.totals.llm_calls
    assert summary.cpu.runtime_seconds > 0 and summary.cpu.children_seconds > 0
    assert summary.csv == str(Path("out") / csv_files[0].name)
    # the default lean HTTP client: aiohttp is never imported by the measured process
    assert summary.settings.http_client == "wire"
    assert summary.versions.libraries["aiohttp"] is None
    assert summary.versions.libraries["uvloop"] and summary.versions.pytest_in_tests
    events = [json.loads(line)["event"] for line in trace.read_text().splitlines()]
    assert events.count("request") == summary.totals.llm_calls
    assert events.count("tool_end") == sum(int(r["attempts"]) for r in rows.values())
    assert not (tmp_path / "results" / "runs").exists() or not any(
        (tmp_path / "results" / "runs").iterdir()
    )


@pytest.mark.slow
def test_pure_python_flag_and_environment(tmp_path: Path) -> None:
    proc = fastagent(
        "bench", "--tasks", "2", "--pure-python", "--results-dir", "out", cwd=tmp_path,
        env={"BENCH_CONCURRENCY": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "python / pure / uvloop" in proc.stdout
    raw = next((tmp_path / "out").glob("*_summary.json")).read_bytes()
    summary = msgspec.json.decode(raw, type=Summary)
    assert summary.implementation == "pure" and summary.settings.concurrency == 2


def test_check_reports_each_item(tmp_path: Path) -> None:
    proc = fastagent("bench", "--check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "imports pytest" in out and "100 tasks" in out and "sha256" in out
    assert "compiled Cython module loaded" in out and "fastagent-sim" in out


def test_check_fails_for_unreachable_endpoint(tmp_path: Path) -> None:
    proc = fastagent("bench", "--check", "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "cannot reach" in proc.stdout


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--concurrency", "0"], {}, "an integer >= 1"),
        (["--tasks", "many"], {}, "an integer >= 1"),
        ([], {"BENCH_CONCURRENCY": "lots"}, "BENCH_CONCURRENCY"),
        (["--dataset", "missing.json"], {}, "dataset not found"),
        (["--base-url", "localhost:8000"], {}, "must start with http"),
        (["--base-url", "http://127.0.0.1:9/v1"], {}, "cannot reach"),
        (["--sim-profile", "ttft=5"], {}, "ttft"),
        (["--python", "no-such-python3"], {}, "not on PATH"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    proc = fastagent("bench", "--results-dir", "out", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert words in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1
    assert not list(tmp_path.glob("out/*.json"))


def test_malformed_dataset(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[{"id": "a", "spec": "x"}]')
    proc = fastagent("bench", "--dataset", "bad.json", cwd=tmp_path)
    assert proc.returncode == 2 and "test" in proc.stderr and "Traceback" not in proc.stderr


def test_module_and_console_script_agree() -> None:
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "fastagent"), "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("fastagent ")


def test_unwritable_results_dir(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    proc = fastagent("bench", "--tasks", "1", "--results-dir", "blocker/out", cwd=tmp_path)
    assert proc.returncode == 2 and "results directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_openai_endpoint(tmp_path: Path) -> None:
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        proc = fastagent("bench", "--tasks", "1", "--base-url", url, cwd=tmp_path)
    finally:
        server.shutdown()
    assert proc.returncode == 2 and "not an OpenAI-compatible" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("results/raw/*.json"))


# ---- every flag and variable through one validation path --------------------------------------


def _bad_values(flag: _Flag) -> list[str]:
    """Values of ``flag`` that must be refused, from its type's own bounds."""
    base, metas, _ = _unwrap(flag.type)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return ["bogus", ""]
    if base is int:
        values = ["x", "1.5", "1_0", "0x5", ""]
        values += [str(int(m.ge) - 1) for m in metas if m.ge is not None]
        return values
    if base is float:
        values = ["x", "nan", ""]
        values += ["inf"] if any(m.le is not None for m in metas) else []
        values += [str(m.gt) for m in metas if m.gt is not None]
        values += [str(m.ge - 1) for m in metas if m.ge is not None]
        return values
    # strings: empty where they must not be; what else is wrong is found where they are used
    return [""] if any(m.min_length for m in metas) else []


#: Strings that pass their type but cannot be used: found before the run starts.
UNUSABLE = {
    "--base-url": [
        "localhost:8000",
        "ftp://host/v1",
        "http://[::1",
        "http://:80/v1",
        "http://h:0/v1",
    ],
    "--dataset": ["/nonexistent/tasks.json"],
    "--python": ["no-such-python3"],
    "--results-dir": ["/proc/no/such/dir"],
    "--work-dir": ["/proc/no/such/dir"],
    "--resume": ["/nonexistent/run.csv"],
    "--trace": ["/proc/x/y"],
    "--sim-profile": ["ttft=5", "p_first=2", "faults=gremlins"],
}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for flag in bench_flags():
        if _unwrap(flag.type)[0] is bool:
            continue  # a switch takes no value
        cases += [(flag.flag, value) for value in _bad_values(flag)]
        cases += [(flag.flag, value) for value in UNUSABLE.get(flag.flag, [])]
    return cases


def test_every_flag_with_a_value_is_walked() -> None:
    flags = {flag for flag, _ in _cases()}
    valued = {f.flag for f in bench_flags() if _unwrap(f.type)[0] is not bool}
    assert flags == valued and len(valued) >= 25


@pytest.mark.parametrize(("flag", "value"), _cases())
def test_a_bad_flag_value_is_one_line_and_exit_2(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for name in ("LLM_BASE_URL", "LLM_MODEL", "BENCH_DATASET", "BENCH_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    try:
        code = cli_main(["bench", "--tasks", "1", "--results-dir", "out", f"{flag}={value}"])
    except SystemExit as exc:  # argparse refused it
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("out/*"))  # nothing written


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BENCH_CONCURRENCY", "0"), ("BENCH_CONCURRENCY", "lots"), ("LLM_BASE_URL", "http://[::1"),
        ("BENCH_DATASET", "/nonexistent.json"), ("BENCH_PYTHON", "no-such-python3"),
    ],
)  # fmt: skip
def test_a_bad_environment_value_is_one_line_and_exit_2(
    name: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    assert cli_main(["bench", "--tasks", "1", "--results-dir", "out"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and (name in lines[0] or value in lines[0]), lines


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CONCURRENCY", "7")
    monkeypatch.setenv("LLM_MODEL", "from-env")
    args = build_parser("bench").parse_args(["bench", "--concurrency", "3"])
    config = config_from_args(args)
    assert config.concurrency == 3 and config.model == "from-env"


def test_help_shows_each_default_from_config() -> None:
    text = build_parser("bench")._subparsers._group_actions[0].choices["bench"].format_help()  # type: ignore[union-attr]
    for flag in bench_flags():
        assert flag.flag in text
        if flag.default not in (None, "", True, False):
            assert f"(default {flag.default})" in " ".join(text.split()), flag.flag
