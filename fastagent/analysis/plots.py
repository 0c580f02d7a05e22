"""The charts of ``fastagent report --plot``, ``sweep`` and ``compare``: the one place that
imports matplotlib (``pip install 'fastagent[plot]'``), with the Agg backend, and only when
a chart is drawn.

Every function raises :class:`~fastagent.errors.ReportError` (one line) when matplotlib is
missing or a file cannot be written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from .summaries import SummaryView, is_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOT_HINT", "compare_chart", "report_charts", "sweep_chart"]

PLOT_HINT = "pip install 'fastagent[plot]'"

#: (label, summary) of one column of the report
Labelled = tuple[str, SummaryView]

_PERCENTILES = ("p50", "p95", "p99")
_LATENCY_PANELS = (
    ("ttft_ms", "TTFT"),
    ("itl_ms", "ITL"),
    ("llm_e2e_ms", "LLM call E2E"),
    ("runtime_overhead_ms", "runtime overhead per call"),
)


def _figure_class() -> type[Figure]:
    """matplotlib's Figure, the Agg backend selected; ReportError with the install hint when
    matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError(f"matplotlib is not installed ({PLOT_HINT})") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _figure(**kwargs: Any) -> Figure:
    return _figure_class()(layout="constrained", **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _directory(path: str | Path) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out}: {exc.strerror or exc}") from None
    return out


def _bars(ax: Axes, labels: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> None:
    """Grouped bars: one group per series name, one bar per label (None: no bar)."""
    names = list(series)
    n = max(1, len(labels))
    width = 0.8 / n
    for i, label in enumerate(labels):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        ys = [series[name][i] for name in names]
        ax.bar(xs, [math.nan if y is None else y for y in ys], width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("ms")
    ax.grid(axis="y", alpha=0.3)


def _rss_timeline(runs: Sequence[Labelled], out: Path) -> Path | None:
    timelines = []
    for label, view in runs:
        timeline = view["rss_timeline"] or {}
        if timeline.get("t") and timeline.get("rss_mib"):
            timelines.append((label, timeline, view.number("peak_rss_mib")))
    if not timelines:
        return None
    fig = _figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for label, timeline, peak in timelines:
        (line,) = ax.plot(timeline["t"], timeline["rss_mib"], label=label)
        if peak is not None:
            ax.axhline(peak, linestyle=":", linewidth=0.8, color=line.get_color())
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("runtime RSS over the run (dotted: kernel peak)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / "rss_timeline.png")


def _latency_percentiles(runs: Sequence[Labelled], out: Path) -> Path:
    labels = [label for label, _ in runs]
    fig = _figure(figsize=(11, 7))
    axes = fig.subplots(2, 2).flatten()
    for ax, (name, title) in zip(axes, _LATENCY_PANELS, strict=True):
        series = {q: [view.number(f"latency.{name}.{q}") for _, view in runs] for q in _PERCENTILES}
        _bars(ax, labels, series)
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle("latency percentiles per run")
    return _save(fig, out / "latency_percentiles.png")


def _overhead_per_call(runs: Sequence[Labelled], out: Path) -> Path:
    labels = [label for label, _ in runs]
    fig = _figure(figsize=(10, 4.5))
    left, right = fig.subplots(1, 2)
    stats = (*_PERCENTILES, "mean")
    series = {
        q: [view.number(f"latency.runtime_overhead_ms.{q}") for _, view in runs] for q in stats
    }
    _bars(left, labels, series)
    left.set_title("runtime overhead per LLM call (pre-send + last-byte lag)")
    cpu = {
        "CPU / LLM call": [view.number("runtime_cpu_ms_per_llm_call") for _, view in runs],
        "CPU / task": [view.number("runtime_cpu_ms_per_task") for _, view in runs],
    }
    _bars(right, labels, cpu)
    right.set_title("runtime CPU")
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle("what the runtime adds per call")
    return _save(fig, out / "overhead_per_call.png")


def report_charts(runs: Sequence[Labelled], out_dir: str | Path) -> list[Path]:
    """Write rss_timeline.png, latency_percentiles.png and overhead_per_call.png into
    ``out_dir`` (created); a chart no run has data for is skipped. Returns what was written."""
    _figure_class()  # matplotlib first: no directory is made when it is missing
    out = _directory(out_dir)
    written = [path for path in (_rss_timeline(runs, out),) if path is not None]
    with_latency = [
        (label, view)
        for label, view in runs
        if any(view[f"latency.{name}.p50"] is not None for name, _ in _LATENCY_PANELS)
    ]
    if with_latency:
        written.append(_latency_percentiles(with_latency, out))
        written.append(_overhead_per_call(with_latency, out))
    return written


def sweep_chart(
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    path: str | Path,
    title: str = "",
) -> Path:
    """One panel per ``(title, series)`` of ``panels`` (at most 6), each series ``(key,
    label)`` drawn as ``row[key]`` against ``row["agents"]`` on a log x axis. A panel of one
    series is annotated point by point on a linear y axis; one of several, on a log y axis."""
    fig = _figure(figsize=(14, 8))
    axes = fig.subplots(2, 3).flatten()
    levels = [int(row["agents"]) for row in rows]
    for ax, (label, series) in zip(axes, panels, strict=False):
        for key, name in series:
            points = [
                (int(row["agents"]), float(row[key])) for row in rows if is_number(row.get(key))
            ]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
            if len(series) == 1:
                _annotate(ax, points)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.set_xlabel("concurrent agents")
        ax.set_title(label)
        if len(series) > 1:
            ax.set_yscale("log")
            if ax.lines:
                ax.legend(fontsize="small")
        else:
            top = max((line.get_ydata().max() for line in ax.lines), default=0.0)
            ax.set_ylim(0, top * 1.2 if top > 0 else 1)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def _annotate(ax: Axes, points: Sequence[tuple[int, float]]) -> None:
    for x, y in points:
        ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="small")  # fmt: skip


def compare_chart(
    names: Sequence[str],
    panels: Sequence[tuple[str, Sequence[Sequence[float]]]],
    path: str | Path,
    title: str = "",
) -> Path:
    """One panel per ``(title, values)`` of ``panels`` (at most 6), ``values[i]`` being stack
    ``names[i]``'s figure in each of its runs: a bar at the median, a whisker from min to max,
    a dot per run."""
    fig = _figure(figsize=(14, 8))
    axes = fig.subplots(2, 3).flatten()
    xs = range(len(names))
    for ax, (label, values) in zip(axes, panels, strict=False):
        medians = [_median(v) for v in values]
        ax.bar(xs, [math.nan if m is None else m for m in medians], 0.6, alpha=0.6)
        for x, runs, m in zip(xs, values, medians, strict=True):
            if m is None:
                continue
            ax.vlines(x, min(runs), max(runs), color="black", linewidth=1)
            ax.plot([x] * len(runs), runs, "o", color="black", markersize=3)
            ax.annotate(f"{m:.3g}", (x, m), textcoords="offset points", xytext=(8, 0),
                        fontsize="small")  # fmt: skip
        ax.set_xticks(list(xs), list(names), rotation=15)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
