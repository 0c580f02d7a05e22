"""The merged summary of a sharded run, and the lines printed about its shards.

Built from the shards' own summaries and samples files (kept in the shards' directory, so
a ``--resume`` merges the earlier invocations' shards too) and the merged rows; see
:mod:`fastagent.shards.merge` for what each figure is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .. import __version__
from ..analysis.samples import Samples
from ..errors import ReportError
from ..schema import (
    SCHEMA_VERSION,
    Endpoint,
    Memory,
    RssTimeline,
    Settings,
    Shard,
    Sharding,
    Summary,
    TaskRow,
    Versions,
)
from .merge import merge_latency, merged_parts, outcomes, read_samples_lenient
from .plan import Job

if TYPE_CHECKING:
    from .coordinator import Coordinator

__all__ = ["merged_summary", "shard_lines"]


def _own_file(job: Job, path: str | None) -> Path | None:
    """A shard's file, found in this run's shards directory by its name (so a resumed run
    finds it from any working directory)."""
    if path is None:
        return None
    found = job.shards_dir / Path(path).name
    return found if found.exists() else None


def _read_summary(job: Job, entry: Shard) -> Summary | None:
    path = _own_file(job, entry.summary)
    if path is None:
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=Summary)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _samples(job: Job, shards: list[Shard]) -> list[Samples]:
    found = []
    for entry in shards:
        path = _own_file(job, entry.samples)
        if path is not None:
            try:
                found.append(read_samples_lenient(path.read_bytes(), str(path)))
            except (OSError, ReportError) as exc:
                print(f"fastagent bench --shards: {path} left out: {exc}", file=sys.stderr)
    return found


def _base(job: Job, summaries: list[Summary]) -> Summary:
    """The shard summary whose settings, endpoint, memory and versions the merged one
    shows: the largest shard's; one made from the settings when no shard wrote one."""
    if summaries:
        return max(summaries, key=lambda s: s.memory.peak_rss_mib)
    c = job.config
    empty = merge_latency([])
    parts = merged_parts([], [], 0, 0.0)
    return Summary(
        schema_version=SCHEMA_VERSION, runtime="python", implementation="unknown",
        event_loop="uvloop", started_at="", wall_seconds=0.0, interrupted=False,
        interrupted_by_signal=None, csv="",
        settings=Settings(
            concurrency=c.concurrency, max_procs=c.max_procs, max_retries=c.max_retries,
            repeat=c.repeat, stream=c.stream, verify=c.verify, http_client=c.http_client,
            dataset=job.dataset, sandbox=None, sandbox_warning=None,
        ),
        endpoint=Endpoint(
            base_url=c.base_url or "", model=c.model or "", simulated=False,
            started_by_bench=not c.base_url, sim_profile=None,
        ),
        outcomes=outcomes([]),
        memory=Memory(
            peak_rss_mib=0.0, peak_children=0, peak_children_rss_mib=0.0, open_fds_at_end=0,
            live_children_at_end=0,
            rss_timeline=RssTimeline(interval_s=c.sample_interval, t=[], rss_mib=[]),
        ),
        cpu=parts.cpu, loop_lag_ms=parts.loop_lag_ms, latency=empty,
        throughput=parts.throughput, totals=parts.totals,
        versions=Versions(
            stack=__version__,
            language=f"{sys.implementation.name} {sys.version.split()[0]}",
            libraries={}, pytest_in_tests=None,
        ),
        sharding=None,
    )  # fmt: skip


def merged_summary(job: Job, coordinator: Coordinator | None, entries: list[Shard]) -> Summary:
    """One summary of every shard of the run (the earlier invocations' included)."""
    shards = [*job.earlier, *entries]
    current = coordinator.shards if coordinator else []
    rows = [r.row for r in job.rows] + [row for s in current for row in s.rows]
    by_shard: dict[int, list[TaskRow]] = {}
    for r in job.rows:
        by_shard.setdefault(r.shard, []).append(r.row)
    for s in current:
        by_shard.setdefault(s.index, []).extend(s.rows)
    summaries: list[Summary] = []
    orphans: list[TaskRow] = []  # rows of the shards that wrote no summary
    now: list[Summary] = []
    now_orphans: list[TaskRow] = []
    ours = {e.index for e in entries}
    for entry in shards:
        summary = _read_summary(job, entry)
        if summary is not None:
            summaries.append(summary)
            if entry.index in ours:
                now.append(summary)
        else:
            orphans.extend(by_shard.get(entry.index, []))
            if entry.index in ours:
                now_orphans.extend(by_shard.get(entry.index, []))
    finished = outcomes(rows)
    wall = coordinator.wall if coordinator else 0.0
    parts = merged_parts(summaries, orphans, finished.tasks, wall)
    base = _base(job, summaries)
    done = {r.task_id for r in rows}
    known = [e.peak_rss_mib for e in shards if e.peak_rss_mib is not None]
    config = job.config
    started = coordinator.started_at if coordinator else time.time()
    return Summary(
        schema_version=SCHEMA_VERSION,
        runtime="python",
        implementation=base.implementation,
        event_loop=base.event_loop,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        wall_seconds=round(wall, 3),
        interrupted=bool(coordinator and coordinator.stop_signal is not None),
        interrupted_by_signal=coordinator.stop_signal if coordinator else None,
        csv=str(job.paths.csv),
        settings=msgspec.structs.replace(base.settings, dataset=job.dataset),
        endpoint=msgspec.structs.replace(base.endpoint, base_url=config.base_url or ""),
        outcomes=finished,
        memory=base.memory,
        cpu=parts.cpu,
        loop_lag_ms=parts.loop_lag_ms,
        latency=merge_latency(_samples(job, shards)),
        throughput=merged_parts(now, now_orphans, finished.tasks, wall).throughput,
        totals=parts.totals,
        versions=base.versions,
        sharding=Sharding(
            count=len(shards),
            split="round-robin",
            concurrency_per_shard=config.concurrency,
            total_concurrency=sum(min(config.concurrency, len(share)) for _, share in job.split),
            ray_address=config.ray_address,
            ray_version=coordinator.cluster.version if coordinator else "",
            nodes=coordinator.nodes if coordinator else 0,
            peak_rss_mib_max=max(known) if known else None,
            peak_rss_mib_sum=round(sum(known), 2) if known else None,
            not_run=[t.id for t in job.tasks if t.id not in done],
            failed_shards=[e.index for e in shards if e.error],
            ray=coordinator.cost if coordinator else None,
            shards=shards,
        ),
    )


def shard_lines(summary: Summary, job: Job) -> str:
    """What a person reads about the shards at the end of a run."""
    sh = summary.sharding
    assert sh is not None
    lines = [
        f"  shards {sh.count} ({sh.split}), concurrency {sh.concurrency_per_shard} per shard "
        f"({sh.total_concurrency} agents in total), Ray {sh.ray_version or '-'} on "
        f"{sh.nodes} node(s); peak RSS max {_mib(sh.peak_rss_mib_max)}, "
        f"summed {_mib(sh.peak_rss_mib_sum)}"
    ]
    for e in sh.shards:
        lines.append(
            f"    shard {e.index} (run {e.run}) on {e.node or '?'}: {e.rows}/{e.tasks} rows, "
            f"peak RSS {_mib(e.peak_rss_mib)}, runtime CPU "
            f"{'-' if e.runtime_seconds is None else f'{e.runtime_seconds:.2f} s'}, "
            f"exit {'-' if e.exit_status is None else e.exit_status}"
            + (f" — {e.error}" if e.error else "")
        )
    if sh.ray is not None:
        r = sh.ray
        lines.append(
            f"  Ray: start-up {r.startup_seconds:.1f} s, shards launched in "
            f"{r.launch_seconds:.1f} s; peak RSS driver {_mib(r.driver_rss_mib)}, raylet "
            f"{_mib(r.raylet_rss_mib)}, GCS {_mib(r.gcs_rss_mib)}, shard workers "
            f"{_mib(r.workers_rss_mib)}, other {_mib(r.other_rss_mib)}"
        )
    if sh.not_run:
        lines.append(
            f"  NOT RUN: {len(sh.not_run)} task(s), e.g. {', '.join(sh.not_run[:3])}: "
            f"fastagent bench --resume {job.paths.csv} --shards {job.config.shards} "
            "(and the same workload flags) runs them"
        )
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MiB"
