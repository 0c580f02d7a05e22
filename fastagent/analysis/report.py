"""``fastagent report``: benchmark summaries side by side.

Usage::

    fastagent report results/raw/python_A_summary.json results/raw/python_B_summary.json \\
        results/raw/cpp_C_summary.json
    fastagent report RUN... --format markdown          # a Markdown table for the README
    fastagent report RUN... --label cython --label pure --label cpp
    fastagent report RUN... --plot results/plots       # PNG charts (needs fastagent[plot])

Each argument is a ``*_summary.json``: this stack's (schema 2, or the flat schema 1) or
another stack's, read through :data:`fastagent.analysis.summaries.METRICS`. Each row of
the table is one canonical metric (:data:`SECTIONS` says which, in what order and how
printed); a value a run does not report shows as ``—``, and a row no run reports is left
out. Columns are the runs, labelled ``<runtime>[/<implementation>] c=<concurrency>``;
where a ratio means something (memory, CPU, time, latency, throughput) the columns after
the first also show ``(×r)``, the value divided by the first column's. Keys of a file that
no metric reads are listed under the table.

Bad input (a missing file, not JSON, not a summary, a ``--plot`` without matplotlib or
that cannot be written) raises :class:`~fastagent.errors.ReportError`: the CLI prints one
line and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExitCode, ReportError
from . import plots
from .summaries import BY_NAME, SummaryView, load_summary
from .tables import MISSING, format_table, format_value, ratio

__all__ = ["SECTIONS", "Row", "Run", "add_arguments", "load_run", "main", "render"]


@dataclass(frozen=True)
class Row:
    """One row: the canonical ``metric``, its ``label``, how to print it (``fmt``, see
    :func:`fastagent.analysis.tables.format_value`) and whether ``(×r)`` means something."""

    metric: str
    label: str
    fmt: str = "f2"
    ratio: bool = False


def _percentiles(name: str, label: str) -> list[Row]:
    return [
        Row(f"latency.{name}.{q}", f"{label} {q} (ms)", ratio=True) for q in ("p50", "p95", "p99")
    ]


#: The endpoint row's metric: the simulator's profile, else "real" (computed per run).
_ENDPOINT = "sim_profile"

SECTIONS: tuple[tuple[str, tuple[Row, ...]], ...] = (
    ("run", (
        Row("model", "model", "text"),
        Row(_ENDPOINT, "endpoint", "profile"),
        Row("verify", "verification", "text"),
        Row("sandbox", "test sandbox", "text"),
        Row("http_client", "HTTP client", "text"),
        Row("stream", "streamed completions", "text"),
        Row("concurrency", "concurrency", "int"),
        Row("max_procs", "max test processes", "int"),
        Row("max_retries", "max retries", "int"),
        Row("repeat", "dataset repeats", "int"),
        Row("tasks", "tasks", "int"),
        Row("interrupted", "interrupted", "text"),
    )),
    ("outcomes (model properties)", (
        Row("passed", "passed", "int"),
        Row("pass_at_1", "pass@1", "pct"),
        Row("first_attempt_passes", "first-attempt passes", "int"),
        Row("recovered", "recovered", "int"),
        Row("failed", "failed", "int"),
        Row("errors", "errors", "int"),
        Row("avg_retries", "avg retries", "f2"),
        Row("retries_by_cause", "retries by cause", "causes"),
        Row("errors_by_cause", "errors by cause", "causes"),
        Row("test_exit_causes", "test exits", "causes"),
    )),
    ("runtime cost", (
        Row("peak_rss_mib", "peak RSS (MiB)", "f1", ratio=True),
        Row("wall_seconds", "wall (s)", "f1", ratio=True),
        Row("runtime_cpu_seconds", "runtime CPU (s)", "f2", ratio=True),
        Row("runtime_cpu_ms_per_task", "runtime CPU / task (ms)", "f2", ratio=True),
        Row("runtime_cpu_ms_per_llm_call", "runtime CPU / LLM call (ms)", "f2", ratio=True),
        Row("children_cpu_seconds", "test processes CPU (s)", "f1", ratio=True),
        Row("peak_children", "peak test processes", "int"),
        Row("peak_children_rss_mib", "peak test processes RSS (MiB)", "f1", ratio=True),
        Row("peak_agents_in_flight", "peak agents in flight", "int"),
        Row("open_fds_at_end", "open fds at the end", "int"),
        Row("live_children_at_end", "live children at the end", "int"),
        Row("loop_lag_ms.p50", "event-loop lag p50 (ms)", "f2", ratio=True),
        Row("loop_lag_ms.p99", "event-loop lag p99 (ms)", "f2", ratio=True),
        Row("loop_lag_ms.max", "event-loop lag max (ms)", "f2", ratio=True),
    )),
    ("per LLM call", (
        *_percentiles("runtime_overhead_ms", "runtime overhead"),
        *_percentiles("first_byte_wait_ms", "wait for the first byte"),
        *_percentiles("pre_send_ms", "pre-send"),
        *_percentiles("endpoint_queue_ms", "endpoint queue"),
        *_percentiles("server_ms", "server"),
        *_percentiles("first_byte_lag_ms", "first-byte lag"),
        *_percentiles("last_byte_lag_ms", "last-byte lag"),
        *_percentiles("llm_overhead_ms", "E2E − server (schema 1)"),
        *_percentiles("llm_queue_wait_ms", "queue wait (schema 1)"),
        *_percentiles("ttft_ms", "TTFT"),
        *_percentiles("itl_ms", "ITL"),
        *_percentiles("tpot_ms", "TPOT"),
        *_percentiles("llm_e2e_ms", "E2E"),
    )),
    ("per task", (
        *_percentiles("task_wall_ms", "task wall"),
        *_percentiles("task_overhead_ms", "task overhead"),
        *_percentiles("tool_spawn_ms", "test spawn"),
        *_percentiles("tool_wall_ms", "test run"),
    )),
    ("throughput", (
        Row("llm_calls", "LLM calls", "int"),
        Row("output_tokens", "output tokens", "int"),
        Row("throughput.requests_per_s", "LLM requests / s", "f2", ratio=True),
        Row("throughput.output_tokens_per_s", "output tokens / s", "f1", ratio=True),
        Row("throughput.tasks_per_s", "tasks / s", "f3", ratio=True),
    )),
)  # fmt: skip

_unknown = [row.metric for _, rows in SECTIONS for row in rows if row.metric not in BY_NAME]
if _unknown:  # pragma: no cover - a mistake in SECTIONS
    raise AssertionError(f"SECTIONS rows without a metric in summaries.METRICS: {_unknown}")

#: Rows whose runs should agree for a comparison to be fair (a note says when they do not).
_COMPARABLE = (("concurrency", "concurrency"), ("tasks", "tasks"), ("model", "model"))


@dataclass
class Run:
    """One column: a summary and its label."""

    view: SummaryView
    label: str


def default_label(view: SummaryView) -> str:
    """``<runtime>[/<implementation>] c=<concurrency>``; the runtime from the file name
    (``cpp_<ts>_summary.json``) when the summary does not say."""
    runtime = view["runtime"]
    if not runtime:
        stem = view.path.name.split("_", 1)[0]
        runtime = stem if stem and stem != view.path.name else "?"
    label = str(runtime)
    if view["implementation"]:
        label += f"/{view['implementation']}"
    if view["concurrency"] is not None:
        label += f" c={format_value(view['concurrency'], 'int')}"
    return label


def load_run(path: str | os.PathLike[str], label: str | None = None) -> Run:
    """One column: the summary at ``path`` (ReportError when unusable) and its label."""
    view = load_summary(path)
    return Run(view, label or default_label(view))


def _value(run: Run, row: Row) -> object:
    if row.metric == _ENDPOINT:
        if run.view[_ENDPOINT]:
            return run.view[_ENDPOINT]
        return "real" if run.view["simulated"] is False else None
    return run.view[row.metric]


def build_rows(runs: Sequence[Run]) -> list[Sequence[str] | str]:
    """Section headings (``str``) and metric rows (``[label, cell, ...]``); a row no run
    reports is left out, and so is a section left empty."""
    out: list[Sequence[str] | str] = []
    for title, rows in SECTIONS:
        body: list[Sequence[str] | str] = []
        for row in rows:
            values = [_value(run, row) for run in runs]
            if all(value is None for value in values):
                continue
            cells = [row.label]
            for i, value in enumerate(values):
                cell = format_value(value, row.fmt)
                if row.ratio and i and value is not None:
                    cell += ratio(value, values[0])
                cells.append(cell)
            body.append(cells)
        if body:
            out.append(title)
            out.extend(body)
    return out


def _notes(runs: Sequence[Run], *, markdown: bool) -> list[str]:
    notes = []
    if len(runs) > 1:
        notes.append(f"(×r) = value / the first column's ({runs[0].label}).")
    notes.append(f"{MISSING} = not reported by that run.")
    for metric, what in _COMPARABLE:
        seen = [run.view[metric] for run in runs]
        if len({str(v) for v in seen if v is not None}) > 1:
            shown = ", ".join(format_value(v, "int") for v in seen)
            notes.append(f"runs differ in {what} ({shown}): compare with care")
    for run in runs:
        if run.view.unrecognised:
            notes.append(f"{run.label}: keys not shown: {', '.join(run.view.unrecognised)}")
    if not markdown:
        notes.extend(f"{run.label}: {run.view.path}" for run in runs)
    return notes


def render(runs: Sequence[Run], *, markdown: bool = False) -> str:
    """The side-by-side table with its notes under it."""
    headers = ["metric", *[run.label for run in runs]]
    table = format_table(headers, build_rows(runs), markdown=markdown)
    notes = _notes(runs, markdown=markdown)
    return "\n".join([table, "", *(f"- {n}" if markdown else n for n in notes)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fastagent report``'s arguments to ``parser``."""
    if not parser.description:
        parser.description = (
            "Print benchmark summaries side by side (this stack's and other stacks'), "
            "with ratios to the first one; optionally draw charts."
        )
    parser.add_argument(
        "results",
        nargs="+",
        metavar="SUMMARY",
        help="*_summary.json files; the first is the base of the (×) ratios",
    )
    parser.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="text (aligned columns, default) or a Markdown table",
    )
    parser.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="column label, once per SUMMARY in order (default: runtime/implementation c=N)",
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help=f"also write PNG charts into DIR (needs matplotlib: {plots.PLOT_HINT})",
    )


def _dedupe_labels(runs: Sequence[Run]) -> None:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
        if counts[run.label] > 1:
            run.label = f"{run.label} #{counts[run.label]}"


def load_runs(paths: Sequence[str], labels: Sequence[str] | None) -> list[Run]:
    """The columns, labelled (``labels``: one per path, or None for the default labels)."""
    if labels and len(labels) != len(paths):
        raise ReportError(f"--label given {len(labels)} time(s) for {len(paths)} summaries")
    runs = [load_run(path, labels[i] if labels else None) for i, path in enumerate(paths)]
    _dedupe_labels(runs)
    return runs


def main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Run ``fastagent report``: 0 when the table was printed.

    Raises ReportError on bad input, before anything is printed (the CLI turns it into one
    line on stderr and exit status 2).
    """
    runs = load_runs(args.results, args.label)
    written: list[Path] = []
    if args.plot:
        try:
            written = plots.report_charts([(run.label, run.view) for run in runs], args.plot)
        except ReportError as exc:
            raise ReportError(f"--plot: {exc}") from None
    try:
        (out or print)(render(runs, markdown=args.format == "markdown"))
        if out is None:
            sys.stdout.flush()
    except BrokenPipeError:  # `fastagent report ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return ExitCode.OK
