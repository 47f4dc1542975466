"""Plain-text tables and percentages for reports (pure Python: usable from ``sampling/`` on plain arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain aligned text table; the first column left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [list(header), *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (``0.1234`` -> ``12.3%``); ``-`` for a missing value."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"
