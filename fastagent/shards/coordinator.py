"""``fastagent bench --shards N``: the coordinator (Ray's driver).

::

    code = run(make_config(shards=2, tasks=10, verify="trivial"))

:func:`run` plans the job (:mod:`~fastagent.shards.plan`), joins or starts Ray
(:mod:`~fastagent.shards.cluster`), starts one :class:`~fastagent.shards.node.ShardProcess`
actor per shard, each of which starts an ordinary bench, and then polls every actor once a
second: the rows each bench has written go into the merged CSV and the shard's own copy as
they come (a progress line counts them), and a bench that has ended is collected (its
summary, samples file and log are kept in the shards' directory). A shard that dies loses
only its unfinished tasks; an actor that dies (its node lost) keeps the rows received
before. SIGINT/SIGTERM: one SIGINT to every bench, which writes the summary of what it
finished, a grace period, then SIGKILL; a second Ctrl-C kills them at once. Whatever
happened, the merged summary of what finished is written (:mod:`~fastagent.shards.merge`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..analysis.children import GRACE_SECONDS
from ..config import API_KEY_ENV, Config
from ..errors import ExitCode
from ..results import format_summary, write_json_atomic
from ..schema import RayCost, Shard, Summary, TaskRow
from .cluster import Cluster, import_ray
from .merge import MergedCsv, row_of
from .node import Collected, ShardSpec, Started
from .plan import Job, bench_args, plan_job
from .summary import merged_summary, shard_lines

__all__ = ["Coordinator", "run"]

POLL_SECONDS = 1.0
#: How long one actor call may take before its shard is given up as lost.
CALL_TIMEOUT = 600.0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Running:
    """One shard of this invocation, as the coordinator follows it."""

    index: int
    indices: list[int]
    csv: Path
    actor: Any = None
    started: Started | None = None
    pending: Any = None  # the ObjectRef of its outstanding poll
    rows: list[TaskRow] = field(default_factory=list)
    returncode: int | None = None
    error: str | None = None
    log: str = ""
    summary: Summary | None = None
    summary_path: Path | None = None
    samples_path: Path | None = None
    finished: bool = False


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Within the block SIGINT and SIGTERM are only recorded (the list it yields), so the
    loop acts on them between two polls and never loses a row it was handed."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class Coordinator:
    """Launches the shards of ``job`` on ``cluster``, follows them and collects them."""

    def __init__(self, job: Job, cluster: Cluster) -> None:
        self.job = job
        self.cluster = cluster
        self.ray = cluster.ray
        d = job.shards_dir
        self.shards = [Running(i, share, d / f"shard{i}.csv") for i, share in job.split]
        self.out = MergedCsv(job.paths.csv)
        self.stop_signal: int | None = None
        self.launch_seconds = 0.0
        self.wall = 0.0
        self.killed = False
        self.progress = job.config.progress
        if self.progress is None:
            self.progress = sys.stderr.isatty()
        self.cost: RayCost | None = None
        self.nodes = 0
        self.started_at = time.time()
        self._t0 = time.monotonic()

    def run(self, stops: list[int]) -> None:
        """Launch the shards and follow them to their end; ``stops`` are the signals
        received (:func:`_stop_signals`)."""
        self._t0 = t0 = time.monotonic()
        try:
            self._launch()
            self._watch(stops)
        finally:
            self.wall = time.monotonic() - t0
            self.out.close()
            if self.progress:
                print(file=sys.stderr)

    def _spec(self, s: Running) -> ShardSpec:
        config = self.job.config
        key = config.api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), "")
        work = str(Path(config.work_dir) / f"shard{s.index}") if config.work_dir else None
        return ShardSpec(
            index=s.index,
            args=bench_args(config),
            indices=s.indices,
            dataset=Path(config.dataset).read_bytes() if config.dataset else None,
            env={"LLM_API_KEY": key} if key else {},
            work_dir=work,
            keep=config.keep_workspaces,
        )

    def _launch(self) -> None:
        self.job.shards_dir.mkdir(parents=True, exist_ok=True)
        actor_class = self.cluster.shard_actor()
        t0 = time.monotonic()
        starting = []
        for s in self.shards:
            self.out.open_copy(s.index, s.csv)
            s.actor = actor_class.remote()
            starting.append((s, s.actor.start.remote(self._spec(s))))
        for s, ref in starting:
            try:
                s.started = self.ray.get(ref, timeout=CALL_TIMEOUT)
            except Exception as exc:
                self._lost(s, f"did not start: {_first_line(exc)}")
        self.launch_seconds = time.monotonic() - t0
        nodes = {s.started.node_id for s in self.shards if s.started}
        _log(f"fastagent bench --shards: {len(self.shards)} shards started on {len(nodes)} "
             f"node(s) in {self.launch_seconds:.1f} s")  # fmt: skip

    def _watch(self, stops: list[int]) -> None:
        deadline = float("inf")
        while any(not s.finished for s in self.shards):
            began = time.monotonic()
            self._poll_round()
            if stops and self.stop_signal is None:
                self.stop_signal = stops[0]
                deadline = time.monotonic() + GRACE_SECONDS
                self._interrupt()
            if not self.killed and (len(stops) > 1 or time.monotonic() > deadline):
                self._kill()
            if self.progress:
                self._show_progress()
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - began)))

    def _poll_round(self) -> None:
        live = [s for s in self.shards if not s.finished]
        for s in live:
            if s.pending is None:
                s.pending = s.actor.poll.remote()
        by_ref = {s.pending: s for s in live}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=POLL_SECONDS)
        for ref in ready:
            s = by_ref[ref]
            s.pending = None
            try:
                polled = self.ray.get(ref)
            except Exception as exc:
                self._lost(s, f"its Ray actor died: {_first_line(exc)}")
                continue
            self._receive(s, polled.rows)
            if polled.returncode is not None:
                self._collect(s)

    def _receive(self, s: Running, records: list[list[str]]) -> None:
        kept = []
        for cells in records:
            try:
                s.rows.append(row_of(cells, f"shard {s.index}'s CSV"))
            except ValueError as exc:
                _log(f"fastagent bench --shards: a row left out: {exc}")
                continue
            kept.append(cells)
        self.out.write(s.index, kept)

    def _collect(self, s: Running) -> None:
        try:
            collected: Collected = self.ray.get(s.actor.collect.remote(), timeout=CALL_TIMEOUT)
        except Exception as exc:
            self._lost(s, f"its Ray actor died: {_first_line(exc)}")
            return
        self._receive(s, collected.rows)
        s.returncode, s.log, s.finished = collected.returncode, collected.log, True
        d = self.job.shards_dir
        (d / f"shard{s.index}.log").write_text(collected.log, encoding="utf-8")
        if collected.samples is not None:
            s.samples_path = d / f"shard{s.index}.samples"
            s.samples_path.write_bytes(collected.samples)
        if collected.summary is not None:
            s.summary_path = d / f"shard{s.index}_summary.json"
            s.summary_path.write_bytes(collected.summary)
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                s.summary = msgspec.json.decode(collected.summary, type=Summary)

    def _lost(self, s: Running, why: str) -> None:
        s.error, s.finished, s.pending = why, True, None

    def _interrupt(self) -> None:
        live = [s for s in self.shards if not s.finished]
        _log(f"\nfastagent bench --shards: interrupted: stopping {len(live)} shard(s), each "
             f"writes the summary of what it finished (Ctrl-C again kills them)")  # fmt: skip
        for s in live:
            s.actor.interrupt.remote()

    def _kill(self) -> None:
        self.killed = True
        for s in self.shards:
            if not s.finished:
                s.actor.kill.remote()

    def _show_progress(self) -> None:
        total = len(self.job.tasks)
        done = len(self.job.rows) + sum(len(s.rows) for s in self.shards)
        running = sum(not s.finished for s in self.shards)
        if len(self.shards) <= 8:
            each = " ".join(f"s{s.index} {len(s.rows)}/{len(s.indices)}" for s in self.shards)
        else:
            counts = [len(s.rows) for s in self.shards]
            each = f"per shard {min(counts)}..{max(counts)}"
        sys.stderr.write(f"\r[{done:>6}/{total}] shards running {running}/{len(self.shards)} "
                         f"| {each} | {self.wall_so_far():6.1f} s ")  # fmt: skip
        sys.stderr.flush()

    def wall_so_far(self) -> float:
        return time.monotonic() - self._t0

    def finish(self) -> list[Shard]:
        """This invocation's shards as the summary lists them; their actors are let go."""
        entries = [self._entry(s) for s in self.shards]
        benches = [s.started.pid for s in self.shards if s.started]
        self.cost = self.cluster.cost(benches, self.launch_seconds)
        with contextlib.suppress(Exception):
            self.nodes = self.cluster.nodes()
        for s in self.shards:
            with contextlib.suppress(Exception):
                self.ray.kill(s.actor)
        return entries

    def _entry(self, s: Running) -> Shard:
        done = {r.task_id for r in s.rows}
        tasks = self.job.tasks
        not_run = [tasks[i].id for i in s.indices if tasks[i].id not in done]
        error = s.error
        if error is None and not_run:
            error = _exit_reason(s.returncode, s.log)
        summary = s.summary
        return Shard(
            index=s.index,
            run=self.job.run,
            node=s.started.node if s.started else "",
            node_id=s.started.node_id if s.started else None,
            pid=s.started.pid if s.started else None,
            base_url=summary.endpoint.base_url if summary else None,
            tasks=len(s.indices),
            rows=len(done),
            not_run=not_run,
            exit_status=s.returncode,
            error=error,
            wall_seconds=summary.wall_seconds if summary else None,
            peak_rss_mib=summary.memory.peak_rss_mib if summary else None,
            runtime_seconds=summary.cpu.runtime_seconds if summary else None,
            runtime_ms_per_task=summary.cpu.runtime_ms_per_task if summary else None,
            csv=str(s.csv),
            summary=str(s.summary_path) if s.summary_path else None,
            samples=str(s.samples_path) if s.samples_path else None,
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _exit_reason(returncode: int | None, log: str) -> str:
    if returncode is None:
        return "it did not end"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode >= 128:
        return f"interrupted (exit status {returncode})"
    last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
    return f"exit status {returncode}" + (f": {last.strip()}" if last else "")


def run(config: Config) -> int:
    """The sharded run of ``config``; its exit code."""
    import_ray()  # the one line saying how to install it, before anything else
    job = plan_job(config)
    cluster: Cluster | None = None
    coordinator: Coordinator | None = None
    entries: list[Shard] = []
    if job.split:
        n_tasks = sum(len(share) for _, share in job.split)
        cluster = Cluster.start(config.ray_address)
        where = config.ray_address or "a local Ray instance"
        _log(f"fastagent bench --shards {config.shards}: {n_tasks} tasks round-robin over "
             f"{len(job.split)} shards, concurrency {config.concurrency} per shard "
             f"({sum(min(config.concurrency, len(s)) for _, s in job.split)} agents in total); "
             f"Ray {cluster.version} at {where} ({cluster.nodes()} node(s), joined in "
             f"{cluster.startup_seconds:.1f} s)")  # fmt: skip
    else:
        _log("fastagent bench --shards: every task has a row already: nothing to run")
    try:
        with _stop_signals() as stops:  # from here on, what finished is always written
            if cluster is not None:
                coordinator = Coordinator(job, cluster)
                coordinator.run(stops)
                entries = coordinator.finish()
            summary = merged_summary(job, coordinator, entries)
            write_json_atomic(job.paths.summary, summary)
    finally:
        if cluster is not None:
            cluster.stop()
    print(format_summary(summary))
    print(shard_lines(summary, job))
    print(f"results: {job.paths.csv}\n         {job.paths.summary}\n         {job.shards_dir}/")
    if entries and all(e.exit_status == ExitCode.BAD_INPUT for e in entries):
        _log(f"fastagent bench --shards: every shard refused its input: {entries[0].error}")
        return ExitCode.BAD_INPUT
    return _exit_code(summary)


def _exit_code(summary: Summary) -> int:
    """128 + the signal when interrupted; 1 when a task did not run or every task ended in
    error; else 0."""
    if summary.interrupted_by_signal is not None:
        return 128 + summary.interrupted_by_signal
    o = summary.outcomes
    if (summary.sharding and summary.sharding.not_run) or (o.tasks and o.errors == o.tasks):
        return ExitCode.FAILED
    return ExitCode.OK
