"""Tables as text: aligned plain-text columns or Markdown, and the cells that go in them.

    >>> print(format_table(["metric", "a", "b"], ["memory", ["peak RSS", "40.1", "52.0"]]))
    metric       a     b
    --------  ----  ----
    [memory]
    peak RSS  40.1  52.0

Used by ``fastagent report`` and ``fastagent sweep``; standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .summaries import is_number

__all__ = ["MISSING", "format_table", "format_value", "ratio"]

#: A value the run does not report.
MISSING = "—"


def _fixed(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}" if math.isfinite(value) else str(value)


def _causes(value: Mapping[str, Any]) -> str:
    if not value:
        return "none"
    ordered = sorted(value.items(), key=lambda kv: (-kv[1] if is_number(kv[1]) else 0, kv[0]))
    return ", ".join(f"{cause} {count}" for cause, count in ordered)


def _profile(value: Mapping[str, Any]) -> str:
    return f"sim ttft {value.get('ttft_ms', '?')} ms, itl {value.get('itl_ms', '?')} ms"


def format_value(value: Any, fmt: str) -> str:
    """One cell: ``—`` for None, else ``value`` as ``fmt`` says.

    ``fmt``: ``int``; ``f1``/``f2``/``f3`` (decimals); ``pct`` (a fraction as %); ``text``;
    ``causes`` ({cause: count}, the most frequent first); ``profile`` (a simulator profile,
    or the text ``real``). Booleans print as yes/no whatever the format.

    >>> format_value(0.96, "pct"), format_value(3.0, "int"), format_value(None, "f2")
    ('96.0 %', '3', '—')
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if fmt == "causes" and isinstance(value, Mapping):
        return _causes(value)
    if fmt == "profile" and isinstance(value, Mapping):
        return _profile(value)
    if not is_number(value):
        return str(value)
    if fmt == "int":
        return str(int(value)) if float(value).is_integer() else _fixed(value, 2)
    if fmt == "pct":
        return _fixed(value * 100, 1) + " %"
    if fmt.startswith("f") and fmt[1:].isdigit():
        return _fixed(value, int(fmt[1:]))
    return str(value)


def ratio(value: Any, base: Any) -> str:
    """`` (×r)``: ``value / base`` when both are numbers and ``base`` is not 0, else ``""``."""
    if not (is_number(value) and is_number(base)) or base == 0:
        return ""
    return f" (×{value / base:.2f})"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str] | str], align: list[str]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = [
        "| " + " | ".join(esc(h) for h in headers) + " |",
        "|" + "|".join("---" if a == "<" else "---:" for a in align) + "|",
    ]
    for row in rows:
        if isinstance(row, str):
            lines.append(f"| **{esc(row)}** |" + " |" * (len(headers) - 1))
        else:
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
    return "\n".join(lines)


def _plain(headers: Sequence[str], rows: Sequence[Sequence[str] | str], align: list[str]) -> str:
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
    out.extend(f"[{row}]" if isinstance(row, str) else line(row) for row in rows)
    return "\n".join(out)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str] | str],
    *,
    markdown: bool = False,
    align: Sequence[str] | None = None,
) -> str:
    """A plain-text (aligned) or Markdown table.

    A row that is a plain ``str`` is a section heading. ``align`` holds ``"<"`` or ``">"``
    per column (default: the first column left, the rest right).
    """
    columns = list(align or ["<"] + [">"] * (len(headers) - 1))
    if len(columns) != len(headers):
        raise ValueError(f"{len(columns)} alignments for {len(headers)} columns")
    return (_markdown if markdown else _plain)(headers, rows, columns)
