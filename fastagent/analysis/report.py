"""``fastagent report``: compare benchmark summaries side by side.

Usage::

    fastagent report results/raw/python_A_summary.json results/raw/python_B_summary.json \\
        results/raw/cpp_C_summary.json
    fastagent report RUN... --format markdown          # a Markdown table for the README
    fastagent report RUN... --label cython --label pure --label cpp
    fastagent report RUN... --plot results/plots       # PNG charts (needs fastagent[plot])

Each argument is a ``*_summary.json``: this stack's own (``runtime: python``, cython or
pure speedups) or another stack's, whose key names differ. Every row of the table is one
of this stack's summary keys; ``ALIASES`` maps the names other stacks are known (or
expected) to use onto it, with a unit scale, and a value no alias finds shows as ``—``.
Columns are the runs, labelled ``<runtime>[/<implementation>] c=<concurrency>``; where a
ratio means something (memory, CPU, time, latency, throughput) columns after the first
also show ``(×r)``: the value divided by the first column's.

Bad input (a missing file, not JSON, not a summary) prints one line and exits 2. The table
uses only the standard library; ``--plot`` imports matplotlib (Agg backend) only when it
runs, and ``fastagent bench`` never imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ReportError

__all__ = [
    "ALIASES",
    "MISSING",
    "SECTIONS",
    "Metric",
    "ReportError",
    "Run",
    "add_arguments",
    "format_table",
    "load_run",
    "main",
    "render",
    "write_plots",
]

MISSING = "—"
EXIT_BAD_INPUT = 2
PLOT_HINT = "pip install 'fastagent[plot]'"


@dataclass(frozen=True)
class Metric:
    """One row: ``key`` is a dotted path in this stack's summary, ``fmt`` how to print it.

    ``fmt``: ``int``, ``f1``/``f2``/``f3`` (decimals), ``pct`` (a fraction shown as %),
    ``text``, ``bool``, ``causes`` ({cause: count}) or ``profile`` (the sim profile).
    ``ratio``: whether "× the first column" means something for this row.
    """

    key: str
    label: str
    fmt: str = "f2"
    ratio: bool = False


def _latency_rows(name: str, label: str) -> list[Metric]:
    return [
        Metric(f"latency.{name}_ms.{q}", f"{label} {q} (ms)", "f2", ratio=True)
        for q in ("p50", "p95", "p99")
    ]


SECTIONS: list[tuple[str, list[Metric]]] = [
    (
        "run",
        [
            Metric("model", "model", "text"),
            Metric("sim_profile", "endpoint", "profile"),
            Metric("verify", "verification", "text"),
            Metric("sandbox", "test sandbox", "text"),
            Metric("http_client", "HTTP client", "text"),
            Metric("concurrency", "concurrency", "int"),
            Metric("max_procs", "max test processes", "int"),
            Metric("tasks", "tasks", "int"),
        ],
    ),
    (
        "outcomes (model properties)",
        [
            Metric("passed", "passed", "int"),
            Metric("pass_at_1", "pass@1", "pct"),
            Metric("first_attempt_passes", "first-attempt passes", "int"),
            Metric("recovered", "recovered", "int"),
            Metric("failed", "failed", "int"),
            Metric("errors", "errors", "int"),
            Metric("avg_retries", "avg retries", "f2"),
            Metric("retries_by_cause", "retries by cause", "causes"),
            Metric("errors_by_cause", "errors by cause", "causes"),
        ],
    ),
    (
        "runtime cost",
        [
            Metric("peak_rss_mib", "peak RSS (MiB)", "f1", ratio=True),
            Metric("wall_seconds", "wall (s)", "f1", ratio=True),
            Metric("runtime_cpu_seconds", "runtime CPU (s)", "f2", ratio=True),
            Metric("runtime_cpu_ms_per_task", "runtime CPU / task (ms)", "f2", ratio=True),
            Metric("runtime_cpu_ms_per_llm_call", "runtime CPU / LLM call (ms)", "f2", ratio=True),
            Metric("children_cpu_seconds", "test processes CPU (s)", "f1", ratio=True),
            Metric("peak_children", "peak test processes", "int"),
            Metric("peak_children_rss_mib", "peak test processes RSS (MiB)", "f1", ratio=True),
            Metric("peak_agents_in_flight", "peak agents in flight", "int"),
            Metric("loop_lag_ms.p50", "event-loop lag p50 (ms)", "f2", ratio=True),
            Metric("loop_lag_ms.p99", "event-loop lag p99 (ms)", "f2", ratio=True),
            Metric("loop_lag_ms.max", "event-loop lag max (ms)", "f2", ratio=True),
        ],
    ),
    (
        "per LLM call",
        [
            *_latency_rows("llm_overhead", "runtime overhead"),
            *_latency_rows("llm_queue_wait", "queue wait"),
            *_latency_rows("ttft", "TTFT"),
            *_latency_rows("itl", "ITL"),
            *_latency_rows("tpot", "TPOT"),
            *_latency_rows("llm_e2e", "E2E"),
        ],
    ),
    (
        "per task",
        [
            *_latency_rows("task_wall", "task wall"),
            *_latency_rows("task_overhead", "task overhead"),
            *_latency_rows("tool_spawn", "test spawn"),
            *_latency_rows("tool_wall", "test run"),
        ],
    ),
    (
        "throughput",
        [
            Metric("llm_calls", "LLM calls", "int"),
            Metric("output_tokens", "output tokens", "int"),
            Metric("throughput.requests_per_s", "LLM requests / s", "f2", ratio=True),
            Metric("throughput.output_tokens_per_s", "output tokens / s", "f1", ratio=True),
            Metric("throughput.tasks_per_s", "tasks / s", "f3", ratio=True),
        ],
    ),
]

# Names other stacks use (or are expected to use) for this stack's keys, with the factor
# that converts their unit into ours. The first alias found wins; this stack's own key is
# always tried first. Add a line here when a stack's summary grows a key we can read.
ALIASES: dict[str, tuple[tuple[str, float], ...]] = {
    "runtime": (("language", 1), ("stack", 1), ("lang", 1)),
    "implementation": (("variant", 1), ("build", 1)),
    "model": (("llm_model", 1), ("model_name", 1)),
    "concurrency": (("bench_concurrency", 1), ("concurrency_level", 1), ("workers", 1)),
    "tasks": (("total_tasks", 1), ("num_tasks", 1), ("n_tasks", 1), ("task_count", 1)),
    "passed": (("num_passed", 1), ("tasks_passed", 1), ("pass_count", 1)),
    "pass_at_1": (("pass@1", 1), ("pass_rate", 1), ("pass_at_1_pct", 0.01), ("pass_pct", 0.01)),
    "first_attempt_passes": (
        ("first_attempt_pass", 1),
        ("first_attempt", 1),
        ("first_try_pass", 1),
        ("passed_first_attempt", 1),
    ),
    "recovered": (("recovered_via_self_review", 1), ("self_review_recovered", 1)),
    "failed": (("num_failed", 1), ("failed_after_retries", 1), ("tasks_failed", 1)),
    "errors": (("num_errors", 1), ("errored", 1)),
    "avg_retries": (("mean_retries", 1), ("average_retries", 1), ("retries_avg", 1)),
    "wall_seconds": (
        ("wall_time_s", 1),
        ("wall_s", 1),
        ("wall_time_sec", 1),
        ("elapsed_s", 1),
        ("total_time_s", 1),
        ("wall_time_ms", 0.001),
        ("wall_ms", 0.001),
    ),
    "peak_rss_mib": (
        ("peak_rss_mb", 1),  # the C++ README reports this figure in MiB
        ("peak_rss_MiB", 1),
        ("peak_rss_kib", 1 / 1024),
        ("peak_rss_kb", 1 / 1024),
        ("peak_rss_bytes", 1 / 1048576),
    ),
    "runtime_cpu_seconds": (("cpu_seconds", 1), ("cpu_time_s", 1), ("process_cpu_s", 1)),
    "runtime_cpu_ms_per_task": (("cpu_ms_per_task", 1),),
    "children_cpu_seconds": (("child_cpu_seconds", 1), ("children_cpu_s", 1)),
    "latency.task_wall_ms.p50": (("task_latency_p50", 1000), ("latency_p50_s", 1000)),
    "latency.task_wall_ms.p95": (("task_latency_p95", 1000), ("latency_p95_s", 1000)),
    "latency.task_wall_ms.p99": (("task_latency_p99", 1000), ("latency_p99_s", 1000)),
    "latency.ttft_ms.p50": (("ttft_p50_ms", 1),),
    "latency.ttft_ms.p95": (("ttft_p95_ms", 1),),
    "latency.ttft_ms.p99": (("ttft_p99_ms", 1),),
    "throughput.tasks_per_s": (("tasks_per_s", 1), ("tasks_per_second", 1)),
}

# Keys whose value may be a fraction or a percentage: a value above 1 is read as percent.
_FRACTION_KEYS = frozenset({"pass_at_1"})

# This stack's keys the table deliberately leaves out (never reported as unrecognised).
_NOT_SHOWN = frozenset(
    {
        "schema_version",
        "event_loop",
        "base_url",
        "simulated",
        "max_retries",
        "task_latency_p50",
        "task_latency_p95",
        "task_latency_p99",
        "test_exit_causes",
        "rss_timeline",
        "interrupted",
        "started_at",
        "csv",
        "versions",
        "dataset",
        "latency",
    }
)
_HEADLINE = ("tasks", "passed", "pass_at_1", "peak_rss_mib", "wall_seconds")


def _top_level_keys() -> frozenset[str]:
    keys = {m.key.split(".", 1)[0] for _, metrics in SECTIONS for m in metrics}
    keys.update(("runtime", "implementation"))
    keys.update(alias.split(".", 1)[0] for aliases in ALIASES.values() for alias, _ in aliases)
    return frozenset(keys | _NOT_SHOWN)


# Every top-level key the report knows; other keys are listed under the table as not shown.
_KNOWN = _top_level_keys()


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def resolve(data: dict[str, Any], key: str) -> tuple[Any, str | None]:
    """The value of this stack's ``key`` in ``data`` (ours or an alias) and the key it came from."""
    value = _lookup(data, key)
    if value is not None:
        source: str | None = key
    else:
        value, source = None, None
        for alias, scale in ALIASES.get(key, ()):
            found = _lookup(data, alias)
            if found is None:
                continue
            if scale != 1 and _is_number(found):
                found = found * scale
            value, source = found, alias
            break
    if key in _FRACTION_KEYS and _is_number(value) and value > 1:
        value = value / 100
    return value, source


@dataclass
class Run:
    """One summary file: its label, the raw JSON and each row's value (None = missing)."""

    path: Path
    label: str
    data: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    unrecognised: list[str] = field(default_factory=list)


def _all_metrics() -> Iterable[Metric]:
    for _, metrics in SECTIONS:
        yield from metrics


def _default_label(data: dict[str, Any], path: Path) -> str:
    runtime, _ = resolve(data, "runtime")
    if not runtime:
        stem = path.name.split("_", 1)[0]
        runtime = stem if stem and stem != path.name else "?"
    label = str(runtime)
    implementation, _ = resolve(data, "implementation")
    if implementation:
        label += f"/{implementation}"
    concurrency, _ = resolve(data, "concurrency")
    if concurrency is not None:
        label += f" c={concurrency}"
    return label


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one summary JSON; ReportError (one line) when it is unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, expected a *_summary.json file") from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ReportError(f"{path}: cannot read: {detail}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: not a benchmark summary (expected a JSON object, got {type(data).__name__})"
        )
    values = {metric.key: resolve(data, metric.key)[0] for metric in _all_metrics()}
    if all(values.get(key) is None for key in _HEADLINE):
        raise ReportError(
            f"{path}: not a benchmark summary (none of the keys {', '.join(_HEADLINE)} "
            "or their known aliases)"
        )
    unrecognised = sorted(k for k in data if k not in _KNOWN and not k.startswith("_"))
    return Run(path, label or _default_label(data, path), data, values, unrecognised)


def _fmt_number(value: float, decimals: int) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{decimals}f}"


def format_value(value: Any, fmt: str) -> str:
    """One cell; ``—`` for a missing value."""
    if value is None:
        return MISSING
    if fmt == "profile":
        if not isinstance(value, dict):
            return str(value)
        return f"sim ttft {value.get('ttft_ms', '?')} ms, itl {value.get('itl_ms', '?')} ms"
    if fmt == "causes":
        if not isinstance(value, dict):
            return str(value)
        if not value:
            return "none"
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: -kv[1]))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _is_number(value):
        return str(value)
    if fmt == "int":
        return str(int(value)) if float(value).is_integer() else _fmt_number(value, 2)
    if fmt == "pct":
        return _fmt_number(value * 100, 1) + " %"
    if fmt.startswith("f") and fmt[1:].isdigit():
        return _fmt_number(value, int(fmt[1:]))
    return str(value)


def _ratio(value: Any, base: Any) -> str:
    if not (_is_number(value) and _is_number(base)) or base == 0:
        return ""
    return f" (×{value / base:.2f})"


def _endpoint(run: Run) -> Any:
    if run.data.get("sim_profile"):
        return run.data["sim_profile"]
    if run.data.get("simulated") is False:
        return "real"
    return None


def build_rows(runs: Sequence[Run]) -> list[tuple[str | None, list[str]]]:
    """(section, None) header rows and (None, [label, cell, ...]) metric rows.

    Rows that no run reports are left out, and so are sections left empty.
    """
    rows: list[tuple[str | None, list[str]]] = []
    for title, metrics in SECTIONS:
        body: list[tuple[str | None, list[str]]] = []
        for metric in metrics:
            if metric.key == "sim_profile":
                values = [_endpoint(run) for run in runs]
            else:
                values = [run.values.get(metric.key) for run in runs]
            if all(v is None for v in values):
                continue
            cells = [metric.label]
            for i, value in enumerate(values):
                cell = format_value(value, metric.fmt)
                if metric.ratio and i and value is not None:
                    cell += _ratio(value, values[0])
                cells.append(cell)
            body.append((None, cells))
        if body:
            rows.append((title, []))
            rows.extend(body)
    return rows


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str] | str],
    *,
    markdown: bool = False,
    align: Sequence[str] | None = None,
) -> str:
    """A plain-text (aligned) or Markdown table.

    A row that is a plain ``str`` is a section heading. ``align`` holds ``"<"`` or ``">"``
    per column (default: first column left, the rest right).
    """
    ncols = len(headers)
    align = list(align or ["<"] + [">"] * (ncols - 1))
    if markdown:

        def esc(cell: str) -> str:
            return cell.replace("|", "\\|")

        lines = [
            "| " + " | ".join(esc(h) for h in headers) + " |",
            "|" + "|".join("---" if a == "<" else "---:" for a in align) + "|",
        ]
        for row in rows:
            if isinstance(row, str):
                lines.append(f"| **{esc(row)}** |" + " |" * (ncols - 1))
            else:
                lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        return "\n".join(lines)
    widths = [len(h) for h in headers]
    for row in rows:
        if not isinstance(row, str):
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "<" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append(f"[{row}]" if isinstance(row, str) else line(row))
    return "\n".join(out)


def _differences(runs: Sequence[Run]) -> list[str]:
    notes = []
    for key, what in (("concurrency", "concurrency"), ("tasks", "tasks"), ("model", "model")):
        seen = [run.values.get(key) for run in runs]
        present = {str(v) for v in seen if v is not None}
        if len(present) > 1:
            shown = ", ".join(MISSING if v is None else str(v) for v in seen)
            notes.append(f"runs differ in {what} ({shown}): compare with care")
    return notes


def render(runs: Sequence[Run], *, markdown: bool = False) -> str:
    """The side-by-side table with its notes."""
    headers = ["metric", *[run.label for run in runs]]
    table_rows: list[Sequence[str] | str] = [
        title if title is not None else cells for title, cells in build_rows(runs)
    ]
    parts = [format_table(headers, table_rows, markdown=markdown)]
    notes = []
    if len(runs) > 1:
        notes.append(f"(×r) = value / the first column's ({runs[0].label}).")
    notes.append(f"{MISSING} = not reported by that run.")
    notes.extend(_differences(runs))
    for run in runs:
        if run.unrecognised:
            notes.append(f"{run.label}: keys not shown: {', '.join(run.unrecognised)}")
    if not markdown:
        notes.extend(f"{run.label}: {run.path}" for run in runs)
    parts.append("")
    if markdown:
        parts.extend(f"- {note}" for note in notes)
    else:
        parts.extend(notes)
    return "\n".join(parts)


# ---- charts ------------------------------------------------------------------------------

_PLOT_LATENCIES = (
    ("ttft_ms", "TTFT"),
    ("itl_ms", "ITL"),
    ("llm_e2e_ms", "LLM call E2E"),
    ("llm_overhead_ms", "runtime overhead per call"),
)


def _import_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ReportError(f"--plot needs matplotlib: {PLOT_HINT}") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _bars(ax: Any, runs: Sequence[Run], series: dict[str, list[float]], ylabel: str) -> None:
    """Grouped bars: one group per series name, one bar per run."""
    names = list(series)
    n = max(1, len(runs))
    width = 0.8 / n
    for i, run in enumerate(runs):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        ys = [series[name][i] for name in names]
        ax.bar(xs, [math.nan if y is None else y for y in ys], width, label=run.label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def write_plots(runs: Sequence[Run], out_dir: str | Path) -> list[Path]:
    """Write rss_timeline.png, latency_percentiles.png and overhead_per_call.png.

    Raises ReportError when matplotlib is missing. A chart with no data in any run is
    skipped (the returned list says which were written).
    """
    figure_class = _import_matplotlib()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out}: {exc.strerror or exc}") from None
    written: list[Path] = []

    timelines = [
        (run, run.data.get("rss_timeline") or {})
        for run in runs
        if isinstance(run.data.get("rss_timeline"), dict)
    ]
    timelines = [(run, tl) for run, tl in timelines if tl.get("t") and tl.get("rss_mib")]
    if timelines:
        fig = figure_class(figsize=(8, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for run, tl in timelines:
            ax.plot(tl["t"], tl["rss_mib"], label=run.label)
            peak = run.values.get("peak_rss_mib")
            if _is_number(peak):
                ax.axhline(peak, linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title("runtime RSS over the run (dotted: kernel peak)")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "rss_timeline.png"))

    with_latency = [run for run in runs if isinstance(run.data.get("latency"), dict)]
    if with_latency:
        fig = figure_class(figsize=(11, 7), layout="constrained")
        axes = fig.subplots(2, 2).flatten()
        for ax, (key, title) in zip(axes, _PLOT_LATENCIES, strict=True):
            series = {
                q: [run.values.get(f"latency.{key}.{q}") for run in with_latency]
                for q in ("p50", "p95", "p99")
            }
            _bars(ax, with_latency, series, "ms")
            ax.set_title(title)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
        fig.suptitle("latency percentiles per run")
        written.append(_save(fig, out / "latency_percentiles.png"))

        fig = figure_class(figsize=(10, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        series = {
            label: [run.values.get(f"latency.llm_overhead_ms.{q}") for run in with_latency]
            for q, label in (("p50", "p50"), ("p95", "p95"), ("p99", "p99"))
        }
        series["mean"] = [_lookup(run.data, "latency.llm_overhead_ms.mean") for run in with_latency]
        _bars(left, with_latency, series, "ms")
        left.set_title("runtime overhead per LLM call (client E2E − server time)")
        cpu = {
            "CPU / LLM call": [
                run.values.get("runtime_cpu_ms_per_llm_call") for run in with_latency
            ],
            "CPU / task": [run.values.get("runtime_cpu_ms_per_task") for run in with_latency],
        }
        _bars(right, with_latency, cpu, "ms")
        fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=3)
        right.set_title("runtime CPU")
        fig.suptitle("what the runtime adds per call")
        written.append(_save(fig, out / "overhead_per_call.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


# ---- command -----------------------------------------------------------------------------


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
        help=f"also write PNG charts into DIR (needs matplotlib: {PLOT_HINT})",
    )


def main(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Run ``fastagent report``; 0 on success, 2 on bad input."""
    emit = out or print
    try:
        labels = args.label or []
        if labels and len(labels) != len(args.results):
            raise ReportError(
                f"--label given {len(labels)} time(s) for {len(args.results)} summaries"
            )
        runs = [
            load_run(path, labels[i] if labels else None) for i, path in enumerate(args.results)
        ]
        _dedupe_labels(runs)
        written = write_plots(runs, args.plot) if args.plot else []
    except ReportError as exc:
        print(f"fastagent report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        emit(render(runs, markdown=args.format == "markdown"))
        if out is None:
            sys.stdout.flush()
    except BrokenPipeError:  # `fastagent report ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _dedupe_labels(runs: Sequence[Run]) -> None:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
        if counts[run.label] > 1:
            run.label = f"{run.label} #{counts[run.label]}"
