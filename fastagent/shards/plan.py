"""What a sharded run will do, every input checked before Ray starts: the task list, the
split, where the merged and the shards' results go, and each shard's bench flags.

A shard's flags are the coordinator's own settings rendered back as ``fastagent bench``
flags (every :class:`~fastagent.config.Config` field that is a flag and differs from its
default), less those the coordinator keeps for itself (:data:`COORDINATOR_ONLY`), plus
``--no-progress``; the tasks file travels as bytes and the endpoint's key as an
environment variable, never on a command line.
"""

from __future__ import annotations

import enum
import os
import typing
from pathlib import Path
from typing import Any

import msgspec

from ..config import Config, default_max_procs
from ..dataset import Task, default_dataset_path, load_tasks, repeat_tasks
from ..errors import RunError, UsageError
from ..results import ResultPaths
from ..schema import Shard, Summary
from .merge import MergedRow, read_merged
from .split import round_robin

__all__ = ["COORDINATOR_ONLY", "Job", "bench_args", "plan_job"]

#: Settings of the coordinator, never passed to a shard (it gets its own files instead).
COORDINATOR_ONLY = frozenset(
    {"shards", "ray_address", "results_dir", "work_dir", "resume", "trace", "samples",
     "progress", "task_indices", "dataset"}
)  # fmt: skip
#: Settings a sharded run cannot have: they name one file for one process.
_UNSUPPORTED = {"trace": "--trace", "samples": "--samples", "task_indices": "--task-indices"}


class Job(msgspec.Struct, kw_only=True):
    """A sharded run, planned."""

    config: Config
    dataset: str
    tasks: list[Task]
    paths: ResultPaths
    #: where each shard's own CSV, summary, samples and log are kept
    shards_dir: Path
    #: the merged rows already there (--resume)
    rows: list[MergedRow]
    #: the shards of earlier invocations (--resume), from the merged summary they left
    earlier: list[Shard]
    #: which invocation this is: 0, or k for the k-th --resume
    run: int
    #: the shards to start: (index, task positions)
    split: list[tuple[int, list[int]]]


def _flags() -> list[tuple[str, str, Any]]:
    """(field, flag, default) of every Config field that is a bench flag."""
    hints = typing.get_type_hints(Config, include_extras=True)
    found = []
    for field in msgspec.structs.fields(Config):
        metas = getattr(hints[field.name], "__metadata__", ())
        doc = next((m for m in metas if isinstance(m, msgspec.Meta) and m.description), None)
        if doc is None:
            continue
        flag = (doc.extra or {}).get("flag") or "--" + field.name.replace("_", "-")
        default = None if field.default is msgspec.NODEFAULT else field.default
        found.append((field.name, flag, default))
    return found


def bench_args(config: Config) -> list[str]:
    """The ``fastagent bench`` flags that give a shard the coordinator's settings."""
    args: list[str] = []
    for name, flag, default in _flags():
        value = getattr(config, name)
        if name in COORDINATOR_ONLY or value is None or value == default:
            continue
        if name == "max_procs" and value == default_max_procs():
            continue  # each node's own default: one test process per core
        if isinstance(value, bool):
            if value is not flag.startswith("--no-"):
                args.append(flag)
        elif isinstance(value, enum.Enum):
            args += [flag, str(value.value)]
        else:
            args += [flag, str(value)]
    if os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0"):
        args.append("--pure-python")
    return [*args, "--no-progress"]


def plan_job(config: Config) -> Job:
    """Check every input; DatasetError/RunError/UsageError (one line) when one is bad."""
    assert config.shards is not None
    for name, flag in _UNSUPPORTED.items():
        if getattr(config, name):
            raise UsageError(f"{flag} names one file of one process: not with --shards")
    dataset = config.dataset or str(default_dataset_path())
    tasks = repeat_tasks(load_tasks(dataset, config.tasks), config.repeat)
    rows: list[MergedRow] = []
    earlier: list[Shard] = []
    if config.resume:
        paths = ResultPaths.for_csv(config.resume)
        rows = _resumed_rows(config.resume, tasks)
        earlier = _earlier_shards(paths)
    else:
        paths = _new_paths(config.results_dir)
    done = {r.row.task_id for r in rows}
    todo = [i for i, task in enumerate(tasks) if task.id not in done]
    first = max([s.index + 1 for s in earlier] + [r.shard + 1 for r in rows] + [0])
    shares = [share for share in round_robin(todo, config.shards) if share]
    return Job(
        config=config,
        dataset=dataset,
        tasks=tasks,
        paths=paths,
        shards_dir=paths.csv.with_name(f"{paths.stamp}_shards"),
        rows=rows,
        earlier=earlier,
        run=max([s.run + 1 for s in earlier] + [1 if config.resume else 0]),
        split=[(first + k, share) for k, share in enumerate(shares)],
    )


def _new_paths(results_dir: str) -> ResultPaths:
    try:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create results directory {results_dir}: {exc.strerror}") from None
    if not os.access(results_dir, os.W_OK | os.X_OK):
        raise RunError(f"results directory {results_dir} is not writable: pass --results-dir")
    return ResultPaths.new(results_dir)


def _resumed_rows(csv_path: str, tasks: list[Task]) -> list[MergedRow]:
    try:
        rows = read_merged(csv_path)
    except FileNotFoundError:
        raise RunError(f"--resume: {csv_path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"--resume: {exc}") from None
    if not os.access(csv_path, os.W_OK):
        raise RunError(f"--resume: {csv_path} is not writable")
    known = {t.id for t in tasks}
    for r in rows:
        if r.row.task_id not in known:
            raise RunError(
                f"--resume: {csv_path} has task {r.row.task_id!r}, which is not in this run's "
                "tasks: pass the same --dataset/--tasks/--repeat as the interrupted run"
            )
    return rows


def _earlier_shards(paths: ResultPaths) -> list[Shard]:
    """The shards the merged summary of the earlier invocations lists (none when the
    coordinator itself died before writing it)."""
    try:
        summary = msgspec.json.decode(paths.summary.read_bytes(), type=Summary)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return []
    return list(summary.sharding.shards) if summary.sharding else []
