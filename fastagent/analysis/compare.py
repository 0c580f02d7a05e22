"""``fastagent compare``: the referee that runs any stack under identical conditions and
measures each the same way, from outside.

Usage::

    fastagent compare fastagent="fastagent bench" \\
        openai-sdk="stacks/openai-sdk/.venv/bin/python stacks/openai-sdk/runner.py"
    fastagent compare a="fastagent bench" b="fastagent bench --pure-python" \\
        --tasks 10 --concurrency 10 --repeats 2 --out /tmp/cmp --plot

Each ``NAME=COMMAND`` is a shell command line of a runner that follows the benchmark's
runner contract (``LLM_BASE_URL``, ``LLM_MODEL``, ``BENCH_DATASET``, ``BENCH_CONCURRENCY``;
results in ``results/raw/<stack>_<ts>.csv`` and ``_summary.json`` of its working
directory). The referee

* starts ONE simulated endpoint (``fastagent sim``, its own process, one profile and seed)
  and serves every stack from it, its per-run counters reset before each run;
* runs the stacks interleaved, ``A B C A B C ...`` for ``--repeats`` rounds, so drift on a
  shared machine hits all alike, and waits for an idle machine before each run
  (:mod:`.idle`);
* runs each in a fresh working directory holding the first ``--tasks`` tasks at
  ``dataset/humaneval_100.json`` (:mod:`.compare_run`); relative paths in a command that
  exist where ``fastagent compare`` was started are made absolute;
* measures the runtime process from outside, found by the process rule (:mod:`.proctree`),
  and reads what the endpoint saw and what the stack says of itself;
* writes ``OUT/compare.json`` (:mod:`.compare_schema`; ``docs/compare.schema.json``),
  ``OUT/compare.md`` (:mod:`.compare_table`, ratios to the first stack), each run's log and
  summary under ``OUT/runs/``, and with ``--plot`` ``OUT/compare.png``.

A stack that fails gets one line on stderr and its run's ``error``; the others go on. Exit
status: 0 when every run was good, 1 when one was not, 2 for bad input (one line), 130 when
interrupted (what was measured is written).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import psutil
from msgspec import Meta

from ..cli import value_parser
from ..config import Positive, Seconds
from ..dataset import DatasetError, Task, default_dataset_path, load_tasks
from ..errors import CompareError, ExitCode, ReportError
from ..results import write_json_atomic
from ..sim.launcher import SimProcess
from . import children, plots
from .compare_run import Endpoint, RunSpec, resolve_command, run_stack
from .compare_schema import (
    COMPARE_SCHEMA_VERSION,
    Comparison,
    EndpointInfo,
    Machine,
    RunFigures,
    Settings,
    StackResult,
)
from .compare_table import BY_KEY, render_markdown, render_text, stack_stats, work_differs
from .idle import IdleRule, wait_idle
from .proctree import RULE as PROCESS_RULE

__all__ = ["PROCESS_RULE", "add_arguments", "main", "parse_stack"]


Fraction = Annotated[float, Meta(ge=0, le=1)]
NonNegative = Annotated[float, Meta(ge=0, le=86_400)]
_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")
_PLOTTED = (
    "peak_rss_mib",
    "cpu_seconds",
    "wall_seconds",
    "peak_descendants_rss_mib",
    "ttft_p50_ms",
    "requests",
)


def parse_stack(text: str) -> tuple[str, str]:
    """``NAME=COMMAND`` → (name, command); an argparse ``type``."""
    name, sep, command = text.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"expected NAME=COMMAND with NAME of letters, digits, '.', '_', '+' or '-', "
            f"got {text!r}"
        )
    if not command.strip():
        raise argparse.ArgumentTypeError(f"{name}: the command is empty")
    return name, command.strip()


parse_stack.__name__ = "NAME=COMMAND"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fastagent compare``'s options to ``parser``."""
    parser.add_argument(
        "stacks",
        nargs="+",
        type=parse_stack,
        metavar="NAME=COMMAND",
        help="a stack and the shell command line of its runner",
    )
    number = value_parser(Positive)
    parser.add_argument(
        "--tasks",
        type=number,
        default=100,
        metavar="N",
        help="the first N tasks of the dataset (default 100)",
    )
    parser.add_argument(
        "--concurrency",
        type=number,
        default=100,
        metavar="N",
        help="BENCH_CONCURRENCY of every run (default 100)",
    )
    parser.add_argument(
        "--repeats",
        type=number,
        default=3,
        metavar="R",
        help="rounds of runs, A B C A B C ... (default 3)",
    )
    parser.add_argument(
        "--sim-profile",
        default="",
        metavar="K=V,...",
        help="the endpoint's profile (see 'fastagent sim --help')",
    )
    parser.add_argument(
        "--timeout",
        type=value_parser(Seconds),
        default=3600.0,
        metavar="S",
        help="a run still going after S seconds is killed (default 3600)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default results/compare_<ts>)"
    )
    parser.add_argument("--plot", action="store_true", help="also draw OUT/compare.png")
    parser.add_argument(
        "--dataset", metavar="PATH", help="tasks JSON (default: the bundled HumanEval 100)"
    )
    parser.add_argument(
        "--idle-threshold",
        type=value_parser(Fraction),
        default=0.25,
        metavar="F",
        help="idle: at most this share of all cores busy (default 0.25)",
    )
    parser.add_argument(
        "--idle-cap",
        type=value_parser(NonNegative),
        default=60.0,
        metavar="S",
        help="wait at most S seconds for an idle machine before a run; 0: do not wait (default 60)",
    )
    parser.add_argument(
        "--sample-interval",
        type=value_parser(Seconds),
        default=0.2,
        metavar="S",
        help="how often the process tree is walked (default 0.2)",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep each run's working directory (in the temp dir)",
    )


# ---- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    names: tuple[str, ...]
    commands: tuple[str, ...]
    resolved: tuple[str, ...]
    tasks: tuple[Task, ...]
    dataset: Path
    out: Path
    rule: IdleRule
    profile: dict[str, object]
    model: str


def _output_dir(text: str | None) -> Path:
    out = Path(text or f"results/compare_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompareError(f"--out: cannot create {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CompareError(f"--out: cannot write into {out}")
    return out


def _prepare(args: argparse.Namespace) -> Plan:
    """Every option checked, the output directory made; CompareError (one line) otherwise."""
    from ..sim.profile import parse_profile

    names = [name for name, _ in args.stacks]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CompareError(f"stack name given twice: {', '.join(twice)}")
    try:
        profile = parse_profile(args.sim_profile or "")
    except ValueError as exc:
        raise CompareError(f"--sim-profile: {exc}") from None
    dataset = Path(args.dataset) if args.dataset else default_dataset_path()
    try:
        tasks = load_tasks(dataset, args.tasks)
    except DatasetError as exc:
        raise CompareError(f"--tasks/--dataset: {exc}") from None
    origin = Path.cwd()
    commands = tuple(command for _, command in args.stacks)
    rule = IdleRule(threshold=args.idle_threshold, cap=args.idle_cap)
    return Plan(
        names=tuple(names),
        commands=commands,
        resolved=tuple(resolve_command(command, origin) for command in commands),
        tasks=tuple(tasks),
        dataset=dataset.resolve(),
        out=_output_dir(args.out),
        rule=rule,
        profile=profile.as_dict(),
        model=profile.model,
    )


def _machine() -> Machine:
    return Machine(
        cores=os.cpu_count() or 1,
        memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
        kernel=platform.release(),
        python=platform.python_version(),
        load_at_start=[round(x, 2) for x in os.getloadavg()],
        note="the figures are of runs measured side by side on this machine, interleaved; "
        "it may have been shared with other work (see each run's idle wait): compare "
        "medians and ratios within this file, not absolute figures across machines",
    )


def _report(plan: Plan, args: argparse.Namespace) -> Comparison:
    settings = Settings(
        tasks=len(plan.tasks),
        concurrency=args.concurrency,
        repeats=args.repeats,
        timeout_s=args.timeout,
        dataset=str(plan.dataset),
        sim_profile=plan.profile,
        sample_interval_s=args.sample_interval,
        fast_interval_s=0.02,
        idle_rule=plan.rule.describe(),
        process_rule=PROCESS_RULE,
    )
    stacks = [
        StackResult(name=name, command=command, command_run=resolved, runs=[], stats={}, errors=[])
        for name, command, resolved in zip(plan.names, plan.commands, plan.resolved, strict=True)
    ]
    return Comparison(
        schema_version=COMPARE_SCHEMA_VERSION,
        started_at=_now(),
        finished_at=None,
        interrupted=False,
        machine=_machine(),
        settings=settings,
        endpoint=None,
        order=[],
        stacks=stacks,
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- outputs --------------------------------------------------------------------------------


def _log(line: str) -> None:
    print(f"fastagent compare: {line}", file=sys.stderr, flush=True)


def _intro(report: Comparison) -> list[str]:
    s, m = report.settings, report.machine
    profile = ", ".join(f"{k}={v}" for k, v in s.sim_profile.items() if v not in ((), [], None))
    lines = [
        f"# fastagent compare {report.started_at}",
        "",
        f"{s.tasks} tasks at concurrency {s.concurrency}, {s.repeats} repeat(s) per stack, "
        f"interleaved ({' '.join(report.order) or 'no runs'}); one simulated endpoint for "
        f"all ({profile}). Machine: {m.cores} cores, {m.memory_gib} GiB, Linux {m.kernel}, "
        f"load {'/'.join(map(str, m.load_at_start))} at the start.",
        "",
        f"- Idle rule: {s.idle_rule}.",
        f"- Process rule: {s.process_rule}.",
        f"- {m.note[0].upper()}{m.note[1:]}.",
        "- Ratios (×) are to the first stack's median; cv = sample stdev / mean over the runs.",
    ]
    if report.interrupted:
        lines += ["", "**Interrupted**: the tables cover the runs that finished."]
    differs = work_differs(report)
    if differs:
        lines += ["", f"**{differs}.**"]
    errors = [f"- {st.name}: {err}" for st in report.stacks for err in st.errors]
    if errors:
        lines += ["", "Runs that failed (left out of the medians):", "", *errors]
    return lines


def _write(path: Path, write: Callable[[Path], object]) -> None:
    try:
        write(path)
    except OSError as exc:
        raise CompareError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_outputs(out: Path, report: Comparison) -> None:
    _write(out / "compare.json", lambda path: write_json_atomic(path, report))
    text = render_markdown(report, _intro(report))
    _write(out / "compare.md", lambda path: path.write_text(text, encoding="utf-8"))


def _chart(out: Path, report: Comparison) -> None:
    tasks = report.settings.tasks
    panels = []
    for key in _PLOTTED:
        figure = BY_KEY[key]
        values = [
            [
                v
                for v in (figure.read(run, tasks) for run in st.runs if run.error is None)
                if v is not None
            ]
            for st in report.stacks
        ]
        panels.append((figure.label, values))
    names = [st.name for st in report.stacks]
    title = (
        f"fastagent compare: {tasks} tasks, {report.settings.concurrency} agents, "
        f"median and min–max of {report.settings.repeats} run(s)"
    )
    try:
        _log(f"wrote {plots.compare_chart(names, panels, out / 'compare.png', title)}")
    except ReportError as exc:
        _log(f"chart skipped: {exc}")


# ---- the runs ---------------------------------------------------------------------------------


def _one_line(run: RunFigures) -> str:
    rt, ep = run.runtime, run.endpoint
    parts = [f"{run.stack}#{run.repeat}: wall {run.wall_seconds:.1f} s"]
    if rt is not None:
        parts.append(
            f"peak RSS {rt.peak_rss_mib:.1f} MiB, CPU {rt.cpu_seconds:.2f} s "
            f"(pid {rt.pid}, depth {rt.depth})"
        )
    if ep is not None:
        parts.append(f"{ep.requests} requests, peak {ep.peak_streams} streams")
    return ", ".join(parts)


def _run_all(plan: Plan, args: argparse.Namespace, report: Comparison, sim: SimProcess) -> None:
    """Every run, interleaved; compare.json rewritten after each. KeyboardInterrupt stops it."""
    base_url = sim.start()
    endpoint = Endpoint(base_url, plan.model, sim.pid or 0)
    report.endpoint = EndpointInfo(base_url=base_url, model=plan.model, pid=endpoint.pid)
    _log(f"simulated endpoint at {base_url} (pid {endpoint.pid}); output in {plan.out}")
    order = [(repeat, i) for repeat in range(1, args.repeats + 1) for i in range(len(plan.names))]
    for position, (repeat, i) in enumerate(order, 1):
        stack = report.stacks[i]
        idle = wait_idle(plan.rule)
        how = "idle" if idle.idle else "not idle, cap reached"
        _log(
            f"run {position}/{len(order)}: {stack.name}#{repeat} (waited {idle.waited_s:.1f} s, "
            f"{how})"
        )
        spec = RunSpec(
            stack=stack.name,
            command=stack.command_run,
            repeat=repeat,
            position=position,
            tasks=plan.tasks,
            concurrency=args.concurrency,
            timeout=args.timeout,
            runs_dir=plan.out / "runs",
            sample_interval=args.sample_interval,
            keep_work=args.keep_work,
        )
        run = run_stack(spec, endpoint, idle)
        stack.runs.append(run)
        stack.stats = stack_stats(stack.runs, len(plan.tasks))
        report.order.append(f"{stack.name}#{repeat}")
        if run.error is not None:
            stack.errors.append(f"run {repeat}: {run.error}")
            _log(f"{stack.name}#{repeat}: error: {run.error}")
        else:
            _log(_one_line(run))
        for flag in run.flags:
            _log(f"{stack.name}#{repeat}: note: {flag}")
        _write_outputs(plan.out, report)
        if run.error == "interrupted":
            raise KeyboardInterrupt


def main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Run the comparison; the exit status as the module says."""
    plan = _prepare(args)
    report = _report(plan, args)
    _write_outputs(plan.out, report)
    _log(plan.rule.describe())
    sim = SimProcess(["--dataset", str(plan.dataset), "--profile", args.sim_profile or ""])
    code: int = ExitCode.OK
    with children.sigterm_as_interrupt():
        try:
            _run_all(plan, args, report, sim)
        except KeyboardInterrupt:
            report.interrupted = True
            code = ExitCode.INTERRUPTED
        finally:
            sim.stop()
    report.finished_at = _now()
    _write_outputs(plan.out, report)
    differs = work_differs(report)
    (out or print)(
        f"fastagent compare: {len(plan.tasks)} tasks, concurrency "
        f"{args.concurrency}, {args.repeats} repeat(s)\n{render_text(report)}"
        + (f"\n{differs}." if differs else "")
    )
    if args.plot:
        _chart(plan.out, report)
    _log(f"wrote {plan.out / 'compare.md'} and {plan.out / 'compare.json'}")
    failed = any(st.errors for st in report.stacks)
    return code if code != ExitCode.OK else (ExitCode.FAILED if failed else ExitCode.OK)


def decode_report(raw: bytes) -> Comparison:
    """``compare.json`` decoded (and so checked) against the schema."""
    return msgspec.json.decode(raw, type=Comparison)
