"""``fastagent sweep``: the bench at several concurrency levels against one simulated endpoint.

Usage::

    fastagent sweep --concurrency 1,10,100,1000                 # results/sweep_<ts>/
    fastagent sweep --concurrency 1,4 --tasks-per-level 4 --out /tmp/sweep
    fastagent sweep --concurrency 10,100 --sim-profile ttft_ms=200,itl_ms=5 --pure-python
    fastagent sweep --concurrency 100 --bench-arg=--max-retries=1   # any other bench flag

The sweep starts ``fastagent sim`` once (``--port 0``; its ready line gives the URL) and
then runs ``python -m fastagent bench`` once per level, each in a fresh process so that no
level inherits another's heap, with ``--base-url <sim> --model <profile model>
--concurrency N --results-dir OUT/c<N>``. Level ``N`` runs ``max(N, --tasks-per-level)``
tasks (default 100), so every agent gets at least one task. When that is more than the
dataset holds, the sweep writes ``OUT/dataset_<n>.json``: the dataset repeated, the
copies' ids suffixed ``#1``, ``#2``, ...; the sim recognises a task by its spec text, so a
copy gets the same planned outcome as the original.

It writes ``OUT/sweep.json`` (after every level, so an interrupted sweep keeps what it
measured), ``OUT/sweep.md`` and a table on stdout: agents, tasks, peak RSS, runtime CPU
per task, runtime overhead per LLM call (p99), event-loop lag (p99), wall time and passes;
and ``OUT/sweep.png`` (those four figures against the number of agents, log x) when
matplotlib is installed (``pip install 'fastagent[plot]'``), else a note.

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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import FastAgentError, SweepError

__all__ = [
    "COLUMNS",
    "SweepError",
    "add_arguments",
    "main",
    "parse_levels",
    "repeat_tasks",
    "tasks_for_level",
    "write_chart",
]

EXIT_BAD_INPUT = 2
PYTEST_CPU_S = 0.5
DEFAULT_TASKS_PER_LEVEL = 100

# (key in sweep.json rows, table header)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("agents", "agents"),
    ("tasks", "tasks"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("runtime_cpu_ms_per_task", "runtime CPU ms/task"),
    ("llm_overhead_p99_ms", "overhead/call p99 ms"),
    ("loop_lag_p99_ms", "loop lag p99 ms"),
    ("wall_seconds", "wall s"),
    ("passed", "passed"),
)

# (key, chart title) of the four panels of sweep.png
_CHART = (
    ("peak_rss_mib", "peak RSS (MiB)"),
    ("runtime_cpu_ms_per_task", "runtime CPU per task (ms)"),
    ("llm_overhead_p99_ms", "runtime overhead per LLM call, p99 (ms)"),
    ("loop_lag_p99_ms", "event-loop lag p99 (ms)"),
)


def parse_levels(text: str) -> list[int]:
    """``"1,10,100"`` → ``[1, 10, 100]`` (sorted, duplicates dropped); for argparse ``type``."""
    levels: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"concurrency levels must be comma-separated integers, got {item!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"concurrency levels must be >= 1, got {value}")
        levels.add(value)
    if not levels:
        raise argparse.ArgumentTypeError("give at least one concurrency level, e.g. 1,10,100")
    return sorted(levels)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def tasks_for_level(level: int, tasks_per_level: int) -> int:
    """Tasks run at ``level`` agents: at least one per agent."""
    return max(level, tasks_per_level)


def repeat_tasks(tasks: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` tasks of ``tasks`` repeated: copy ``k >= 1`` has ids ``<id>#k``."""
    if not tasks:
        raise ValueError("no tasks to repeat")
    out = []
    for i in range(n):
        k, j = divmod(i, len(tasks))
        task = tasks[j]
        out.append({**task, "id": task["id"] if k == 0 else f"{task['id']}#{k}"})
    return out


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
        type=_positive_int,
        default=DEFAULT_TASKS_PER_LEVEL,
        metavar="N",
        help="tasks per level: max(level, N); the dataset is repeated when that exceeds it "
        f"(default {DEFAULT_TASKS_PER_LEVEL})",
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
        type=_positive_int,
        metavar="N",
        help="concurrent test processes of each bench (default: one per core)",
    )
    parser.add_argument(
        "--dataset", help="tasks JSON (default: the bundled HumanEval 100); also given to the sim"
    )
    parser.add_argument(
        "--pure-python", action="store_true", help="run the bench with the pure-Python speedups"
    )
    parser.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every bench, repeatable; write it as --bench-arg=--flag=value",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default results/sweep_<ts>)"
    )


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _row(level: int, n: int, summary: dict[str, Any], path: Path, code: int) -> dict[str, Any]:
    return {
        "agents": level,
        "tasks": n,
        "tasks_done": _get(summary, "outcomes.tasks"),
        "passed": _get(summary, "outcomes.passed"),
        "pass_at_1": _get(summary, "outcomes.pass_at_1"),
        "peak_rss_mib": _get(summary, "memory.peak_rss_mib"),
        "runtime_cpu_ms_per_task": _get(summary, "cpu.runtime_ms_per_task"),
        "runtime_cpu_ms_per_llm_call": _get(summary, "cpu.runtime_ms_per_llm_call"),
        "llm_overhead_p99_ms": _get(summary, "latency.llm_overhead_ms.p99"),
        "loop_lag_p99_ms": _get(summary, "loop_lag_ms.p99"),
        "wall_seconds": summary.get("wall_seconds"),
        "peak_agents_in_flight": _get(summary, "totals.peak_agents_in_flight"),
        "concurrency": _get(summary, "settings.concurrency"),
        "implementation": summary.get("implementation"),
        "interrupted": summary.get("interrupted"),
        "exit_code": code,
        "summary": str(path),
    }


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row.get(key)
    if key == "passed":
        done = row.get("tasks_done")
        return "—" if value is None else f"{value}/{done}"
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1f}" if key in ("peak_rss_mib", "wall_seconds") else f"{value:.2f}"
    return str(value)


def render_table(rows: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The sweep table (plain text or Markdown)."""
    from .report import format_table

    return format_table(
        [header for _, header in COLUMNS],
        [[_cell(key, row) for key, _ in COLUMNS] for row in rows],
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


def _write_outputs(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    data = {**meta, "levels": rows}
    tmp = out / ".sweep.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "sweep.json")
    markdown = [
        f"# fastagent sweep {meta['started_at']}",
        "",
        _describe(meta),
        "",
        render_table(rows, markdown=True),
        "",
        "Each level is a fresh `fastagent bench` process; peak RSS is its kernel high-water "
        "mark (VmHWM), overhead/call is client E2E − server time per LLM call.",
    ]
    if meta.get("interrupted"):
        markdown += ["", "**Interrupted**: the table covers the levels that finished."]
    (out / "sweep.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")


def write_chart(rows: list[dict[str, Any]], path: Path, title: str = "") -> bool:
    """Write the 4-panel chart; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    for ax, (key, label) in zip(axes, _CHART, strict=True):
        points = [(r["agents"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o")
            for x, y in points:
                ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize="small")  # fmt: skip
        ax.set_xscale("log")
        ax.minorticks_off()
        levels = [r["agents"] for r in rows]
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.set_xlabel("concurrent agents")
        ax.set_title(label)
        top = max((y for _, y in points), default=0)
        ax.set_ylim(0, top * 1.2 if top > 0 else 1)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return True


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the sim and the bench get stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_bench(cmd: list[str]) -> tuple[int, str, bool]:
    """Run one bench: (exit code, its stdout, whether the sweep was interrupted meanwhile).

    On Ctrl-C or SIGTERM the bench is sent SIGINT (unless it got it too) and given a minute
    to write the summary of the tasks it finished.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = proc.communicate()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            stdout, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
        return proc.returncode, stdout or "", True
    return proc.returncode, stdout, False


def _newest_summary(results_dir: Path) -> Path | None:
    found = sorted(results_dir.glob("*_summary.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _prepare(args: argparse.Namespace) -> tuple[Any, Path, Path, list[tuple[int, int]], Path]:
    """Validate the options; returns (profile, out dir, base dataset, plan, bench dataset)."""
    from ..dataset import DatasetError, default_dataset_path, load_tasks
    from ..sim.app import parse_profile

    try:
        profile = parse_profile(args.sim_profile or "")
    except ValueError as exc:
        raise SweepError(f"--sim-profile: {exc}") from None
    base = Path(args.dataset) if args.dataset else default_dataset_path()
    try:
        tasks = load_tasks(base)
    except DatasetError as exc:
        raise SweepError(str(exc)) from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out or f"results/sweep_{stamp}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    plan = [(level, tasks_for_level(level, args.tasks_per_level)) for level in args.concurrency]
    most = max(n for _, n in plan)
    dataset = base
    if most > len(tasks):
        rows = json.loads(base.read_text(encoding="utf-8"))
        dataset = out / f"dataset_{most}.json"
        dataset.write_text(json.dumps(repeat_tasks(rows, most)), encoding="utf-8")
    return profile, out, base, plan, dataset


def main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Run the sweep: 0 when every level wrote a summary, 1 when one did not, 2 on bad input,
    130 when interrupted."""
    from ..sim.launcher import SimProcess

    emit = out or print

    def log(line: str) -> None:
        print(f"fastagent sweep: {line}", file=sys.stderr, flush=True)

    try:
        profile, out_dir, base, plan, dataset = _prepare(args)
    except SweepError as exc:
        print(f"fastagent sweep: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    total = sum(n for _, n in plan)
    cores = os.cpu_count() or 1
    wrong = max(0.0, 1 - profile.p_first - profile.p_recover)
    runs = total * (profile.p_first + 2 * profile.p_recover + 4 * wrong)
    floor = runs * PYTEST_CPU_S / cores
    log(
        f"{len(plan)} level(s) {', '.join(str(level) for level, _ in plan)}: {total} tasks, "
        f"~{runs:.0f} test runs; at >= {PYTEST_CPU_S:g} CPU-s each that is at least "
        f"{f'{floor / 60:.1f} min' if floor >= 90 else f'{floor:.0f} s'} of tests on {cores} "
        f"core(s); output in {out_dir}"
    )
    meta: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "implementation": None,
        "sim_profile": profile.as_dict(),
        "base_url": None,
        "dataset": str(base),
        "bench_dataset": str(dataset),
        "tasks_per_level": args.tasks_per_level,
        "max_procs": args.max_procs,
        "pure_python": bool(args.pure_python),
        "bench_args": list(args.bench_arg),
        "interrupted": False,
    }
    rows: list[dict[str, Any]] = []
    code = 0
    sim_args = ["--dataset", str(base)]
    if args.sim_profile:
        sim_args += ["--profile", args.sim_profile]
    sim = SimProcess(sim_args)
    with _sigterm_as_interrupt():
        try:
            try:
                meta["base_url"] = sim.start()
            except FastAgentError as exc:
                print(f"fastagent sweep: error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            log(f"simulated endpoint at {sim.base_url} (pid {sim.pid})")
            for level, n in plan:
                results_dir = out_dir / f"c{level}"
                cmd = [
                    sys.executable, "-m", "fastagent", "bench",
                    "--base-url", sim.base_url, "--model", profile.model,
                    "--dataset", str(dataset), "--tasks", str(n), "--concurrency", str(level),
                    "--results-dir", str(results_dir), "--work-dir", str(results_dir / "work"),
                ]  # fmt: skip
                if args.max_procs:
                    cmd += ["--max-procs", str(args.max_procs)]
                if args.pure_python:
                    cmd.append("--pure-python")
                cmd += args.bench_arg
                log(f"level {level}: {n} tasks at concurrency {level}")
                bench_code, stdout, interrupted = _run_bench(cmd)
                if stdout.strip():
                    print(stdout.rstrip(), file=sys.stderr, flush=True)
                path = _newest_summary(results_dir)
                if path is None and interrupted:
                    raise KeyboardInterrupt
                if path is None:
                    log(f"level {level}: bench exited {bench_code} without a summary")
                    code = EXIT_BAD_INPUT if bench_code == EXIT_BAD_INPUT else 1
                    break
                summary = json.loads(path.read_text(encoding="utf-8"))
                rows.append(_row(level, n, summary, path, bench_code))
                meta["implementation"] = meta["implementation"] or summary.get("implementation")
                _write_outputs(out_dir, meta, rows)
                if interrupted or bench_code == 130 or summary.get("interrupted"):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            meta["interrupted"] = True
            code = 130
            log("interrupted: the table covers the levels that finished")
        finally:
            sim.stop()

    _write_outputs(out_dir, meta, rows)
    emit(f"fastagent sweep: {_describe(meta)}\n{render_table(rows)}")
    if rows:
        title = f"fastagent sweep: python/{meta['implementation']}, simulated endpoint"
        if write_chart(rows, out_dir / "sweep.png", title):
            log(f"wrote {out_dir / 'sweep.png'}")
        else:
            log("chart skipped: matplotlib is not installed (pip install 'fastagent[plot]')")
    log(f"wrote {out_dir / 'sweep.md'} and {out_dir / 'sweep.json'}")
    return code
