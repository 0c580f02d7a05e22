"""Where results land: one CSV row per task (flushed as each task ends) and a summary JSON.

>>> paths = ResultPaths.new("results/raw")          # results/raw/python_<ts>.csv + _summary.json
>>> with CsvWriter(paths.csv) as rows:               # doctest: +SKIP
...     rows.write(task_result)

Every column and key is documented in docs/results.md; SCHEMA_VERSION changes whenever
one is renamed or removed.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from .agent import TaskResult

SCHEMA_VERSION = 1
COLUMNS: tuple[str, ...] = TaskResult.__struct_fields__


class ResultPaths(msgspec.Struct, frozen=True):
    """The CSV and summary JSON of one run, named ``python_<UTC timestamp>``."""

    csv: Path
    summary: Path
    stamp: str

    @classmethod
    def new(cls, results_dir: str | os.PathLike[str], prefix: str = "python") -> ResultPaths:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = Path(results_dir)
        csv_path = base / f"{prefix}_{stamp}.csv"
        n = 1
        while csv_path.exists():
            csv_path = base / f"{prefix}_{stamp}-{n}.csv"
            n += 1
        return cls.for_csv(csv_path)

    @classmethod
    def for_csv(cls, csv_path: str | os.PathLike[str]) -> ResultPaths:
        path = Path(csv_path)
        return cls(path, path.with_name(f"{path.stem}_summary.json"), path.stem)


class CsvWriter:
    """Appends TaskResult rows, flushing each one so a crash loses no finished task."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            _drop_partial_row(self.path)
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(COLUMNS)
            self._file.flush()

    def write(self, result: TaskResult) -> None:
        self._writer.writerow(
            ["" if v is None else v for v in (getattr(result, c) for c in COLUMNS)]
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_row(path: Path) -> None:
    """Cut a last row that a crash left half-written, so appending starts on a fresh line."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The complete rows of a results CSV as dicts (a half-written last row is left out).

    Raises ValueError when the file is not a results CSV of this schema.
    """
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{path} is not a fastagent results CSV (its header differs)")
    return list(reader)


def outcome_counts(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """passed / first-attempt / recovered / failed / errors / avg retries from result rows."""
    rows = list(rows)
    passed = sum(r["status"] == "passed" for r in rows)
    first = sum(str(r["first_attempt_pass"]) in ("True", "true", "1") for r in rows)
    retries = [int(r["retries"]) for r in rows]
    total = len(rows)
    return {
        "tasks": total,
        "passed": passed,
        "pass_at_1": round(passed / total, 4) if total else 0.0,
        "first_attempt_passes": first,
        "recovered": passed - first,
        "failed": sum(r["status"] == "failed" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "avg_retries": round(sum(retries) / total, 4) if total else 0.0,
    }


def nearest_rank(values: list[float], q: float) -> float | None:
    """Exact nearest-rank percentile of a small list (task latencies)."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(index)]


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON through a temp file and os.replace."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
    os.replace(tmp, target)
