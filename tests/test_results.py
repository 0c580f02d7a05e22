"""Results files: CSV rows written and read back typed, the summary written atomically."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from _samples import sample_summary

from fastagent.results import (
    CsvWriter,
    ResultPaths,
    format_summary,
    nearest_rank,
    read_rows,
    write_json_atomic,
)
from fastagent.schema import COLUMNS, TaskRow, TaskStatus


def row(task_id: str = "HumanEval/0", **values: object) -> TaskRow:
    fields: dict[str, object] = {
        "task_id": task_id, "status": TaskStatus.PASSED, "reason": "", "attempts": 1,
        "retries": 0, "first_attempt_pass": True, "wall_s": 1.5, "model_s": 1.0, "tool_s": 0.4,
        "queued_s": 0.05, "overhead_s": 0.05, "agent_wait_s": 0.0, "llm_calls": 1,
        "llm_retries": 0, "prompt_tokens": 100, "completion_tokens": 50, "ttft_ms": 52.5,
        "tool_spawn_ms": None, "test_exit": "exit_0", "test_cpu_s": 0.45,
    }  # fmt: skip
    fields.update(values)
    return TaskRow(**fields)  # type: ignore[arg-type]


def test_rows_round_trip_typed(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    rows = [row(), row("HumanEval/1", status=TaskStatus.ERROR, reason="llm: x, y", ttft_ms=None)]
    with CsvWriter(path) as writer:
        for r in rows:
            writer.write(r)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    back = read_rows(path)
    assert back == rows
    assert back[1].status is TaskStatus.ERROR and back[1].ttft_ms is None


def test_appending_keeps_one_header(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    for task_id in ("a", "b"):
        with CsvWriter(path) as writer:
            writer.write(row(task_id))
    assert [r.task_id for r in read_rows(path)] == ["a", "b"]
    assert path.read_text().count("task_id,") == 1


def test_a_row_of_the_wrong_width_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with CsvWriter(path) as writer:
        writer.write(row())
    text = path.read_text().splitlines()
    short = text[1].rsplit(",", 1)[0]  # the last column missing
    path.write_text(f"{text[0]}\n{text[1]}\n{short}\n")
    with pytest.raises(ValueError, match=r"line 3: 19 fields where the header has 20"):
        read_rows(path)


def test_a_value_of_the_wrong_type_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with CsvWriter(path) as writer:
        writer.write(row())
    header, line = path.read_text().splitlines()
    path.write_text(f"{header}\n{line.replace('passed', 'won', 1)}\n")
    with pytest.raises(ValueError, match=r"line 2: .*status"):
        read_rows(path)


def test_a_foreign_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a fastagent results CSV"):
        read_rows(path)


def test_result_paths_never_overwrite(tmp_path: Path) -> None:
    first = ResultPaths.new(tmp_path)
    first.csv.write_text("x")
    second = ResultPaths.new(tmp_path)
    assert second.csv != first.csv and second.stamp.startswith(first.stamp)
    assert second.summary == second.csv.with_name(f"{second.stamp}_summary.json")


def test_json_is_written_atomically_and_decodes_to_the_schema(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    summary = sample_summary()
    write_json_atomic(target, summary)
    assert not list(tmp_path.glob(".*.tmp"))
    assert msgspec.json.decode(target.read_bytes(), type=type(summary)) == summary


def test_format_summary_names_the_headline_figures() -> None:
    text = format_summary(sample_summary())
    assert "tasks 3   passed 2 (pass@1 66.7%)" in text
    assert "peak RSS 30.5 MiB" in text and "errors 0" in text
    assert "INTERRUPTED" not in text


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 50) == 50.0 and nearest_rank(values, 99) == 99.0
    assert nearest_rank(values, 100) == 100.0 and nearest_rank([7.0], 1) == 7.0
