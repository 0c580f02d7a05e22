"""Shared by the bench scripts: run `fastagent bench` in a fresh process and read its summary."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: this interpreter's bin first on PATH, no endpoint vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "BENCH_"))}
    env.pop("FASTAGENT_NO_EXTENSIONS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_bench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 7200
) -> dict[str, Any]:
    """Run ``fastagent bench ARGS`` in a fresh interpreter; return its summary (exit on failure)."""
    with tempfile.TemporaryDirectory(prefix="fastagent-bench-") as tmp:
        argv = [sys.executable, "-m", "fastagent", "bench", "--results-dir", tmp, "--no-progress"]
        proc = subprocess.run(
            [*argv, *args],
            env=env or bench_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            sys.exit(f"fastagent bench {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        (summary,) = Path(tmp).glob("*_summary.json")
        data = json.loads(summary.read_text())
        data.pop("rss_timeline", None)
        return data


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
