"""Plain-text tables and summary statistics for the lab's and the benchmarks' reports."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence, Tuple

__all__ = ["format_table", "mean_std", "paired_median"]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation.

    Args:
        values: the numbers.

    Returns:
        `(mean, std)`: std is 0 for a single value, both are NaN for none.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, s


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, floatfmt: str = ".4g") -> str:
    """A plain-text table with aligned columns and a rule under the header.

    Args:
        rows: the cells, row by row.
        headers: one title per column.
        floatfmt: the format of float cells (non-finite ones print as `nan`, `inf`).

    Returns:
        The table, lines joined by newlines, without trailing spaces.
    """
    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt) if math.isfinite(v) else str(v)
        return str(v)
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paired_median(result: dict) -> float:
    """The median over rounds of the estimator's time over softmax's in the same round (each
    round times softmax, then the estimator, back to back): a ratio that a few disturbed
    rounds move less than the ratio of the fastest rounds; NaN without the rounds."""
    est, soft = result.get("time_ms_all") or [], result.get("softmax_ms_all") or []
    ratios = [a / b for a, b in zip(est, soft) if b > 0]
    return statistics.median(ratios) if ratios else float("nan")
