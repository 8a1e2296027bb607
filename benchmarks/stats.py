"""Small shared helpers of the benchmarks: percentiles and Markdown rows."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, values: list[float], digits: int = 2) -> str:
    """| label | n | p50 | p95 | max |"""
    cells = (statistics.median(values), percentile(values, 0.95), max(values))
    return f"| {label} | {len(values)} | " + " | ".join(f"{v:.{digits}f}" for v in cells) + " |"
