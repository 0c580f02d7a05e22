"""The figures of ``fastagent compare``: each run's, their spread over repeats, and the tables.

:data:`FIGURES` is the one list of what is summarised per stack (``compare.json``'s
``stats``) and how a table shows it; :func:`spread` is the median, min-max and coefficient
of variation of one figure over the runs that measured it::

    >>> s = spread([30.0, 31.0, 29.0])
    >>> s.median, s.min, s.max, round(s.cv, 4)
    (30.0, 29.0, 31.0, 0.0333)

Standard library and msgspec only.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .compare_schema import Comparison, RunFigures, Spread, StackResult
from .tables import MISSING, format_table, format_value

__all__ = [
    "FIGURES",
    "Figure",
    "render_markdown",
    "render_text",
    "spread",
    "stack_stats",
    "work_differs",
]


@dataclass(frozen=True)
class Figure:
    """One figure: its ``stats`` key, table label, cell format, and how to read it from a run
    (given the run and the number of tasks)."""

    key: str
    label: str
    fmt: str
    read: Callable[[RunFigures, int], float | None]


def _rt(name: str) -> Callable[[RunFigures, int], float | None]:
    def read(run: RunFigures, _: int) -> float | None:
        value = None if run.runtime is None else getattr(run.runtime, name)
        return None if value is None else float(value)

    return read


def _ep(name: str) -> Callable[[RunFigures, int], float | None]:
    def read(run: RunFigures, _: int) -> float | None:
        value = None if run.endpoint is None else getattr(run.endpoint, name)
        return None if value is None else float(value)

    return read


def _ttft(stat: str) -> Callable[[RunFigures, int], float | None]:
    return lambda run, _: None if run.endpoint is None else getattr(run.endpoint.ttft_ms, stat)


def _self(name: str) -> Callable[[RunFigures, int], float | None]:
    return lambda run, _: None if run.self_reported is None else getattr(run.self_reported, name)


def _cpu_per_task(run: RunFigures, tasks: int) -> float | None:
    return None if run.runtime is None else run.runtime.cpu_seconds * 1000 / tasks


def _cpu_per_request(run: RunFigures, _: int) -> float | None:
    if run.runtime is None or run.endpoint is None or not run.endpoint.requests:
        return None
    return run.runtime.cpu_seconds * 1000 / run.endpoint.requests


# fmt: off
FIGURES: tuple[Figure, ...] = (
    Figure("peak_rss_mib", "peak RSS MiB", "f1", _rt("peak_rss_mib")),
    Figure("cpu_seconds", "runtime CPU s", "f2", _rt("cpu_seconds")),
    Figure("cpu_ms_per_task", "runtime CPU ms/task", "f2", _cpu_per_task),
    Figure("cpu_ms_per_request", "runtime CPU ms/request", "f2", _cpu_per_request),
    Figure("startup_cpu_seconds", "start-up CPU s", "f2", _rt("startup_cpu_seconds")),
    Figure("children_cpu_seconds", "children CPU s", "f1", _rt("children_cpu_seconds")),
    Figure("peak_descendants", "peak descendants", "int", _rt("peak_descendants")),
    Figure("peak_descendants_rss_mib", "descendants' peak RSS MiB", "f1",
           _rt("peak_descendants_rss_mib")),
    Figure("wall_seconds", "wall s", "f1", lambda run, _: run.wall_seconds),
    Figure("requests", "requests", "int", _ep("requests")),
    Figure("output_tokens", "output tokens", "int", _ep("output_tokens")),
    Figure("peak_streams", "peak streams", "int", _ep("peak_streams")),
    Figure("ttft_p50_ms", "TTFT served p50 ms", "f1", _ttft("p50")),
    Figure("ttft_p99_ms", "TTFT served p99 ms", "f1", _ttft("p99")),
    Figure("server_seconds", "server s", "f1", _ep("server_seconds")),
    Figure("endpoint_cpu_seconds", "endpoint CPU s", "f2", _ep("cpu_seconds")),
    Figure("unplaced", "unplaced requests", "int", _ep("unplaced")),
    Figure("self_peak_rss_mib", "self-reported peak RSS MiB", "f1", _self("peak_rss_mib")),
    Figure("self_cpu_seconds", "self-reported CPU s", "f2", _self("cpu_seconds")),
    Figure("self_wall_seconds", "self-reported wall s", "f1", _self("wall_seconds")),
    Figure("passed", "passed", "int", _self("passed")),
    Figure("referee_cpu_seconds", "referee CPU s", "f2", lambda run, _: run.referee_cpu_seconds),
)
# fmt: on
BY_KEY = {figure.key: figure for figure in FIGURES}


def spread(values: Sequence[float]) -> Spread:
    """Median, min, max and coefficient of variation (sample stdev / mean) of ``values``."""
    if not values:
        return Spread(n=0, median=None, min=None, max=None, cv=None)
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if len(values) > 1 and mean else None
    return Spread(
        n=len(values),
        median=round(statistics.median(values), 4),
        min=min(values),
        max=max(values),
        cv=None if cv is None else round(cv, 4),
    )


def stack_stats(runs: Sequence[RunFigures], tasks: int) -> dict[str, Spread]:
    """Each figure's spread over the runs without an error."""
    good = [run for run in runs if run.error is None]
    out = {}
    for figure in FIGURES:
        values = [v for v in (figure.read(run, tasks) for run in good) if v is not None]
        out[figure.key] = spread([float(v) for v in values])
    return out


def work_differs(report: Comparison) -> str | None:
    """A sentence when the stacks did not do the same work (their passes or requests differ):
    against one endpoint and one plan, both are the same for every stack that runs the loop."""
    stacks = [s for s in report.stacks if any(run.error is None for run in s.runs)]
    shown = []
    for key, word in (("passed", "passed"), ("requests", "requests")):
        medians = [_median(s, key) for s in stacks]
        known = [m for m in medians if m is not None]
        if len(known) > 1 and max(known) > min(known) * 1.02:
            cells = ", ".join(
                f"{s.name} {format_value(m, 'int')}" for s, m in zip(stacks, medians, strict=True)
            )
            shown.append(f"{word}: {cells}")
    if not shown:
        return None
    return (
        "The stacks did not do the same work (" + "; ".join(shown) + "): the same endpoint "
        "and plan give every stack that runs the same loop the same passes and requests, so "
        "the per-task and per-request figures are the fairer comparison"
    )


# ---- tables ----------------------------------------------------------------------------------


def _median(stack: StackResult, key: str) -> float | None:
    found = stack.stats.get(key)
    return None if found is None else found.median


def _cell(stack: StackResult, key: str, *, span: bool = True) -> str:
    found = stack.stats.get(key)
    if found is None or found.median is None:
        return MISSING
    fmt = BY_KEY[key].fmt
    text = format_value(found.median, fmt)
    if span and found.n > 1:
        text += f" ({format_value(found.min, fmt)}–{format_value(found.max, fmt)})"
    return text


def _ratio(stack: StackResult, base: StackResult, key: str) -> str:
    value, ref = _median(stack, key), _median(base, key)
    if value is None or ref is None or ref == 0:
        return MISSING
    return f"×{value / ref:.2f}"


def _cv(stack: StackResult, key: str) -> str:
    found = stack.stats.get(key)
    return MISSING if found is None or found.cv is None else f"{found.cv * 100:.1f} %"


def _runs_ok(stack: StackResult) -> str:
    return f"{sum(run.error is None for run in stack.runs)}/{len(stack.runs)}"


def _outside(report: Comparison) -> tuple[list[str], list[list[str]]]:
    base = report.stacks[0]
    headers = [
        "stack",
        "runs ok",
        "peak RSS MiB",
        "×",
        "cv",
        "runtime CPU s",
        "×",
        "cv",
        "CPU ms/task",
        "CPU ms/request",
        "of which start-up s",
        "descendants peak n / MiB",
        "wall s",
        "×",
    ]
    rows = [
        [
            s.name,
            _runs_ok(s),
            _cell(s, "peak_rss_mib"),
            _ratio(s, base, "peak_rss_mib"),
            _cv(s, "peak_rss_mib"),
            _cell(s, "cpu_seconds"),
            _ratio(s, base, "cpu_seconds"),
            _cv(s, "cpu_seconds"),
            _cell(s, "cpu_ms_per_task", span=False),
            _cell(s, "cpu_ms_per_request", span=False),
            _cell(s, "startup_cpu_seconds", span=False),
            f"{_cell(s, 'peak_descendants', span=False)} / "
            f"{_cell(s, 'peak_descendants_rss_mib', span=False)}",
            _cell(s, "wall_seconds"),
            _ratio(s, base, "wall_seconds"),
        ]
        for s in report.stacks
    ]
    return headers, rows


def _endpoint(report: Comparison) -> tuple[list[str], list[list[str]]]:
    keys = (
        "requests",
        "output_tokens",
        "peak_streams",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "server_seconds",
        "endpoint_cpu_seconds",
        "unplaced",
    )
    headers = ["stack", *(BY_KEY[key].label for key in keys)]
    rows = [[s.name, *(_cell(s, key, span=False) for key in keys)] for s in report.stacks]
    return headers, rows


def _self_beside(report: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = [
        "stack",
        "passed",
        "peak RSS MiB: stack / referee",
        "CPU s: stack / referee",
        "wall s: stack / referee",
        "flags",
    ]
    rows = []
    for s in report.stacks:
        pairs = [
            f"{_cell(s, mine, span=False)} / {_cell(s, ours, span=False)}"
            for mine, ours in (
                ("self_peak_rss_mib", "peak_rss_mib"),
                ("self_cpu_seconds", "cpu_seconds"),
                ("self_wall_seconds", "wall_seconds"),
            )
        ]
        flags = sum(len(run.flags) for run in s.runs)
        rows.append([s.name, _cell(s, "passed", span=False), *pairs, str(flags)])
    return headers, rows


def _runs(report: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["#", "run", "idle wait s (busy)", "exit", "peak RSS MiB", "CPU s", "error / flags"]
    runs = sorted((run for s in report.stacks for run in s.runs), key=lambda r: r.position)
    rows = []
    for run in runs:
        busy = MISSING if run.idle.busy_share is None else f"{run.idle.busy_share * 100:.0f} %"
        wait = f"{run.idle.waited_s:.1f} ({busy}{'' if run.idle.idle else ', cap'})"
        notes = "; ".join(([run.error] if run.error else []) + run.flags) or "ok"
        rows.append(
            [
                str(run.position),
                f"{run.stack}#{run.repeat}",
                wait,
                format_value(run.exit_code, "int"),
                format_value(run.runtime.peak_rss_mib if run.runtime else None, "f1"),
                format_value(run.runtime.cpu_seconds if run.runtime else None, "f2"),
                notes,
            ]
        )
    return headers, rows


def render_text(report: Comparison) -> str:
    """The table of what was measured from outside, as plain text."""
    return format_table(*_outside(report))


def render_markdown(report: Comparison, intro: Sequence[str]) -> str:
    """compare.md: ``intro`` lines, then the tables."""
    parts = [*intro, "", "## Measured from outside (median, min–max over the runs)", ""]
    parts.append(format_table(*_outside(report), markdown=True))
    parts += ["", "## What the endpoint saw (median per run)", ""]
    parts.append(format_table(*_endpoint(report), markdown=True))
    parts += ["", "## Self-reported beside the referee's (medians)", ""]
    parts.append(format_table(*_self_beside(report), markdown=True))
    headers, rows = _runs(report)
    parts += ["", "## Every run, in the order run", ""]
    align = [">", "<", ">", ">", ">", ">", "<"]
    parts.append(format_table(headers, rows, markdown=True, align=align))
    return "\n".join(parts) + "\n"
