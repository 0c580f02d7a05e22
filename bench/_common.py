"""Shared by the bench scripts: run `fastagent bench` in a fresh process and read its summary.

The child process (its environment, Ctrl-C forwarded as SIGINT so it writes its summary)
is :mod:`fastagent.analysis.children`'s; the summary is read through
:mod:`fastagent.analysis.summaries`, so the scripts index it by the canonical metric names
(``s["peak_rss_mib"]``, ``s["runtime_cpu_ms_per_task"]``, ...) whatever its schema.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastagent.analysis import children
from fastagent.analysis.summaries import load_summary
from fastagent.analysis.tables import format_table

ROOT = Path(__file__).resolve().parent.parent


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: this interpreter's bin first on PATH, no LLM_*/BENCH_*
    variables, then ``extra``."""
    return children.child_env(extra)


def summary_values(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary file's figures by canonical metric name (None where it reports none)."""
    return dict(load_summary(path).values)


def run_bench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 7200
) -> dict[str, Any]:
    """Run ``fastagent bench ARGS`` in a fresh interpreter; return its summary's figures
    (exit on failure, 130 on Ctrl-C once the bench has stopped)."""
    with tempfile.TemporaryDirectory(prefix="fastagent-bench-") as tmp:
        run = children.run_bench(
            ["--no-progress", *args],
            results_dir=tmp,
            env=env or bench_env(),
            capture_stderr=True,
            timeout=timeout,
        )
        if run.interrupted:
            sys.exit(130)
        if run.returncode != 0 or run.summary is None or run.timed_out:
            why = f"timed out after {timeout:g} s" if run.timed_out else f"exit {run.returncode}"
            sys.exit(f"fastagent bench {' '.join(args)} failed ({why}):\n{run.stderr}")
        return summary_values(run.summary)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table, right-aligned (floats with two decimals and thousands commas)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    return format_table([str(h) for h in headers], cells, align=[">"] * len(headers))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
