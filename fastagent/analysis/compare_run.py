"""One run of one stack under the referee: its directory, its command, what was measured.

:func:`run_stack` makes a fresh working directory holding the tasks at
``dataset/humaneval_100.json``, starts ``/bin/sh -c COMMAND`` there in a session of its own
with the runner contract's variables (``LLM_BASE_URL``, ``LLM_MODEL``, ``BENCH_DATASET``,
``BENCH_CONCURRENCY``), follows its process tree (:class:`~.proctree.TreeWatch`) until the
command's process exits, kills whatever of the tree is still alive, reads the endpoint's
counters for the run and the summary the stack wrote, and returns a
:class:`~.compare_schema.RunFigures`. Nothing here raises for a stack that fails: the run's
``error`` says what went wrong, in one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil

from ..dataset import DATASET_NAME, Task
from ..errors import CompareError, ReportError
from ..sim.wire import SimRun
from . import children
from .compare_schema import (
    EndpointFigures,
    Idle,
    RunFigures,
    RuntimeFigures,
    SelfReported,
)
from .idle import IdleWait
from .proctree import Record, TreeWatch
from .summaries import load_summary

__all__ = [
    "RSS_TOLERANCE",
    "Endpoint",
    "RunSpec",
    "resolve_command",
    "run_stack",
    "tail",
]

#: Self-reported and referee peak RSS further apart than this are flagged.
RSS_TOLERANCE = 0.05
#: How long a stack that outlived --timeout (or an interrupt) gets after SIGTERM.
KILL_GRACE = 10.0
_LOG_TAIL = 200

# ---- the command ----------------------------------------------------------------------------

#: A bare word with a slash in it, not inside $(...) or after a $: a path, maybe relative.
_PATH_WORD = re.compile(r"(?<![^\s;&|()<>'\"=])([\w.+~-]*/[\w.+/-]*)(?![^\s;&|()<>'\"])")


def resolve_command(command: str, origin: Path) -> str:
    """``command`` with each relative path that exists under ``origin`` made absolute (the
    command runs in a fresh directory; ``stacks/x/runner.py`` means the one under origin)."""

    def absolute(match: re.Match[str]) -> str:
        word = match.group(1)
        if word.startswith(("/", "~")):
            return word
        # normalised, never resolved: a venv's bin/python is a link to the base interpreter
        target = os.path.normpath(origin / word)
        shown = target + ("/" if word.endswith("/") else "")
        safe = re.fullmatch(r"[\w.+/-]+", shown) is not None
        return shown if safe and (origin / word).exists() else word

    return _PATH_WORD.sub(absolute, command)


# ---- the endpoint's counters ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The one simulated endpoint: its URL, model and process."""

    base_url: str
    model: str
    pid: int

    @property
    def port(self) -> int:
        return int(self.base_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def _call(self, path: str, method: str = "GET") -> SimRun:
        request = urllib.request.Request(
            self.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return msgspec.json.decode(response.read(), type=SimRun)

    def reset(self) -> int:
        """A new run at the endpoint (``POST /v1/sim/run/reset``); returns its epoch.
        CompareError when the endpoint does not answer (nothing can be measured against it)."""
        try:
            return self._call("/sim/run/reset", "POST").epoch
        except (OSError, msgspec.DecodeError) as exc:
            raise CompareError(f"the simulated endpoint stopped answering: {exc}") from None

    def stats(self) -> SimRun:
        """The run's figures so far (``GET /v1/sim/run``)."""
        return self._call("/sim/run")

    def cpu_seconds(self) -> float | None:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.pid).cpu_times()
            return float(times.user + times.system)
        return None


# ---- one run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """What to run and where its traces go."""

    stack: str
    command: str
    repeat: int
    position: int
    tasks: tuple[Task, ...]
    concurrency: int
    timeout: float
    runs_dir: Path
    sample_interval: float = 0.2
    fast_interval: float = 0.02
    keep_work: bool = False

    @property
    def label(self) -> str:
        return f"{self.stack}-r{self.repeat}"


@dataclass
class _Outcome:
    """How the command's process ended."""

    exit_code: int | None
    wall: float
    timed_out: bool = False
    interrupted: bool = False


def _workdir(spec: RunSpec) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f"fastagent-compare-{spec.label}-"))
    (work / "dataset").mkdir()
    (work / "dataset" / DATASET_NAME).write_bytes(msgspec.json.encode(list(spec.tasks)))
    return work


def _env(spec: RunSpec, endpoint: Endpoint, work: Path) -> dict[str, str]:
    return children.child_env(
        {
            "LLM_BASE_URL": endpoint.base_url,
            "LLM_MODEL": endpoint.model,
            "BENCH_DATASET": str(work / "dataset" / DATASET_NAME),
            "BENCH_CONCURRENCY": str(spec.concurrency),
        }
    )


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the command's process group, SIGKILL once ``grace`` s have passed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait(proc: subprocess.Popen[bytes], started: float, timeout: float) -> _Outcome:
    try:
        code = proc.wait(timeout)
        return _Outcome(code, time.monotonic() - started)
    except subprocess.TimeoutExpired:
        _kill_group(proc, KILL_GRACE)
        return _Outcome(proc.returncode, time.monotonic() - started, timed_out=True)
    except KeyboardInterrupt:
        _kill_group(proc, KILL_GRACE)
        return _Outcome(proc.returncode, time.monotonic() - started, interrupted=True)


def _kill_leftovers(records: list[Record]) -> int:
    """Stop the tree's processes that outlived its root (SIGTERM, then SIGKILL)."""
    procs = []
    for record in records:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(record.pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=3)
    return len(procs)


def tail(path: Path, lines: int = _LOG_TAIL) -> str:
    """The last ``lines`` lines of the file (all of it when shorter)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _runtime_figures(watch: TreeWatch) -> RuntimeFigures | None:
    picked = watch.pick()
    if picked is None:
        return None
    r = picked.record
    return RuntimeFigures(
        pid=r.pid,
        command_line=r.command_line,
        depth=r.depth,
        endpoint_connections=r.max_connections,
        holders=picked.holders,
        peak_rss_mib=round(r.hwm_kib / 1024, 2),
        cpu_seconds=round(r.cpu_s, 3),
        startup_cpu_seconds=None if r.startup_cpu_s is None else round(r.startup_cpu_s, 3),
        children_cpu_seconds=round(r.children_cpu_s, 3),
        peak_descendants=r.peak_descendants,
        peak_descendants_rss_mib=round(r.peak_descendants_rss_kib / 1024, 2),
        lifetime_s=round(r.last_seen - r.first_seen, 3),
        samples=r.samples,
    )


def _endpoint_figures(
    endpoint: Endpoint, epoch: int, cpu_before: float | None
) -> tuple[EndpointFigures | None, str | None]:
    try:
        stats = endpoint.stats()
    except (OSError, msgspec.DecodeError) as exc:
        return None, f"the endpoint's counters could not be read: {exc}"
    if stats.epoch != epoch:
        return None, f"the endpoint's counters were reset during the run (epoch {stats.epoch})"
    cpu_after = endpoint.cpu_seconds()
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return EndpointFigures(
        requests=stats.requests,
        unplaced=stats.unplaced,
        output_tokens=stats.output_tokens,
        peak_streams=stats.peak_streams,
        ttft_ms=stats.ttft_ms,
        server_ms=stats.server_ms,
        server_seconds=round(stats.server_seconds, 3),
        cpu_seconds=None if cpu is None else round(cpu, 3),
    ), None


def _self_reported(
    work: Path, run_dir: Path, runtime: RuntimeFigures | None, tasks: int
) -> tuple[SelfReported | None, list[str]]:
    found = sorted((work / "results" / "raw").glob("*_summary.json"), key=os.path.getmtime)
    if not found:
        return None, ["the stack wrote no results/raw/*_summary.json"]
    copy = run_dir / found[-1].name
    shutil.copyfile(found[-1], copy)
    try:
        view = load_summary(copy)
    except ReportError as exc:
        return None, [f"its summary is unreadable: {exc}"]
    rss = view.number("peak_rss_mib")
    ours = runtime.peak_rss_mib if runtime else None
    diff = rss / ours - 1 if rss is not None and ours else None
    flags = []
    if view.number("tasks") not in (None, float(tasks)):
        flags.append(
            f"the stack reports {view.number('tasks'):g} tasks of the {tasks} it was given"
        )
    if diff is not None and abs(diff) > RSS_TOLERANCE:
        flags.append(
            f"peak RSS: the stack reports {rss:.1f} MiB, the referee saw {ours:.1f} MiB "
            f"({diff * 100:+.1f} %, beyond ±{RSS_TOLERANCE * 100:g} %)"
        )
    report = SelfReported(
        summary=str(copy.relative_to(run_dir.parent.parent)),
        runtime=view["runtime"],
        tasks=view.number("tasks"),
        passed=view.number("passed"),
        errors=view.number("errors"),
        peak_rss_mib=rss,
        cpu_seconds=view.number("runtime_cpu_seconds"),
        wall_seconds=view.number("wall_seconds"),
        rss_difference=None if diff is None else round(diff, 4),
    )
    return report, flags


def _error(outcome: _Outcome, spec: RunSpec, log: str) -> str | None:
    if outcome.interrupted:
        return "interrupted"
    if outcome.timed_out:
        return f"timed out after {spec.timeout:g} s (killed): {_last_line(log)}"
    if outcome.exit_code:
        how = (
            f"killed by signal {-outcome.exit_code}"
            if outcome.exit_code < 0
            else f"exit status {outcome.exit_code}"
        )
        return f"{how}: {_last_line(log)}"
    return None


def _judged(
    error: str | None,
    runtime: RuntimeFigures | None,
    endpoint: EndpointFigures | None,
    flags: list[str],
) -> str | None:
    """The run's one-line error: the command's own, else what makes its figures unusable."""
    if error is not None:
        return error
    if endpoint is not None and endpoint.unplaced:
        return (
            f"the endpoint could not place {endpoint.unplaced} of {endpoint.requests} requests: "
            "no message held a task's spec text, so its answers were not the task's"
        )
    if runtime is None:
        return "no process of the command connected to the endpoint"
    if runtime.holders > 1:
        flags.append(
            f"{runtime.holders} processes held endpoint connections; measured the one holding "
            "the most"
        )
    return None


def run_stack(spec: RunSpec, endpoint: Endpoint, idle: IdleWait) -> RunFigures:
    """Run ``spec`` once against ``endpoint`` (KeyboardInterrupt stops it: ``error`` says
    interrupted)."""
    run_dir = spec.runs_dir / spec.label
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "output.log"
    epoch = endpoint.reset()
    work = _workdir(spec)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sim_cpu = endpoint.cpu_seconds()
    referee_cpu = _own_cpu()
    try:
        with open(log_path, "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                ["/bin/sh", "-c", spec.command],
                cwd=work,
                env=_env(spec, endpoint, work),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            watch = TreeWatch(proc.pid, endpoint.port, spec.sample_interval, spec.fast_interval)
            watch.start()
            outcome = _wait(proc, started, spec.timeout)
            watch.stop()
        leftovers = _kill_leftovers(watch.alive())
        runtime = _runtime_figures(watch)
        endpoint_figures, endpoint_error = _endpoint_figures(endpoint, epoch, sim_cpu)
        self_report, flags = _self_reported(work, run_dir, runtime, len(spec.tasks))
    finally:
        if not spec.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    log_text = tail(log_path)
    if leftovers:
        flags.append(f"{leftovers} of its processes outlived it and were killed")
    error = _judged(
        _error(outcome, spec, log_text) or endpoint_error, runtime, endpoint_figures, flags
    )
    return RunFigures(
        stack=spec.stack,
        repeat=spec.repeat,
        position=spec.position,
        started_at=started_at,
        exit_code=outcome.exit_code,
        error=error,
        flags=flags,
        wall_seconds=round(outcome.wall, 3),
        idle=Idle(waited_s=idle.waited_s, busy_share=idle.busy_share, idle=idle.idle),
        runtime=runtime,
        endpoint=endpoint_figures,
        self_reported=self_report,
        leftover_processes=leftovers,
        referee_cpu_seconds=round(_own_cpu() - referee_cpu, 3),
        log=str(log_path.relative_to(spec.runs_dir.parent)),
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
