"""``fastagent sweep``: the bench at several concurrency levels against one simulated endpoint.

Usage::

    fastagent sweep --concurrency 1,10,100,1000                 # results/sweep_<ts>/
    fastagent sweep --concurrency 1,4 --tasks-per-level 4 --out /tmp/sweep
    fastagent sweep --concurrency 10,100 --sim-profile ttft_ms=200,itl_ms=5 --pure-python
    fastagent sweep --concurrency 100 --bench-arg=--max-retries=1   # any other bench flag

The sweep starts ``fastagent sim`` once (``--port 0``; its ready line gives the URL) and
then runs ``python -m fastagent bench`` once per level, each in a fresh process
(:mod:`fastagent.analysis.children`) so that no level inherits another's heap, with
``--base-url <sim> --model <profile model> --concurrency N --results-dir OUT/c<N>``. Level
``N`` runs ``max(N, --tasks-per-level)`` tasks (default 100), so every agent gets at least
one task. When that is more than the dataset holds, the sweep writes
``OUT/dataset_<n>.json``: the first n tasks of the dataset repeated, the copies' ids
``ID#1``, ``ID#2``, ...; the sim recognises a task by its spec text, so a copy gets the
same planned outcome as the original.

It writes ``OUT/sweep.json`` (after every level, so an interrupted sweep keeps what it
measured), ``OUT/sweep.md`` and a table on stdout: agents, tasks, peak RSS, runtime CPU
per task, runtime overhead per LLM call (p99), event-loop lag (p99), wall time and passes;
and ``OUT/sweep.png`` (those four figures against the number of agents, log x) when
matplotlib is installed (``pip install 'fastagent[plot]'``), else a note. Each level's
figures are read from its summary through :mod:`fastagent.analysis.summaries`.

Cost: every test run starts a pytest, 0.5-1 CPU-second each (1.0 measured on a 2-core
dev box with the sandbox on), and the default profile makes ~1.27 test runs per task (87 %
pass at once, 6 % on the second attempt, 7 % use all 4). ``1,10,100,1000`` with the default
100 tasks per level is 1,300 tasks, ~1,650 test runs: 14-28 CPU-minutes of pytest, so
7-14 minutes of wall time on 2 cores (the 1,000-agent level alone is 5-11) plus ~3 minutes
for level 1, which runs its 100 tasks one at a time. (Measured: levels 10,150 with 10 tasks
per level took 4 minutes.) Tests keep to levels like ``1,2`` with 2 tasks each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cli import bench_flags, build_parser, value_parser
from ..config import Positive
from ..dataset import DatasetError, Task, default_dataset_path, load_tasks, repeat_tasks
from ..errors import ExitCode, ReportError, SweepError
from ..results import write_json_atomic
from ..sim.launcher import SimProcess
from . import children, plots
from .summaries import SummaryView, load_summary
from .tables import MISSING, format_table, format_value

if TYPE_CHECKING:
    from ..sim.profile import SimProfile

__all__ = [
    "COLUMNS",
    "DEFAULT_TASKS_PER_LEVEL",
    "add_arguments",
    "first_tasks",
    "main",
    "parse_levels",
    "render_table",
    "tasks_for_level",
]

PYTEST_CPU_S = 0.5
DEFAULT_TASKS_PER_LEVEL = 100

#: An LLM call's parts (fastagent.telemetry.CallParts), as sweep.json keys and chart labels.
CALL_PARTS: tuple[tuple[str, str], ...] = (
    ("pre_send", "pre-send"),
    ("endpoint_queue", "endpoint queue"),
    ("server", "server"),
    ("last_byte_lag", "last-byte lag"),
    ("runtime_overhead", "runtime overhead"),
)

#: (key of a sweep.json level, the canonical metric it is read from in the level's summary)
_FROM_SUMMARY: tuple[tuple[str, str], ...] = (
    ("tasks_done", "tasks"),
    ("passed", "passed"),
    ("pass_at_1", "pass_at_1"),
    ("peak_rss_mib", "peak_rss_mib"),
    ("runtime_cpu_ms_per_task", "runtime_cpu_ms_per_task"),
    ("runtime_cpu_ms_per_llm_call", "runtime_cpu_ms_per_llm_call"),
    *(
        (f"{part}_{q}_ms", f"latency.{part}_ms.{q}")
        for part, _ in CALL_PARTS
        for q in ("p50", "p99")
    ),
    ("loop_lag_p99_ms", "loop_lag_ms.p99"),
    ("wall_seconds", "wall_seconds"),
    ("peak_agents_in_flight", "peak_agents_in_flight"),
    ("concurrency", "concurrency"),
    ("implementation", "implementation"),
    ("interrupted", "interrupted"),
)

#: (key of a sweep.json level, table header, format; "passed" prints passed/finished)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("agents", "agents", "int"),
    ("tasks", "tasks", "int"),
    ("peak_rss_mib", "peak RSS MiB", "f1"),
    ("runtime_cpu_ms_per_task", "runtime CPU ms/task", "f2"),
    ("runtime_overhead_p99_ms", "runtime overhead/call p99 ms", "f2"),
    ("endpoint_queue_p99_ms", "endpoint queue p99 ms", "f2"),
    ("loop_lag_p99_ms", "loop lag p99 ms", "f2"),
    ("wall_seconds", "wall s", "f1"),
    ("passed", "passed", "passed"),
)

#: (title, ((key, line label), ...)) of the panels of sweep.png
_CHART: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("peak RSS (MiB)", (("peak_rss_mib", ""),)),
    ("runtime CPU per task (ms)", (("runtime_cpu_ms_per_task", ""),)),
    ("event-loop lag p99 (ms)", (("loop_lag_p99_ms", ""),)),
    *(
        (f"an LLM call's parts, {q} (ms)", tuple((f"{p}_{q}_ms", label) for p, label in CALL_PARTS))
        for q in ("p50", "p99")
    ),
)

#: bench settings the sweep makes itself, per level (a --bench-arg may not set them)
_SET_BY_SWEEP = ("base_url", "model", "dataset", "tasks", "repeat", "concurrency",
                 "results_dir", "work_dir", "sim_profile", "resume")  # fmt: skip

_level = value_parser(Positive)


def parse_levels(text: str) -> list[int]:
    """``"1,10,100"`` → ``[1, 10, 100]`` (sorted, duplicates dropped); an argparse ``type``."""
    levels: set[int] = set()
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            levels.add(_level(item.strip()))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= 1 (e.g. 1,10,100), got {text!r}"
            ) from None
    if not levels:
        raise argparse.ArgumentTypeError("give at least one concurrency level, e.g. 1,10,100")
    return sorted(levels)


parse_levels.__name__ = "concurrency levels"  # what argparse names in its own messages


def tasks_for_level(level: int, tasks_per_level: int) -> int:
    """Tasks run at ``level`` agents: at least one per agent."""
    return max(level, tasks_per_level)


def first_tasks(tasks: Sequence[Task], n: int) -> list[Task]:
    """The first ``n`` tasks of ``tasks`` repeated as often as it takes (copies ``ID#k``)."""
    if not tasks:
        raise ValueError("no tasks to repeat")
    return repeat_tasks(list(tasks), -(-n // len(tasks)))[:n]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fastagent sweep``'s options to ``parser``."""
    if not parser.description:
        parser.description = (
            "Run the bench once per concurrency level, each in a fresh process, against one "
            "simulated endpoint, and tabulate peak RSS, CPU, overhead and loop lag. Each test "
            "run costs 0.5-1 CPU-s of pytest: 1,000 tasks take 10-20 CPU-minutes."
        )
    parser.add_argument(
        "--concurrency",
        type=parse_levels,
        required=True,
        metavar="N,N,...",
        help="concurrency levels (agents), e.g. 1,10,100,1000",
    )
    parser.add_argument(
        "--tasks-per-level",
        type=value_parser(Positive),
        default=DEFAULT_TASKS_PER_LEVEL,
        metavar="N",
        help="tasks per level: max(level, N); the dataset is repeated when that "
        f"exceeds it (default {DEFAULT_TASKS_PER_LEVEL})",
    )
    parser.add_argument(
        "--sim-profile",
        default="",
        metavar="K=V,...",
        help="profile of the simulated endpoint, e.g. ttft_ms=200,itl_ms=5 "
        "(see 'fastagent sim --help')",
    )
    parser.add_argument(
        "--max-procs",
        type=value_parser(Positive),
        metavar="N",
        help="concurrent test processes of each bench (default: one per core)",
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="tasks JSON (default: the bundled HumanEval 100); also the sim's",
    )
    parser.add_argument(
        "--pure-python", action="store_true", help="run the bench with the pure-Python speedups"
    )
    parser.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every bench, repeatable; write it as "
        "--bench-arg=--flag=value (the benches read no LLM_*/BENCH_* variables)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default results/sweep_<ts>)"
    )


# ---- checking the options, before anything starts -------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the sweep will run: ``levels`` are (agents, tasks); ``dataset`` is the bench's
    (``base``, or the repeated copy in ``out``), ``base`` the sim's."""

    profile: SimProfile
    out: Path
    base: Path
    dataset: Path
    levels: tuple[tuple[int, int], ...]


def _check_bench_args(extra: Sequence[str]) -> None:
    """The bench's own parser on ``extra``: SweepError for what it refuses, or for a setting
    the sweep makes per level."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            parsed = build_parser("bench").parse_args(["bench", *extra])
    except SystemExit as exc:
        if not exc.code:  # --help or --version: printed, not an error of the parser's
            raise SweepError("--bench-arg: --help and --version are no bench settings") from None
        lines = captured.getvalue().strip().splitlines()
        said = re.sub(r"^fastagent( bench)?: error: ", "", lines[-1]) if lines else ""
        said = said.replace("(see --help)", "(see fastagent bench --help)")
        raise SweepError(f"--bench-arg: {said or ' '.join(extra)}") from None
    flags = {flag.field: flag.flag for flag in bench_flags()}
    for field in _SET_BY_SWEEP:
        if getattr(parsed, field, None) is not None:
            raise SweepError(f"--bench-arg: {flags.get(field, field)} is set by the sweep itself")
    if parsed.check:
        raise SweepError("--bench-arg: --check runs no benchmark")


def _output_dir(text: str | None) -> Path:
    out = Path(text or f"results/sweep_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--out: cannot create {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise SweepError(f"--out: cannot write into {out}")
    return out


def _prepare(args: argparse.Namespace) -> Plan:
    """Every option checked, the output directory made; SweepError (one line) otherwise."""
    from ..sim.profile import parse_profile

    try:
        profile = parse_profile(args.sim_profile or "")
    except ValueError as exc:
        raise SweepError(f"--sim-profile: {exc}") from None
    _check_bench_args(args.bench_arg)
    base = Path(args.dataset) if args.dataset else default_dataset_path()
    try:
        tasks = load_tasks(base)
    except DatasetError as exc:
        raise SweepError(f"--dataset: {exc}") from None
    out = _output_dir(args.out)
    levels = tuple(
        (level, tasks_for_level(level, args.tasks_per_level)) for level in args.concurrency
    )
    most = max(n for _, n in levels)
    dataset = base
    if most > len(tasks):
        dataset = out / f"dataset_{most}.json"
        _write(dataset, lambda path: write_json_atomic(path, first_tasks(tasks, most)))
    return Plan(profile, out, base, dataset, levels)


def _write(path: Path, write: Callable[[Path], object]) -> None:
    try:
        write(path)
    except OSError as exc:
        raise SweepError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---- running the levels ---------------------------------------------------------------------


def _log(line: str) -> None:
    print(f"fastagent sweep: {line}", file=sys.stderr, flush=True)


def _estimate(plan: Plan) -> str:
    total = sum(n for _, n in plan.levels)
    cores = os.cpu_count() or 1
    p = plan.profile
    runs = total * (p.p_first + 2 * p.p_recover + 4 * max(0.0, 1 - p.p_first - p.p_recover))
    floor = runs * PYTEST_CPU_S / cores
    shown = f"{floor / 60:.1f} min" if floor >= 90 else f"{floor:.0f} s"
    return (
        f"{len(plan.levels)} level(s) {', '.join(str(level) for level, _ in plan.levels)}: "
        f"{total} tasks, ~{runs:.0f} test runs; at >= {PYTEST_CPU_S:g} CPU-s each that is at "
        f"least {shown} of tests on {cores} core(s); output in {plan.out}"
    )


def _bench_args(
    plan: Plan, args: argparse.Namespace, base_url: str, level: int, n: int
) -> list[str]:
    results = plan.out / f"c{level}"
    argv = [
        *("--base-url", base_url, "--model", plan.profile.model),
        *("--dataset", str(plan.dataset), "--tasks", str(n), "--concurrency", str(level)),
        *("--work-dir", str(results / "work")),
    ]
    if args.max_procs:
        argv += ["--max-procs", str(args.max_procs)]
    if args.pure_python:
        argv.append("--pure-python")
    return [*argv, *args.bench_arg]


def _row(level: int, n: int, view: SummaryView, run: children.BenchRun) -> dict[str, Any]:
    row: dict[str, Any] = {"agents": level, "tasks": n}
    row.update((key, view[metric]) for key, metric in _FROM_SUMMARY)
    return {**row, "exit_code": run.returncode, "summary": str(view.path)}


def _run_level(
    plan: Plan, args: argparse.Namespace, base_url: str, level: int, n: int
) -> tuple[dict[str, Any] | None, bool, int]:
    """One bench: (its sweep.json row or None, whether to stop after it, the sweep's exit
    code so far)."""
    _log(f"level {level}: {n} tasks at concurrency {level}")
    run = children.run_bench(
        _bench_args(plan, args, base_url, level, n),
        results_dir=plan.out / f"c{level}",
        env=children.child_env(),
    )
    if run.stdout.strip():
        print(run.stdout.rstrip(), file=sys.stderr, flush=True)
    if run.summary is None:
        if run.interrupted:
            return None, True, ExitCode.INTERRUPTED
        _log(f"level {level}: bench exited {run.returncode} without a summary")
        bad = run.returncode == ExitCode.BAD_INPUT
        return None, True, ExitCode.BAD_INPUT if bad else ExitCode.FAILED
    try:
        view = load_summary(run.summary)
    except ReportError as exc:
        _log(f"level {level}: unusable summary: {exc}")
        return None, True, ExitCode.FAILED
    stopped = run.interrupted or run.returncode == ExitCode.INTERRUPTED or bool(view["interrupted"])
    return _row(level, n, view, run), stopped, ExitCode.INTERRUPTED if stopped else ExitCode.OK


# ---- outputs --------------------------------------------------------------------------------


def _cell(key: str, fmt: str, row: dict[str, Any]) -> str:
    if fmt == "passed":
        if row.get(key) is None:
            return MISSING
        return f"{format_value(row[key], 'int')}/{format_value(row.get('tasks_done'), 'int')}"
    return format_value(row.get(key), fmt)


def render_table(rows: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """The sweep table (plain text or Markdown)."""
    return format_table(
        [header for _, header, _ in COLUMNS],
        [[_cell(key, fmt, row) for key, _, fmt in COLUMNS] for row in rows],
        markdown=markdown,
        align=[">"] * len(COLUMNS),
    )


def _describe(meta: dict[str, Any]) -> str:
    profile = meta.get("sim_profile") or {}
    shown = ", ".join(f"{k}={v}" for k, v in profile.items() if v not in (None, (), [], {}))
    return (
        f"python/{meta.get('implementation') or '?'}, simulated endpoint ({shown}), "
        f"max procs {meta.get('max_procs') or 'one per core'}, dataset {meta.get('dataset')}"
    )


def _write_outputs(out: Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    _write(out / "sweep.json", lambda path: write_json_atomic(path, {**meta, "levels": rows}))
    markdown = [
        f"# fastagent sweep {meta['started_at']}",
        "",
        _describe(meta),
        "",
        render_table(rows, markdown=True),
        "",
        "Each level is a fresh `fastagent bench` process; peak RSS is its kernel high-water "
        "mark (VmHWM); an LLM call's runtime overhead is its pre-send plus last-byte lag, the "
        "endpoint queue the time from its last request byte to the endpoint starting it "
        "(docs/results.md).",
    ]
    if meta.get("interrupted"):
        markdown += ["", "**Interrupted**: the table covers the levels that finished."]
    text = "\n".join(markdown) + "\n"
    _write(out / "sweep.md", lambda path: path.write_text(text, encoding="utf-8"))


def _chart(out: Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    title = f"fastagent sweep: python/{meta['implementation']}, simulated endpoint"
    try:
        _log(f"wrote {plots.sweep_chart(rows, _CHART, out / 'sweep.png', title)}")
    except ReportError as exc:
        _log(f"chart skipped: {exc}")


def _meta(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "implementation": None,
        "sim_profile": plan.profile.as_dict(),
        "base_url": None,
        "dataset": str(plan.base),
        "bench_dataset": str(plan.dataset),
        "tasks_per_level": args.tasks_per_level,
        "max_procs": args.max_procs,
        "pure_python": bool(args.pure_python),
        "bench_args": list(args.bench_arg),
        "interrupted": False,
    }


def main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Run the sweep: 0 when every level wrote a summary, 1 when one did not, 130 when
    interrupted. Bad input raises SweepError before anything starts (the CLI prints one
    line and exits 2); so does a simulated endpoint that does not start."""
    plan = _prepare(args)
    meta = _meta(args, plan)
    rows: list[dict[str, Any]] = []
    _write_outputs(plan.out, meta, rows)
    _log(_estimate(plan))
    code: int = ExitCode.OK
    sim = SimProcess.for_bench(str(plan.base), args.sim_profile)
    with children.sigterm_as_interrupt():
        try:
            meta["base_url"] = sim.start()
            _log(f"simulated endpoint at {sim.base_url} (pid {sim.pid})")
            for level, n in plan.levels:
                row, stop, code = _run_level(plan, args, sim.base_url, level, n)
                if row is not None:
                    rows.append(row)
                    meta["implementation"] = meta["implementation"] or row["implementation"]
                    _write_outputs(plan.out, meta, rows)
                if stop:
                    break
        except KeyboardInterrupt:
            code = ExitCode.INTERRUPTED
        finally:
            sim.stop()
    if code == ExitCode.INTERRUPTED:
        meta["interrupted"] = True
        _log("interrupted: the table covers the levels that finished")
    _write_outputs(plan.out, meta, rows)
    (out or print)(f"fastagent sweep: {_describe(meta)}\n{render_table(rows)}")
    if rows:
        _chart(plan.out, meta, rows)
    _log(f"wrote {plan.out / 'sweep.md'} and {plan.out / 'sweep.json'}")
    return code
