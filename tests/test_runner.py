"""The runner in-process: inputs checked before anything starts, the summary built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from _samples import sample_summary
from test_results import row

from fastagent.config import Config, VerifyMode, make_config
from fastagent.errors import DatasetError, RunError
from fastagent.results import CsvWriter, read_rows
from fastagent.runner import Tally, exit_code, prepare, run_bench
from fastagent.schema import TaskStatus


def quiet(line: str) -> None:
    pass


def test_tally_counts_outcomes() -> None:
    tally = Tally()
    tally.add(row("a"))
    tally.add(row("b", status=TaskStatus.PASSED, first_attempt_pass=False, attempts=2, retries=1))
    tally.add(row("c", status=TaskStatus.FAILED, first_attempt_pass=False, attempts=4, retries=3))
    tally.add(row("d", status=TaskStatus.ERROR, first_attempt_pass=False))
    o = tally.outcomes()
    assert (o.tasks, o.passed, o.first_attempt_passes, o.recovered) == (4, 2, 1, 1)
    assert (o.failed, o.errors, o.pass_at_1, o.avg_retries) == (1, 1, 0.5, 1.0)
    assert Tally().outcomes().pass_at_1 == 0.0


def test_exit_code() -> None:
    assert exit_code(sample_summary()) == 0
    assert exit_code(sample_summary(interrupted=True, interrupted_by_signal=15)) == 143
    all_errors = sample_summary()
    all_errors.outcomes.errors = all_errors.outcomes.tasks
    assert exit_code(all_errors) == 1


def test_prepare_checks_every_input_before_anything_starts(tmp_path: Path) -> None:
    config = make_config(results_dir=str(tmp_path / "out"), tasks=2)
    plan = prepare(config, quiet)
    assert [t.id for t in plan.tasks] == ["HumanEval/0", "HumanEval/1"]
    assert plan.paths.csv.parent == tmp_path / "out" and plan.work_dir.is_dir()
    assert plan.pytest_version and plan.trace is None and plan.resumed == []
    with pytest.raises(DatasetError, match="dataset not found"):
        prepare(make_config(dataset=str(tmp_path / "none.json")), quiet)
    with pytest.raises(RunError, match="cannot write trace file"):
        prepare(make_config(results_dir=str(tmp_path / "o2"), trace="/proc/x/y"), quiet)


def test_repeat_multiplies_the_tasks(tmp_path: Path) -> None:
    plan = prepare(make_config(results_dir=str(tmp_path / "out"), tasks=2, repeat=3), quiet)
    assert [t.id for t in plan.tasks][-2:] == ["HumanEval/0#2", "HumanEval/1#2"]
    assert len(plan.tasks) == 6


def test_resume_takes_the_first_row_of_each_task_and_skips_them(tmp_path: Path) -> None:
    csv_path = tmp_path / "python_x.csv"
    with CsvWriter(csv_path) as writer:
        writer.write(row("HumanEval/1"))
        writer.write(row("HumanEval/1", status=TaskStatus.FAILED))  # a duplicate: not counted
    plan = prepare(make_config(tasks=3, resume=str(csv_path), work_dir=str(tmp_path)), quiet)
    assert [t.id for t in plan.tasks] == ["HumanEval/0", "HumanEval/2"]
    assert [r.status for r in plan.resumed] == [TaskStatus.PASSED]
    assert plan.paths.csv == csv_path


def test_resume_refuses_rows_of_another_workload(tmp_path: Path) -> None:
    csv_path = tmp_path / "python_x.csv"
    with CsvWriter(csv_path) as writer:
        writer.write(row("HumanEval/7"))
    with pytest.raises(RunError, match="not in this run's tasks"):
        prepare(make_config(tasks=3, resume=str(csv_path), work_dir=str(tmp_path)), quiet)


@pytest.mark.slow
def test_run_bench_in_process_against_the_simulator(tmp_path: Path) -> None:
    config = Config(
        tasks=4, concurrency=4, verify=VerifyMode.TRIVIAL, results_dir=str(tmp_path / "out"),
        sim_profile="ttft_ms=5,itl_ms=0", progress=False,
    )  # fmt: skip
    lines: list[str] = []
    outcome = run_bench(config, log=lines.append)
    summary = outcome.summary
    assert outcome.exit_code == 0 and summary.outcomes.tasks == 4
    assert summary.endpoint.started_by_bench and summary.endpoint.simulated
    assert summary.settings.verify == "trivial" and summary.settings.concurrency == 4
    rows = read_rows(outcome.paths.csv)
    assert sorted(r.task_id for r in rows) == [f"HumanEval/{i}" for i in range(4)]
    assert summary.outcomes.passed == sum(r.status is TaskStatus.PASSED for r in rows)
    assert summary.latency.task_wall_ms.count == 4
    assert summary.memory.live_children_at_end == 0
    assert outcome.paths.summary.is_file() and any("simulated endpoint" in x for x in lines)
