"""`fastagent bench` as a user runs it: a real subprocess against the simulated endpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from _child import VENV_BIN, child_env

from fastagent.dataset import default_dataset_path, default_solutions_path
from fastagent.schema import COLUMNS, Summary
from fastagent.sim.app import SimProfile, plan


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
    assert summary.settings.http_client == "wire" and summary.versions.aiohttp is None
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
