"""`fastagent sweep`: one bench process per concurrency level against one simulated endpoint."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from fastagent.analysis import sweep
from fastagent.dataset import default_dataset_path, load_tasks

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fastagent sweep")
    sweep.add_arguments(parser)
    return parser.parse_args(argv)


def test_parse_levels() -> None:
    assert sweep.parse_levels("1,10,100,1000") == [1, 10, 100, 1000]
    assert sweep.parse_levels("100, 1,10,1,") == [1, 10, 100]
    for bad in ("", "1,x", "0,1", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_levels(bad)


def test_bad_levels_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--concurrency", "1,zero"])
    assert exc.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_tasks_for_level() -> None:
    assert sweep.tasks_for_level(1, 100) == 100
    assert sweep.tasks_for_level(1000, 100) == 1000
    assert sweep.tasks_for_level(2, 2) == 2


def test_repeat_tasks_suffixes_copies() -> None:
    tasks = [{"id": "A", "spec": "a", "test": "ta"}, {"id": "B", "spec": "b", "test": "tb"}]
    out = sweep.repeat_tasks(tasks, 5)
    assert [t["id"] for t in out] == ["A", "B", "A#1", "B#1", "A#2"]
    assert [t["spec"] for t in out] == ["a", "b", "a", "b", "a"]
    assert sweep.repeat_tasks(tasks, 1) == tasks[:1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sim-profile", "nonsense=1"], "--sim-profile: unknown profile key"),
        (["--dataset", "/nonexistent/tasks.json"], "dataset not found"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    args = parse(["--concurrency", "1", "--out", str(tmp_path / "out"), *argv])
    assert sweep.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastagent sweep: error: ") and expected in err[0]


@pytest.mark.slow
def test_small_sweep_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "sweep"
    args = parse(
        ["--concurrency", "2,1", "--tasks-per-level", "2", "--out", str(out_dir),
         "--sim-profile", "ttft_ms=5,itl_ms=0"]
    )  # fmt: skip
    assert sweep.main(args) == 0
    out = capsys.readouterr().out

    lines = out.splitlines()
    header = lines[1].split("  ")
    assert [h.strip() for h in header if h.strip()] == [h for _, h in sweep.COLUMNS]
    body = [line.split() for line in lines[3:] if line.strip()]
    assert [row[0] for row in body] == ["1", "2"]  # agents, ascending
    assert [row[1] for row in body] == ["2", "2"]  # tasks
    assert all(row[-1] == "2/2" for row in body)  # passed

    data = json.loads((out_dir / "sweep.json").read_text())
    assert data["interrupted"] is False
    assert data["sim_profile"]["ttft_ms"] == 5.0
    assert [level["agents"] for level in data["levels"]] == [1, 2]
    for level in data["levels"]:
        summary = json.loads(Path(level["summary"]).read_text())
        assert Path(level["summary"]).parent == out_dir / f"c{level['agents']}"
        assert summary["settings"]["concurrency"] == level["agents"] == level["concurrency"]
        assert summary["outcomes"]["tasks"] == 2 and summary["outcomes"]["passed"] == 2
        assert summary["endpoint"]["base_url"] == data["base_url"]  # one endpoint for every level
        assert summary["endpoint"]["model"] == "fastagent-sim"
        assert level["peak_rss_mib"] == summary["memory"]["peak_rss_mib"] > 0
        assert level["llm_overhead_p99_ms"] == summary["latency"]["llm_overhead_ms"]["p99"]
        assert level["exit_code"] == 0
        assert not (out_dir / f"c{level['agents']}" / "work").exists()
    assert data["bench_dataset"] == str(default_dataset_path())  # 2 tasks: no repeat needed

    md = (out_dir / "sweep.md").read_text()
    assert "| agents | tasks | peak RSS MiB |" in md and "| 2 | 2 |" in md
    if HAVE_MATPLOTLIB:
        assert (out_dir / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert not (out_dir / "sweep.png").exists()


@pytest.mark.slow
def test_sweep_repeats_the_dataset_beyond_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3-task dataset and 5 agents: the bench gets the dataset repeated with #k ids."""
    base = tmp_path / "three.json"
    rows = json.loads(default_dataset_path().read_text())[:3]
    base.write_text(json.dumps(rows))
    out_dir = tmp_path / "sweep"
    args = parse(
        ["--concurrency", "5", "--tasks-per-level", "1", "--dataset", str(base),
         "--out", str(out_dir), "--sim-profile", "ttft_ms=5,itl_ms=0"]
    )  # fmt: skip
    assert sweep.main(args) == 0
    repeated = out_dir / "dataset_5.json"
    assert [t.id for t in load_tasks(repeated)] == [
        rows[0]["id"], rows[1]["id"], rows[2]["id"], rows[0]["id"] + "#1", rows[1]["id"] + "#1",
    ]  # fmt: skip
    data = json.loads((out_dir / "sweep.json").read_text())
    (level,) = data["levels"]
    summary = json.loads(Path(level["summary"]).read_text())
    assert summary["settings"]["concurrency"] == 5 and summary["outcomes"]["tasks"] == 5
    assert summary["outcomes"]["passed"] == 5  # copies get their original's (here: right) answers
    assert summary["totals"]["peak_agents_in_flight"] == 5
