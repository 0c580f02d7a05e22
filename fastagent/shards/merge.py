"""A sharded run's results made one: the merged CSV (a ``shard`` column added) and summary.

The merged CSV has :data:`MERGED_COLUMNS`: a results CSV's columns and then ``shard``,
the index of the shard that ran the task; every task once, appended and flushed as the
coordinator receives each row. The merged summary is one :class:`~fastagent.schema.Summary`:

* outcomes from the merged rows (every task once, earlier invocations' included);
* latency distributions computed exactly over the raw samples of every shard
  (:mod:`fastagent.analysis.samples`: nearest-rank over all values; ITL's histograms
  merged bucket by bucket), never from the shards' own percentiles;
* counts and CPU summed over the shards, peak RSS both max and summed, memory, loop lag
  and settings the largest shard's (see ``Sharding``'s docstring).
"""

from __future__ import annotations

import csv
import io
import os
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..analysis.samples import Samples, exact, merge, read_samples
from ..errors import ReportError
from ..schema import (
    COLUMNS,
    Cpu,
    Distribution,
    Latency,
    LoopLag,
    Outcomes,
    Summary,
    TaskRow,
    TaskStatus,
    Throughput,
    Totals,
)
from ..telemetry import SAMPLE, SAMPLES_MAGIC, TRAILER, Histogram

__all__ = [
    "MERGED_COLUMNS",
    "MergedCsv",
    "MergedRow",
    "Parts",
    "merge_latency",
    "merged_parts",
    "outcomes",
    "read_merged",
    "read_samples_lenient",
    "row_of",
]

#: The merged CSV's header: a results CSV's columns, then the shard that ran the task.
MERGED_COLUMNS: tuple[str, ...] = (*COLUMNS, "shard")

_NULLABLE = frozenset(
    name for name, tp in typing.get_type_hints(TaskRow).items() if type(None) in typing.get_args(tp)
)


class MergedRow(msgspec.Struct, frozen=True):
    row: TaskRow
    shard: int


def row_of(cells: Sequence[str], where: str) -> TaskRow:
    """A TaskRow from a results CSV record's cells; ValueError naming ``where``."""
    if len(cells) != len(COLUMNS):
        raise ValueError(f"{where}: {len(cells)} fields where a row has {len(COLUMNS)}")
    values = {
        c: None if v == "" and c in _NULLABLE else v for c, v in zip(COLUMNS, cells, strict=True)
    }
    try:
        return msgspec.convert(values, TaskRow, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}: {exc}") from None


class MergedCsv:
    """Appends records to the merged CSV (with their shard) and to a shard's own copy,
    flushing each, so a crash of the coordinator loses no row it received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            _drop_partial_row(path)
        self._file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(MERGED_COLUMNS)
            self._file.flush()
        self._copies: dict[int, tuple[io.TextIOWrapper, Any]] = {}

    def open_copy(self, shard: int, path: Path) -> None:
        """Start the shard's own CSV (the records exactly as its bench wrote them)."""
        f = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        f.flush()
        self._copies[shard] = (f, writer)

    def write(self, shard: int, records: Iterable[Sequence[str]]) -> None:
        copy = self._copies.get(shard)
        for cells in records:
            self._writer.writerow([*cells, shard])
            if copy is not None:
                copy[1].writerow(cells)
        self._file.flush()
        if copy is not None:
            copy[0].flush()

    def close(self) -> None:
        self._file.close()
        for f, _ in self._copies.values():
            f.close()


def _drop_partial_row(path: Path) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_merged(path: str | os.PathLike[str]) -> list[MergedRow]:
    """The complete rows of a merged CSV; ValueError when it is not one."""
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    if tuple(next(reader, [])) != MERGED_COLUMNS:
        raise ValueError(
            f"{path} is not the merged CSV of a --shards run (its header differs; a single "
            "run's CSV is resumed without --shards)"
        )
    rows = []
    for cells in reader:
        where = f"{path}, line {reader.line_num}"
        if not cells or not cells[-1].isdigit():
            raise ValueError(f"{where}: no shard number in the last column")
        rows.append(MergedRow(row_of(cells[:-1], where), int(cells[-1])))
    return rows


def read_samples_lenient(data: bytes, where: str) -> Samples:
    """A shard's samples file. One its bench could not finish (killed: the file is written
    through a buffer and has no trailer) is read up to its last whole sample, without the
    histograms of the trailer it never wrote; an empty one holds no samples."""
    try:
        return read_samples(io.BytesIO(data)) if data else Samples()
    except (ReportError, ValueError, msgspec.DecodeError):
        pass
    header_end = data.find(b"\n", len(SAMPLES_MAGIC)) + 1
    if not data.startswith(SAMPLES_MAGIC) or not header_end:
        return Samples()  # killed before its header reached the file
    pos, size = header_end, SAMPLE.size
    while pos + size <= len(data) and data[pos] != TRAILER:  # records start with an index
        pos += size
    try:
        return read_samples(io.BytesIO(data[:pos]))
    except (ReportError, ValueError, msgspec.DecodeError) as exc:
        raise ReportError(f"{where}: {exc}") from None


def merge_latency(samples: Iterable[Samples]) -> Latency:
    """Every distribution over all the samples: exact percentiles where the samples are
    values, the merged histogram's (within 1 %) where they are buckets (ITL)."""
    merged = merge(samples)
    out: dict[str, Distribution] = {}
    for field in Latency.__struct_fields__:
        name = field.removesuffix("_ms")
        if name in merged.histograms:  # ITL: not sampled one by one (its column is empty)
            out[field] = merged.histograms[name].summary()
        elif name in merged.values:
            out[field] = exact(merged.values[name])
        else:
            out[field] = Histogram().summary()
    return Latency(**out)


def outcomes(rows: Iterable[TaskRow]) -> Outcomes:
    """The outcomes of the rows, the first of each task counted once."""
    seen: set[str] = set()
    done = passed = first = failed = errors = retries = 0
    for row in rows:
        if row.task_id in seen:
            continue
        seen.add(row.task_id)
        done += 1
        retries += row.retries
        if row.status is TaskStatus.PASSED:
            passed += 1
            first += row.first_attempt_pass
        elif row.status is TaskStatus.FAILED:
            failed += 1
        else:
            errors += 1
    return Outcomes(
        tasks=done,
        passed=passed,
        pass_at_1=round(passed / done, 4) if done else 0.0,
        first_attempt_passes=first,
        recovered=passed - first,
        failed=failed,
        errors=errors,
        avg_retries=round(retries / done, 4) if done else 0.0,
    )


class Parts(msgspec.Struct, kw_only=True):
    """The summed and worst-of figures of a set of shards."""

    cpu: Cpu
    loop_lag_ms: LoopLag
    totals: Totals
    throughput: Throughput


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def _worst(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def merged_parts(
    summaries: Sequence[Summary],
    orphan_rows: Sequence[TaskRow],
    tasks: int,
    wall: float,
) -> Parts:
    """CPU, loop lag, totals and rates over the shards' ``summaries``; ``orphan_rows`` are
    the rows of shards that wrote no summary (their calls and tokens still count);
    ``tasks`` is how many tasks the run has finished (CPU per task)."""
    runtime = sum(s.cpu.runtime_seconds for s in summaries)
    calls = sum(s.totals.llm_calls for s in summaries) + sum(r.llm_calls for r in orphan_rows)
    tokens = sum(s.totals.output_tokens for s in summaries)
    tokens += sum(r.completion_tokens for r in orphan_rows)
    retries: dict[str, int] = {}
    errors: dict[str, int] = {}
    exits: dict[str, int] = {}
    for s in summaries:
        _add(retries, s.totals.retries_by_cause)
        _add(errors, s.totals.errors_by_cause)
        _add(exits, s.totals.test_exit_causes)
    done = sum(s.outcomes.tasks for s in summaries) + len(orphan_rows)
    return Parts(
        cpu=Cpu(
            runtime_seconds=round(runtime, 3),
            children_seconds=round(sum(s.cpu.children_seconds for s in summaries), 3),
            runtime_ms_per_task=round(runtime * 1000 / tasks, 3) if tasks else None,
            runtime_ms_per_llm_call=round(runtime * 1000 / calls, 3) if calls else None,
        ),
        loop_lag_ms=LoopLag(
            p50=_worst(s.loop_lag_ms.p50 for s in summaries),
            p99=_worst(s.loop_lag_ms.p99 for s in summaries),
            max=_worst(s.loop_lag_ms.max for s in summaries),
        ),
        totals=Totals(
            llm_calls=calls,
            output_tokens=tokens,
            peak_agents_in_flight=sum(s.totals.peak_agents_in_flight for s in summaries),
            retries_by_cause=retries,
            errors_by_cause=errors,
            test_exit_causes=exits,
        ),
        throughput=Throughput(
            requests_per_s=round(calls / wall, 3) if wall else None,
            output_tokens_per_s=round(tokens / wall, 3) if wall else None,
            tasks_per_s=round(done / wall, 3) if wall else None,
        ),
    )
