"""``fastagent bench --check`` in-process: one line per check, exit 1 when one fails."""

from __future__ import annotations

from pathlib import Path

from fastagent.check import run_checks
from fastagent.config import make_config


def checks(**values: object) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run_checks(make_config(**values), lines.append), lines


def test_a_ready_machine_passes_every_check() -> None:
    code, lines = checks()
    assert code == 0, lines
    statuses = [line.split()[0] for line in lines]
    assert statuses.count("FAIL") == 0 and statuses.count("ok") >= 4, lines
    text = "\n".join(lines)
    assert "imports pytest" in text and "100 tasks" in text and "sha256" in text
    assert "built-in simulated endpoint" in text and "fastagent-sim" in text


def test_each_failure_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tasks.json").write_text("[]")
    code, lines = checks(
        python="no-such-python3", dataset=str(tmp_path / "tasks.json"),
        base_url="http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert code == 1
    failures = [line for line in lines if line.startswith("FAIL")]
    assert len(failures) == 3, lines
    assert "not on PATH" in failures[0] and "no tasks" in failures[1]
    assert "cannot reach" in failures[2]


def test_a_bad_simulator_profile_fails_its_check() -> None:
    code, lines = checks(sim_profile="p_first=2")
    assert code == 1
    assert any(line.startswith("FAIL") and "p_first" in line for line in lines), lines


def test_a_model_the_endpoint_does_not_list_fails() -> None:
    code, lines = checks(model="gpt-9")
    assert code == 1 and any("does not list model 'gpt-9'" in line for line in lines), lines
