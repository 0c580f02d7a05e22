"""Fans the tasks over agent slots and process slots on uvloop, and writes the results.

::

    outcome = run_bench(Config(tasks=10))       # the built-in simulated endpoint
    print(outcome.summary.outcomes.passed, outcome.paths.csv, outcome.exit_code)

``concurrency`` workers each take the next task from one shared iterator, so a waiting
task costs nothing until a worker picks it; test processes take one of ``max_procs``
process slots, so pass counts never depend on machine load. The run in order:
:func:`prepare` (dataset, pytest, results paths, trace file: every bad input is found
here, before anything starts), the endpoint (the built-in simulator in its own process
unless ``base_url`` is set), :class:`Run` on the event loop (the measured part), then
:func:`build_summary` makes the one :class:`~fastagent.schema.Summary`, written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec

from . import __version__, noise
from .agent import AgentLoop
from .config import Config
from .dataset import Task, default_dataset_path, load_tasks, repeat_tasks
from .errors import ExitCode, LLMError, RunError
from .llm import LLMClient
from .results import CsvWriter, ResultPaths, read_rows, write_json_atomic
from .schema import (
    SCHEMA_VERSION,
    Cpu,
    Endpoint,
    Memory,
    Outcomes,
    RssTimeline,
    Settings,
    Summary,
    TaskRow,
    TaskStatus,
    Throughput,
    Totals,
    Versions,
)
from .speedups import IMPLEMENTATION
from .telemetry import (
    LagProbe,
    Sampler,
    Telemetry,
    TraceWriter,
    cpu_seconds,
    descendants,
    kernel_peak_rss_kib,
)

__all__ = ["Plan", "Run", "RunOutcome", "Tally", "build_summary", "check_python", "run_bench"]

Log = Callable[[str], None]


class RunOutcome(msgspec.Struct):
    """What run_bench returns: the summary, where it was written, and the exit code."""

    summary: Summary
    paths: ResultPaths
    exit_code: int


class Tally:
    """Outcome counters kept as the tasks finish (no per-task objects are retained)."""

    def __init__(self) -> None:
        self.done = self.passed = self.first = self.failed = self.errors = self.retries = 0

    def add(self, row: TaskRow) -> None:
        self.done += 1
        self.retries += row.retries
        if row.status is TaskStatus.PASSED:
            self.passed += 1
            self.first += row.first_attempt_pass
        elif row.status is TaskStatus.FAILED:
            self.failed += 1
        else:
            self.errors += 1

    def outcomes(self) -> Outcomes:
        done = self.done
        return Outcomes(
            tasks=done,
            passed=self.passed,
            pass_at_1=round(self.passed / done, 4) if done else 0.0,
            first_attempt_passes=self.first,
            recovered=self.passed - self.first,
            failed=self.failed,
            errors=self.errors,
            avg_retries=round(self.retries / done, 4) if done else 0.0,
        )


def check_python(python: str) -> str:
    """The version of pytest that ``python`` imports; RunError when it cannot."""
    exe = shutil.which(python)
    if exe is None:
        raise RunError(
            f"{python!r} is not on PATH: install Python 3.11+ with pytest or pass --python"
        )
    try:
        proc = subprocess.run(
            [exe, "-B", "-P", "-c", "import pytest; print(pytest.__version__)"],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunError(f"cannot run {exe}: {exc}") from exc
    if proc.returncode != 0:
        raise RunError(
            f"{exe} cannot import pytest (needs Python 3.11+ and pytest): "
            f"run '{exe} -m pip install pytest' or pass --python"
        )
    return proc.stdout.decode().strip()


class Plan(msgspec.Struct):
    """What a run will do, every input checked: made by :func:`prepare`."""

    dataset: str
    tasks: list[Task]
    paths: ResultPaths
    work_dir: Path
    pytest_version: str
    #: the rows an interrupted run left (``--resume``), already counted in ``tally``
    resumed: list[TaskRow]
    trace: IO[bytes] | None
    samples: IO[bytes] | None

    def close(self) -> None:
        """Close the files the run wrote as it went."""
        for stream in (self.trace, self.samples):
            if stream is not None:
                stream.close()


def prepare(config: Config, log: Log) -> Plan:
    """Check every input and open what the run writes; RunError/DatasetError on bad input."""
    dataset = config.dataset or str(default_dataset_path())
    tasks = repeat_tasks(load_tasks(dataset, config.tasks), config.repeat)
    if config.task_indices:  # a shard of --shards: its share of the task list
        from .shards.split import select_tasks

        tasks = select_tasks(tasks, config.task_indices)
    pytest_version = check_python(config.python)
    resumed: list[TaskRow] = []
    if config.resume:
        paths, resumed = _resume(config.resume, tasks)
        done = {row.task_id for row in resumed}
        tasks = [t for t in tasks if t.id not in done]
        log(f"resuming {paths.csv}: {len(resumed)} tasks done, {len(tasks)} to go")
    else:
        paths = _prepare_results(config.results_dir)
    plan = Plan(dataset, tasks, paths, Path(), pytest_version, resumed, None, None)
    try:
        plan.trace = _open_output(config.trace, "trace file")
        plan.samples = _open_output(config.samples, "samples file")
        work = Path(config.work_dir or Path(config.results_dir).parent / "runs" / paths.stamp)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create the work directory {work}: {exc.strerror}") from None
        plan.work_dir = work
    except BaseException:
        plan.close()
        raise
    return plan


def _open_output(path: str | None, what: str) -> IO[bytes] | None:
    """A file the run streams into (buffered), or None; RunError when it cannot be made."""
    if path is None:
        return None
    try:
        return open(path, "wb", buffering=64 * 1024)
    except OSError as exc:
        raise RunError(f"cannot write {what} {path}: {exc.strerror}") from None


def _resume(csv_path: str, tasks: list[Task]) -> tuple[ResultPaths, list[TaskRow]]:
    """The first row of each task an interrupted run left (RunError when they do not fit)."""
    try:
        rows = read_rows(csv_path)
    except FileNotFoundError:
        raise RunError(f"--resume: {csv_path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"--resume: {exc}") from None
    if not os.access(csv_path, os.W_OK):
        raise RunError(f"--resume: {csv_path} is not writable")
    known = {t.id for t in tasks}
    first: dict[str, TaskRow] = {}
    for row in rows:
        if row.task_id not in known:
            raise RunError(
                f"--resume: {csv_path} has task {row.task_id!r}, which is not in this run's "
                "tasks: pass the same --dataset/--tasks/--repeat as the interrupted run"
            )
        first.setdefault(row.task_id, row)
    return ResultPaths.for_csv(csv_path), list(first.values())


def _prepare_results(results_dir: str) -> ResultPaths:
    try:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create results directory {results_dir}: {exc.strerror}") from exc
    if not os.access(results_dir, os.W_OK | os.X_OK):
        raise RunError(f"results directory {results_dir} is not writable: pass --results-dir")
    return ResultPaths.new(results_dir)


def run_bench(config: Config, *, log: Log | None = None) -> RunOutcome:
    """Run the benchmark described by ``config``; raises RunError/DatasetError on bad input."""
    import uvloop

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    plan = prepare(config, log)
    sim = None
    try:
        if not config.base_url:
            from .sim.launcher import SimProcess

            sim = SimProcess.for_bench(plan.dataset, config.sim_profile)
            config = msgspec.structs.replace(config, base_url=sim.start())
            log(f"simulated endpoint at {sim.base_url} (pid {sim.pid})")
        run = Run(config, plan, log, exclude=(sim.pid,) if sim and sim.pid else ())
        uvloop.run(run.main())
    finally:
        plan.close()
        if sim is not None:
            sim.stop()
        if not config.keep_workspaces:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
    summary = build_summary(run, started_by_bench=sim is not None)
    write_json_atomic(plan.paths.summary, summary)
    return RunOutcome(summary, plan.paths, exit_code(summary))


def exit_code(summary: Summary) -> int:
    """128 + the signal when interrupted, 1 when every task ended in error, else 0."""
    if summary.interrupted_by_signal is not None:
        return 128 + summary.interrupted_by_signal
    o = summary.outcomes
    return ExitCode.FAILED if o.tasks and o.errors == o.tasks else ExitCode.OK


class Run:
    """The measured part of one run, on the event loop: workers, signals, progress, samplers.

    ``main()`` fills in what :func:`build_summary` reads: the telemetry, the samplers, the
    tally, the wall and CPU clocks, and what the endpoint and the sandbox turned out to be.
    """

    def __init__(self, config: Config, plan: Plan, log: Log, exclude: tuple[int, ...]) -> None:
        self.config = config
        self.plan = plan
        self.log = log
        self.exclude = exclude
        self.telemetry = Telemetry(TraceWriter(plan.trace) if plan.trace else None, plan.samples)
        self.sampler = Sampler(config.sample_interval, exclude=exclude)
        self.lag = LagProbe(config.sample_interval, sampler=self.sampler)
        self.tally = Tally()
        for row in plan.resumed:
            self.record(row)
        self.stop_signal: int | None = None
        self.sim_profile: dict[str, Any] | None = None
        self.sandbox: tuple[str | None, str | None] = (None, None)
        self.open_fds = self.live_children = 0
        self.started_at = time.time()
        self.wall = 0.0
        self.cpu0 = self.cpu1 = (0.0, 0.0)
        self.server: str | None = None
        self.load0 = self.load1 = noise.Snapshot()
        self.excluded_cpu = 0.0

    def record(self, row: TaskRow) -> None:
        self.tally.add(row)
        self.telemetry.hist["task_wall"].add(row.wall_s)
        self.telemetry.hist["task_overhead"].add(row.overhead_s)

    async def main(self) -> None:
        self.load0 = noise.Snapshot()
        excluded0 = sum(map(noise.process_cpu_seconds, self.exclude))
        self.cpu0 = cpu_seconds()
        t0 = time.monotonic()
        try:
            async with LLMClient(self.config, self.telemetry) as client:
                await self._setup(client)
                agent = AgentLoop(
                    client,
                    self.config,
                    workspace_root=self.plan.work_dir,
                    proc_slots=asyncio.Semaphore(self.config.max_procs),
                    telemetry=self.telemetry,
                )
                self.sandbox = (agent.sandbox.label, agent.sandbox.warning or None)
                # Start-up is over: move every object made so far (modules, tasks, config)
                # out of the collector's reach, so the collections thousands of agents
                # trigger traverse only what the agents allocate (CPU; the peak RSS it
                # saves is within noise).
                gc.freeze()
                self.lag.start()
                await self._work(agent, t0)
        finally:
            await self.lag.stop()
            self.wall = time.monotonic() - t0
            self.cpu1 = cpu_seconds()
            self.load1 = noise.Snapshot()
            self.excluded_cpu = sum(map(noise.process_cpu_seconds, self.exclude)) - excluded0
            self.telemetry.finish_samples()
        self.open_fds = len(os.listdir("/proc/self/fd"))
        self.live_children = len(descendants(os.getpid(), frozenset(self.exclude)))

    async def _setup(self, client: LLMClient) -> None:
        config = self.config = await _resolve_model(client, self.config)
        client.config = config
        self.sim_profile = await _sim_profile(client)
        self.server = await client.identify()
        if config.warm_pool:
            await client.warm(min(config.concurrency, len(self.plan.tasks)))
        self.log(
            f"fastagent {__version__}: {len(self.plan.tasks)} tasks, concurrency "
            f"{config.concurrency}, max procs {config.max_procs}, speedups {IMPLEMENTATION}, "
            f"model {config.model} at {config.base_url}"
        )

    async def _work(self, agent: AgentLoop, t0: float) -> None:
        """Every task through ``concurrency`` workers; SIGINT/SIGTERM cancel them."""
        tasks = self.plan.tasks
        queue = iter(enumerate(tasks))
        rows = CsvWriter(self.plan.paths.csv)

        async def worker() -> None:
            for index, task in queue:
                row = await agent.run(task, index, time.monotonic() - t0)
                rows.write(row)
                self.record(row)

        workers = [
            asyncio.create_task(worker()) for _ in range(min(self.config.concurrency, len(tasks)))
        ]

        def interrupt(signum: int) -> None:
            if self.stop_signal is None:
                self.stop_signal = signum
            for w in workers:
                w.cancel()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupt, signum)
        progress = asyncio.create_task(self._progress()) if self._show_progress() else None
        try:
            for failure in await asyncio.gather(*workers, return_exceptions=True):
                if isinstance(failure, Exception):
                    self.log(f"fastagent: internal error in a worker: {failure!r}")
        finally:
            rows.close()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
                print(file=sys.stderr)

    def _show_progress(self) -> bool:
        progress = self.config.progress
        return sys.stderr.isatty() if progress is None else progress

    async def _progress(self) -> None:
        tally, telemetry = self.tally, self.telemetry
        total = tally.done + len(self.plan.tasks)
        t0 = time.monotonic()
        while True:
            sys.stderr.write(
                f"\r[{tally.done:>5}/{total}] passed {tally.passed} failed {tally.failed} "
                f"error {tally.errors} | in flight {telemetry.in_flight:>4} | "
                f"RSS {self.sampler.last_rss_kib / 1024:6.1f} MiB | "
                f"{time.monotonic() - t0:6.1f} s "
            )
            sys.stderr.flush()
            await asyncio.sleep(0.5)


async def _resolve_model(client: LLMClient, config: Config) -> Config:
    try:
        models = await client.list_models()
    except LLMError as exc:
        if config.model and exc.cause != "connect":
            return config
        raise RunError(f"{exc} (check LLM_BASE_URL / --base-url)") from exc
    if config.model:
        return config
    if not models:
        raise RunError(f"{client.models_url} lists no models: set LLM_MODEL or --model")
    return msgspec.structs.replace(config, model=models[0])


async def _sim_profile(client: LLMClient) -> dict[str, Any] | None:
    """The simulated endpoint's profile (GET /sim/plan); None for any other server."""
    with contextlib.suppress(Exception):
        status, body = await client.fetch("/sim/plan", 5.0)
        if status == 200:
            profile = msgspec.json.decode(body).get("profile")
            return profile if isinstance(profile, dict) else None
    return None


# ---- the summary, built in one place ---------------------------------------------------------


def build_summary(run: Run, *, started_by_bench: bool) -> Summary:
    """The run's :class:`~fastagent.schema.Summary` from what :class:`Run` measured."""
    config, telemetry, wall = run.config, run.telemetry, run.wall
    return Summary(
        schema_version=SCHEMA_VERSION,
        runtime="python",
        implementation=IMPLEMENTATION,
        event_loop="uvloop",
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started_at)),
        wall_seconds=round(wall, 3),
        interrupted=run.stop_signal is not None,
        interrupted_by_signal=run.stop_signal,
        csv=str(run.plan.paths.csv),
        settings=Settings(
            concurrency=config.concurrency,
            max_procs=config.max_procs,
            max_retries=config.max_retries,
            repeat=config.repeat,
            stream=config.stream,
            verify=config.verify,
            http_client=config.http_client,
            dataset=run.plan.dataset,
            sandbox=run.sandbox[0],
            sandbox_warning=run.sandbox[1],
        ),
        endpoint=Endpoint(
            base_url=config.base_url or "",
            model=config.model or "",
            simulated=run.sim_profile is not None,
            started_by_bench=started_by_bench,
            sim_profile=run.sim_profile,
            server=run.server,
        ),
        outcomes=run.tally.outcomes(),
        memory=_memory(run),
        cpu=_cpu(run),
        loop_lag_ms=run.lag.summary(),
        latency=telemetry.latency(),
        throughput=Throughput(
            requests_per_s=round(telemetry.llm_calls / wall, 3) if wall else None,
            output_tokens_per_s=round(telemetry.output_tokens / wall, 3) if wall else None,
            tasks_per_s=round(run.tally.done / wall, 3) if wall else None,
        ),
        totals=Totals(
            llm_calls=telemetry.llm_calls,
            output_tokens=telemetry.output_tokens,
            peak_agents_in_flight=telemetry.peak_in_flight,
            retries_by_cause=telemetry.retry_causes,
            errors_by_cause=telemetry.error_causes,
            test_exit_causes=telemetry.exit_causes,
        ),
        versions=_versions(run.plan.pytest_version),
        sharding=None,
        machine=noise.machine(run.load0, run.load1, _own_cpu(run), wall),
    )


def _own_cpu(run: Run) -> float:
    """CPU seconds of the run's own tree: the runtime, its reaped children, the simulator."""
    return sum(run.cpu1) - sum(run.cpu0) + run.excluded_cpu


def _memory(run: Run) -> Memory:
    sampler = run.sampler
    return Memory(
        peak_rss_mib=round(kernel_peak_rss_kib() / 1024, 2),
        peak_children=sampler.peak_children,
        peak_children_rss_mib=round(sampler.peak_children_rss_kib / 1024, 2),
        open_fds_at_end=run.open_fds,
        live_children_at_end=run.live_children,
        rss_timeline=RssTimeline(
            interval_s=run.config.sample_interval,
            t=[round(t, 3) for t in sampler.times],
            rss_mib=[round(r, 2) for r in sampler.rss_mib],
        ),
    )


def _cpu(run: Run) -> Cpu:
    runtime = run.cpu1[0] - run.cpu0[0]
    done, calls = run.tally.done, run.telemetry.llm_calls
    return Cpu(
        runtime_seconds=round(runtime, 3),
        children_seconds=round(run.cpu1[1] - run.cpu0[1], 3),
        runtime_ms_per_task=round(runtime * 1000 / done, 3) if done else None,
        runtime_ms_per_llm_call=round(runtime * 1000 / calls, 3) if calls else None,
    )


#: The libraries whose versions a summary reports (null for one the run never imported).
_LIBRARIES = ("uvloop", "msgspec", "httptools", "aiohttp")


def _versions(pytest_version: str) -> Versions:
    def version(module: str) -> str | None:
        # Only what the run imported: importing a module now, or importlib.metadata, would
        # count against the run's peak RSS.
        found = sys.modules.get(module)
        value = getattr(found, "__version__", None) if found else None
        return str(value) if value is not None else None

    return Versions(
        stack=__version__,
        language=f"{sys.implementation.name} {sys.version.split()[0]}",
        libraries={name: version(name) for name in _LIBRARIES},
        pytest_in_tests=pytest_version,
    )
