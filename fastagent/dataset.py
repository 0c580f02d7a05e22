"""Load the benchmark's task list (HumanEval/0..99) and verify it against its checksum.

The dataset is a JSON array of ``{"id", "spec", "test"}`` objects built by
``scripts/build_humaneval_dataset.py``: ``spec`` is what the agent is asked to implement
and ``test`` is a pytest module that imports the entry point from ``solution``.

Usage::

    from fastagent.dataset import (
        DatasetError, default_checksum_path, default_dataset_path, load_tasks, verify_checksum,
    )

    path = default_dataset_path()
    try:
        verify_checksum(path, default_checksum_path())  # -> sha256 hex digest
        tasks = load_tasks(path, limit=10)  # -> list[Task], HumanEval/0..9
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}")
    for task in tasks:
        print(task.id, len(task.spec), len(task.test))

Every problem with the files raises :class:`DatasetError` whose message is one line
saying what is wrong and how to fix it. Only the standard library and msgspec are
imported: this module runs inside the measured process.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib.resources import files
from pathlib import Path

import msgspec

from fastagent.errors import DatasetError

__all__ = [
    "CHECKSUM_NAME",
    "DATASET_NAME",
    "SOLUTIONS_NAME",
    "DatasetError",
    "Task",
    "data_path",
    "default_checksum_path",
    "default_dataset_path",
    "default_solutions_path",
    "load_tasks",
    "repeat_tasks",
    "verify_checksum",
]

DATASET_NAME = "humaneval_100.json"
SOLUTIONS_NAME = "humaneval_100_solutions.json"
CHECKSUM_NAME = "humaneval_100.sha256"

_REBUILD = "run scripts/build_humaneval_dataset.py to regenerate it"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# msgspec's messages end with " - at `$[3].spec`" (no suffix for the top-level value).
_AT_PATH = re.compile(r"^(?P<what>.*?) - at `\$\[(?P<index>\d+)\](?:\.(?P<field>\w+))?[^`]*`$")


class Task(msgspec.Struct, frozen=True, gc=False):
    """One benchmark task: ``spec`` goes to the agent, ``test`` is the hidden pytest module."""

    id: str
    spec: str
    test: str


_DECODER = msgspec.json.Decoder(list[Task])


def data_path(name: str) -> Path:
    """``fastagent/_data/<name>``: the package's data files (in the source tree
    ``fastagent/_data`` is a link to ``dataset/``; wheels carry the files themselves)."""
    return Path(str(files("fastagent") / "_data" / name))


def default_dataset_path() -> Path:
    """Where the task list lives."""
    return data_path(DATASET_NAME)


def default_solutions_path() -> Path:
    """Where the canonical solutions live (read only by the simulated endpoint)."""
    return data_path(SOLUTIONS_NAME)


def default_checksum_path() -> Path:
    """Where the ``<sha256>  humaneval_100.json`` line lives."""
    return data_path(CHECKSUM_NAME)


def repeat_tasks(tasks: list[Task], times: int) -> list[Task]:
    """The tasks ``times`` over; copy ``k >= 1`` of a task has id ``ID#k`` and shares its text.

    >>> [t.id for t in repeat_tasks([Task("a", "s", "t"), Task("b", "s", "t")], 2)]
    ['a', 'b', 'a#1', 'b#1']
    """
    out = list(tasks)
    for k in range(1, times):
        out.extend(Task(id=f"{t.id}#{k}", spec=t.spec, test=t.test) for t in tasks)
    return out


def _read_dataset(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(
            f"dataset not found: {path} (set BENCH_DATASET or --dataset, "
            "or run scripts/build_humaneval_dataset.py)"
        ) from None
    except IsADirectoryError:
        raise DatasetError(
            f"dataset path is a directory, not a file: {path} "
            f"(point BENCH_DATASET or --dataset at {DATASET_NAME})"
        ) from None
    except OSError as exc:
        raise DatasetError(
            f"cannot read dataset {path}: {exc.strerror or exc} (check the path and permissions)"
        ) from None


def _validation_message(path: Path, exc: msgspec.ValidationError) -> str:
    detail = str(exc)
    match = _AT_PATH.match(detail)
    if match is None:  # the top-level value itself has the wrong type
        return (
            f"dataset {path} must be a JSON array of {{id, spec, test}} objects "
            f"({detail}); {_REBUILD}"
        )
    where = f"entry {match['index']}"
    if match["field"]:
        where += f", field {match['field']!r}"
    return f"dataset {path}: {where}: {match['what']}; {_REBUILD}"


def load_tasks(path: str | os.PathLike[str], limit: int | None = None) -> list[Task]:
    """Decode the dataset at ``path``; return its tasks in file order (the first ``limit``).

    Raises DatasetError when the file is missing, is not a JSON array of objects with
    non-empty string fields ``id``, ``spec`` and ``test``, has duplicate ids, is empty,
    or has fewer than ``limit`` tasks.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise DatasetError(f"task limit must be an integer >= 1, got {limit!r}")
    if limit is not None and limit < 1:
        raise DatasetError(f"task limit must be >= 1, got {limit} (omit it to run every task)")
    path = Path(path)
    data = _read_dataset(path)
    if not data.strip():
        raise DatasetError(f"dataset {path} is an empty file; {_REBUILD}")
    try:
        tasks = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise DatasetError(_validation_message(path, exc)) from None
    except msgspec.DecodeError as exc:
        raise DatasetError(f"dataset {path} is not valid JSON ({exc}); {_REBUILD}") from None
    if not tasks:
        raise DatasetError(f"dataset {path} has no tasks (it is an empty array); {_REBUILD}")

    seen: dict[str, int] = {}
    for index, task in enumerate(tasks):
        for field in ("id", "spec", "test"):
            if not getattr(task, field).strip():
                raise DatasetError(
                    f"dataset {path}: entry {index}, field {field!r}: empty string; {_REBUILD}"
                )
        first = seen.setdefault(task.id, index)
        if first != index:
            raise DatasetError(
                f"dataset {path}: duplicate id {task.id!r} at entries {first} and {index}; "
                f"{_REBUILD}"
            )

    if limit is not None:
        if limit > len(tasks):
            raise DatasetError(
                f"task limit {limit} exceeds the {len(tasks)} tasks in {path} "
                f"(use a limit <= {len(tasks)})"
            )
        tasks = tasks[:limit]
    return tasks


def verify_checksum(path: str | os.PathLike[str], checksum_path: str | os.PathLike[str]) -> str:
    """Check ``path``'s SHA-256 against the first field of ``checksum_path``; return it.

    The checksum file holds one ``sha256sum``-style line: ``<hex digest>  <file name>``.
    """
    path, checksum_path = Path(path), Path(checksum_path)
    try:
        line = checksum_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise DatasetError(
            f"checksum file not found: {checksum_path} (run scripts/build_humaneval_dataset.py)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DatasetError(f"cannot read checksum file {checksum_path}: {detail}") from None
    fields = line.split()
    expected = fields[0].lower() if fields else ""
    if not _HEX64.fullmatch(expected):
        raise DatasetError(
            f"checksum file {checksum_path} does not start with a SHA-256 hex digest "
            "(expected '<64 hex digits>  humaneval_100.json'); "
            "run scripts/build_humaneval_dataset.py"
        )
    actual = hashlib.sha256(_read_dataset(path)).hexdigest()
    if actual != expected:
        raise DatasetError(
            f"dataset {path} has sha256 {actual} but {checksum_path} expects {expected} "
            "(the dataset was edited or is stale); "
            "run scripts/build_humaneval_dataset.py to regenerate both"
        )
    return actual
