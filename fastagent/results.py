"""Where results land: one CSV row per task, flushed as each task ends, and the summary JSON.

>>> paths = ResultPaths.for_csv("results/raw/python_20261201T000000Z.csv")
>>> paths.summary.name, paths.stamp
('python_20261201T000000Z_summary.json', 'python_20261201T000000Z')

The columns and keys are :mod:`fastagent.schema`'s; a results CSV is read back as typed
rows with :func:`read_rows`, which refuses a file of another schema or a row of the wrong
width.
"""

from __future__ import annotations

import csv
import io
import os
import time
import typing
from pathlib import Path
from typing import Any

import msgspec

from .schema import COLUMNS, Distribution, Latency, Summary, TaskRow

__all__ = [
    "CsvWriter",
    "ResultPaths",
    "format_summary",
    "nearest_rank",
    "read_rows",
    "write_json_atomic",
]


class ResultPaths(msgspec.Struct, frozen=True):
    """The CSV and summary JSON of one run, named ``<prefix>_<UTC timestamp>``."""

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


#: The columns whose empty cell means null (every other empty cell is an empty string).
_NULLABLE = frozenset(
    name for name, tp in typing.get_type_hints(TaskRow).items() if type(None) in typing.get_args(tp)
)


def _cell(value: Any) -> Any:
    return "" if value is None else value


class CsvWriter:
    """Appends TaskRows, flushing each one so a crash loses no finished task."""

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

    def write(self, row: TaskRow) -> None:
        self._writer.writerow([_cell(getattr(row, c)) for c in COLUMNS])
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


def read_rows(path: str | os.PathLike[str]) -> list[TaskRow]:
    """The complete rows of a results CSV (a half-written last row is left out).

    Raises ValueError, naming the file and line, when the header is not this schema's, a
    row has another number of fields, or a value does not fit its column's type.
    """
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if tuple(header or ()) != COLUMNS:
        raise ValueError(f"{path} is not a fastagent results CSV (its header differs)")
    rows = []
    for cells in reader:
        line = reader.line_num
        if len(cells) != len(COLUMNS):
            raise ValueError(
                f"{path}, line {line}: {len(cells)} fields where the header has {len(COLUMNS)}"
            )
        values = {
            c: None if v == "" and c in _NULLABLE else v
            for c, v in zip(COLUMNS, cells, strict=True)
        }
        try:
            rows.append(msgspec.convert(values, TaskRow, strict=False))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}, line {line}: {exc}") from None
    return rows


def nearest_rank(values: list[float], q: float) -> float | None:
    """Exact nearest-rank percentile.

    >>> nearest_rank([3.0, 1.0, 2.0, 4.0], 50), nearest_rank([], 50)
    (2.0, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(index)]


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` (a Struct, or anything msgspec encodes) as indented JSON, atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
    os.replace(tmp, target)


def format_summary(s: Summary) -> str:
    """The few lines a person reads at the end of a run."""
    where = "simulated" if s.endpoint.simulated else s.endpoint.base_url
    o, cpu, lat = s.outcomes, s.cpu, s.latency
    lines = [
        f"fastagent bench: {s.runtime} / {s.implementation} / {s.event_loop} — "
        f"model {s.endpoint.model} ({where}), concurrency {s.settings.concurrency}",
        f"  tasks {o.tasks}   passed {o.passed} (pass@1 {o.pass_at_1 * 100:.1f}%)   "
        f"first-attempt {o.first_attempt_passes}   recovered {o.recovered}   "
        f"failed {o.failed}   errors {o.errors}   avg retries {o.avg_retries:.2f}",
        f"  wall {s.wall_seconds:.1f} s   peak RSS {s.memory.peak_rss_mib:.1f} MiB   "
        f"runtime CPU {cpu.runtime_seconds:.2f} s ({cpu.runtime_ms_per_task or 0:.1f} ms/task)   "
        f"children CPU {cpu.children_seconds:.1f} s",
    ]
    if lat.llm_e2e_ms.count:
        lines.append(
            f"  LLM calls {s.totals.llm_calls}   TTFT p50 {_ms(lat.ttft_ms.p50)}   "
            f"E2E p50 {_ms(lat.llm_e2e_ms.p50)}   loop lag p99 {_ms(s.loop_lag_ms.p99)}"
        )
        lines.append(_call_parts(lat))
    if s.machine is not None and s.machine.busy:
        lines.append(
            f"  BUSY MACHINE: other work used {s.machine.others_cpu_share * 100:.0f}% of the "
            f"{s.machine.cores} cores during the run (load {s.machine.load_before:.1f} -> "
            f"{s.machine.load_after:.1f}); its timings and CPU figures are suspect"
        )
    if s.interrupted:
        lines.append("  INTERRUPTED: the summary covers the tasks that finished")
    return "\n".join(lines)


def _call_parts(lat: Latency) -> str:
    """Where a call's time went: the runtime's share beside the endpoint's queue."""
    if not lat.runtime_overhead_ms.count:
        return (
            f"  per call: pre-send p50 {_ms(lat.pre_send_ms.p50)}; runtime overhead, endpoint "
            "queue and server time unknown (the endpoint reports no timing)"
        )
    return (
        f"  per call p50/p99: runtime overhead {_pair(lat.runtime_overhead_ms)}   "
        f"endpoint queue {_pair(lat.endpoint_queue_ms)}   server {_pair(lat.server_ms)}"
    )


def _pair(d: Distribution) -> str:
    return f"{_num(d.p50)}/{_num(d.p99)} ms"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"
