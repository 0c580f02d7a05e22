"""Fans the tasks over agent slots and process slots on uvloop, and writes the results.

>>> from fastagent.config import Config
>>> outcome = run_bench(Config(tasks=10))            # doctest: +SKIP
>>> outcome.summary["passed"], outcome.paths.csv      # doctest: +SKIP

``concurrency`` workers each take the next task from one shared iterator, so a waiting
task costs nothing until a worker picks it; test processes take one of ``max_procs``
process slots, so pass counts never depend on machine load.
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
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from . import __version__
from .agent import AgentLoop, TaskResult
from .config import Config
from .dataset import Task, default_dataset_path, load_tasks
from .errors import FastAgentError
from .llm import LLMClient, LLMError
from .results import CsvWriter, ResultPaths, nearest_rank, read_rows, write_json_atomic
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


class RunError(FastAgentError):
    """The run could not start (bad input, unreachable endpoint); nothing was measured."""


class RunOutcome(msgspec.Struct):
    """What run_bench returns: the summary dict, where it was written, and the exit code."""

    summary: dict[str, Any]
    paths: ResultPaths
    exit_code: int


class _Tally:
    """Outcome counters kept as the tasks finish (no per-task objects are retained)."""

    def __init__(self) -> None:
        self.done = self.passed = self.first = self.failed = self.errors = self.retries = 0
        self.walls = array("d")

    def add(self, status: str, first: bool, retries: int, wall: float) -> None:
        self.done += 1
        self.retries += retries
        self.walls.append(wall)
        if status == "passed":
            self.passed += 1
            self.first += first
        elif status == "failed":
            self.failed += 1
        else:
            self.errors += 1

    def add_result(self, result: TaskResult) -> None:
        self.add(result.status, result.first_attempt_pass, result.retries, result.wall_s)

    def add_row(self, row: dict[str, str]) -> None:
        self.add(row["status"], row["first_attempt_pass"] == "True", int(row["retries"]),
                 float(row["wall_s"]))  # fmt: skip


def repeat_tasks(tasks: list[Task], times: int) -> list[Task]:
    """The dataset ``times`` over; copies get ids ``ID#k`` and share the spec and test text."""
    if times <= 1:
        return tasks
    out = list(tasks)
    for k in range(1, times):
        out.extend(Task(id=f"{t.id}#{k}", spec=t.spec, test=t.test) for t in tasks)
    return out


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


def run_bench(config: Config, *, log: Callable[[str], None] | None = None) -> RunOutcome:
    """Run the benchmark described by ``config``; raises RunError/DatasetError on bad input."""
    import uvloop

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    dataset = config.dataset or str(default_dataset_path())
    tasks = repeat_tasks(load_tasks(dataset, config.tasks), config.repeat)
    pytest_version = check_python(config.python)
    tally = _Tally()
    if config.resume:
        paths, tasks = _resume(config.resume, tasks, tally)
        log(f"resuming {paths.csv}: {tally.done} tasks done, {len(tasks)} to go")
    else:
        paths = _prepare_results(config.results_dir)
    work_dir = Path(config.work_dir or Path(config.results_dir).parent / "runs" / paths.stamp)
    sim = None
    try:
        if not config.base_url:
            from ._simproc import SimProcess

            args = ["--dataset", dataset]
            if config.sim_profile:
                args += ["--profile", config.sim_profile]
            sim = SimProcess(args)
            config = msgspec.structs.replace(config, base_url=sim.start())
            log(f"simulated endpoint at {sim.base_url} (pid {sim.pid})")
        exclude = (sim.pid,) if sim and sim.pid else ()
        summary = uvloop.run(_main(config, tasks, paths, work_dir, log, tally, exclude))
    finally:
        if sim is not None:
            sim.stop()
        if not config.keep_workspaces:
            shutil.rmtree(work_dir, ignore_errors=True)
    summary["simulated"] = summary["sim_profile"] is not None
    summary["sim_started_by_bench"] = sim is not None
    summary["dataset"] = dataset
    summary["versions"]["pytest_in_tests"] = pytest_version
    write_json_atomic(paths.summary, summary)
    if summary["interrupted"]:
        code = 128 + summary["interrupted_by_signal"]
    elif summary["tasks"] and summary["errors"] == summary["tasks"]:
        code = 1
    else:
        code = 0
    return RunOutcome(summary, paths, code)


def _resume(csv_path: str, tasks: list[Task], tally: _Tally) -> tuple[ResultPaths, list[Task]]:
    """Count the rows an interrupted run left and return the tasks it did not finish."""
    try:
        rows = read_rows(csv_path)
    except FileNotFoundError:
        raise RunError(f"--resume: {csv_path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"--resume: {exc}") from None
    if not os.access(csv_path, os.W_OK):
        raise RunError(f"--resume: {csv_path} is not writable")
    known = {t.id for t in tasks}
    done: set[str] = set()
    for row in rows:
        task_id = row["task_id"]
        if task_id not in known:
            raise RunError(
                f"--resume: {csv_path} has task {task_id!r}, which is not in this run's tasks: "
                "pass the same --dataset/--tasks/--repeat as the interrupted run"
            )
        if task_id not in done:
            done.add(task_id)
            tally.add_row(row)
    return ResultPaths.for_csv(csv_path), [t for t in tasks if t.id not in done]


def _prepare_results(results_dir: str) -> ResultPaths:
    try:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create results directory {results_dir}: {exc.strerror}") from exc
    if not os.access(results_dir, os.W_OK | os.X_OK):
        raise RunError(f"results directory {results_dir} is not writable: pass --results-dir")
    return ResultPaths.new(results_dir)


async def _sim_profile(client: LLMClient) -> dict[str, Any] | None:
    """The simulated endpoint's profile (GET /sim/plan); None for any other server."""
    with contextlib.suppress(Exception):
        status, body = await client.fetch("/sim/plan", 5.0)
        if status == 200:
            profile = msgspec.json.decode(body).get("profile")
            return profile if isinstance(profile, dict) else None
    return None


async def _main(
    config: Config,
    tasks: list[Task],
    paths: ResultPaths,
    work_dir: Path,
    log: Callable[[str], None],
    tally: _Tally,
    exclude: tuple[int, ...],
) -> dict[str, Any]:
    trace_file = open(config.trace, "wb", buffering=64 * 1024) if config.trace else None  # noqa: SIM115
    telemetry = Telemetry(TraceWriter(trace_file) if trace_file else None)
    sampler = Sampler(config.sample_interval, exclude=exclude)
    lag = LagProbe()
    loop = asyncio.get_running_loop()
    stop_signal: list[int] = []
    sim_profile: dict[str, Any] | None = None
    agent: AgentLoop | None = None
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    started_at = time.time()
    try:
        async with LLMClient(config, telemetry) as client:
            config = await _resolve_model(client, config)
            client.config = config
            sim_profile = await _sim_profile(client)
            work_dir.mkdir(parents=True, exist_ok=True)
            agent = AgentLoop(
                client,
                config,
                workspace_root=work_dir,
                proc_slots=asyncio.Semaphore(config.max_procs),
                telemetry=telemetry,
            )
            log(
                f"fastagent {__version__}: {len(tasks)} tasks, concurrency {config.concurrency}, "
                f"max procs {config.max_procs}, speedups {IMPLEMENTATION}, model {config.model} "
                f"at {config.base_url}"
            )
            # Start-up is over: move every object made so far (modules, tasks, config) out of
            # the collector's reach, so the collections thousands of agents trigger traverse
            # only what the agents allocate (CPU; the peak RSS it saves is within noise).
            gc.freeze()
            sampler.start()
            lag.start()
            queue = iter(enumerate(tasks))

            rows = CsvWriter(paths.csv)

            async def worker() -> None:
                for index, task in queue:
                    result = await agent.run(task, index, time.monotonic() - t0)
                    rows.write(result)
                    tally.add_result(result)
                    telemetry.hist["task_wall"].add(result.wall_s)
                    telemetry.hist["task_overhead"].add(result.overhead_s)

            workers = [
                asyncio.create_task(worker()) for _ in range(min(config.concurrency, len(tasks)))
            ]

            def interrupt(signum: int) -> None:
                stop_signal.append(signum)
                for w in workers:
                    w.cancel()

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, interrupt, signum)
            progress = (
                asyncio.create_task(_progress(tally, tally.done + len(tasks), telemetry, sampler))
                if config.progress
                else None
            )
            try:
                outcomes = await asyncio.gather(*workers, return_exceptions=True)
                for failure in outcomes:
                    if isinstance(failure, Exception):
                        log(f"fastagent: internal error in a worker: {failure!r}")
            finally:
                rows.close()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
                if progress is not None:
                    progress.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await progress
                    print(file=sys.stderr)
    finally:
        await lag.stop()
        sampler.stop()
        if trace_file:
            trace_file.close()
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds()
    summary = _summary(
        config, tally, telemetry, sampler, lag, paths, wall, cpu0, cpu1, started_at, stop_signal
    )
    summary["sim_profile"] = sim_profile
    summary["open_fds_at_end"] = len(os.listdir("/proc/self/fd"))
    summary["live_children_at_end"] = len(descendants(os.getpid(), frozenset(exclude)))
    summary["verify"] = config.verify
    summary["http_client"] = config.http_client
    summary["sandbox"] = agent.sandbox.label if agent else None
    summary["sandbox_warning"] = (agent.sandbox.warning or None) if agent else None
    return summary


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


async def _progress(tally: _Tally, total: int, telemetry: Telemetry, sampler: Sampler) -> None:
    t0 = time.monotonic()
    while True:
        line = (
            f"\r[{tally.done:>5}/{total}] passed {tally.passed} failed {tally.failed} "
            f"error {tally.errors} | in flight {telemetry.in_flight:>4} | "
            f"RSS {sampler.last_rss_kib / 1024:6.1f} MiB | {time.monotonic() - t0:6.1f} s "
        )
        sys.stderr.write(line)
        sys.stderr.flush()
        await asyncio.sleep(0.5)


def _summary(
    config: Config,
    tally: _Tally,
    telemetry: Telemetry,
    sampler: Sampler,
    lag: LagProbe,
    paths: ResultPaths,
    wall: float,
    cpu0: tuple[float, float],
    cpu1: tuple[float, float],
    started_at: float,
    stop_signal: list[int],
) -> dict[str, Any]:
    import uvloop

    runtime_cpu = cpu1[0] - cpu0[0]
    children_cpu = cpu1[1] - cpu0[1]
    walls = list(tally.walls)
    done = tally.done
    lag_ms = lag.lag.summary()
    return {
        "schema_version": 1,
        "runtime": "python",
        "implementation": IMPLEMENTATION,
        "event_loop": "uvloop",
        "model": config.model,
        "base_url": config.base_url,
        "concurrency": config.concurrency,
        "max_procs": config.max_procs,
        "max_retries": config.max_retries,
        "tasks": done,
        "passed": tally.passed,
        "pass_at_1": round(tally.passed / done, 4) if done else 0.0,
        "first_attempt_passes": tally.first,
        "recovered": tally.passed - tally.first,
        "failed": tally.failed,
        "errors": tally.errors,
        "avg_retries": round(tally.retries / done, 4) if done else 0.0,
        "wall_seconds": round(wall, 3),
        "peak_rss_mib": round(kernel_peak_rss_kib() / 1024, 2),
        "task_latency_p50": nearest_rank(walls, 50),
        "task_latency_p95": nearest_rank(walls, 95),
        "task_latency_p99": nearest_rank(walls, 99),
        "runtime_cpu_seconds": round(runtime_cpu, 3),
        "children_cpu_seconds": round(children_cpu, 3),
        "runtime_cpu_ms_per_task": round(runtime_cpu * 1000 / done, 3) if done else None,
        "runtime_cpu_ms_per_llm_call": (
            round(runtime_cpu * 1000 / telemetry.llm_calls, 3) if telemetry.llm_calls else None
        ),
        "peak_children": sampler.peak_children,
        "peak_children_rss_mib": round(sampler.peak_children_rss_kib / 1024, 2),
        "peak_agents_in_flight": telemetry.peak_in_flight,
        "loop_lag_ms": {k: lag_ms[k] for k in ("p50", "p99", "max")},
        "latency": telemetry.latencies(),
        "throughput": {
            "requests_per_s": round(telemetry.llm_calls / wall, 3) if wall else None,
            "output_tokens_per_s": round(telemetry.output_tokens / wall, 3) if wall else None,
            "tasks_per_s": round(done / wall, 3) if wall else None,
        },
        "llm_calls": telemetry.llm_calls,
        "output_tokens": telemetry.output_tokens,
        "retries_by_cause": telemetry.retry_causes,
        "errors_by_cause": telemetry.error_causes,
        "test_exit_causes": telemetry.exit_causes,
        "rss_timeline": {
            "interval_s": config.sample_interval,
            "t": [round(t, 3) for t in sampler.times],
            "rss_mib": [round(r, 2) for r in sampler.rss_mib],
        },
        "interrupted": bool(stop_signal),
        "interrupted_by_signal": stop_signal[0] if stop_signal else None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "csv": str(paths.csv),
        "versions": {
            "fastagent": __version__,
            "python": sys.version.split()[0],
            "aiohttp": getattr(sys.modules.get("aiohttp"), "__version__", None),
            "uvloop": uvloop.__version__,
            "msgspec": msgspec.__version__,
        },
    }
