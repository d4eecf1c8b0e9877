"""Shared helpers for the benchmark scripts: alternating runs and medians.

Benchmarks are not tests: they print rates and ratios and never assert.  Each
comparison alternates the contenders (A, B, A, B, ...) so slow drift of a
shared, noisy machine hits both alike, and reports the median of the repeats
with the min-max spread.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence


def alternate(
    contenders: Sequence[tuple[str, Callable[[], float]]], repeat: int
) -> dict[str, list[float]]:
    """Run each contender *repeat* times, interleaved; return name -> rates."""
    rates: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for i in range(repeat):
        for name, fn in contenders:
            rates[name].append(fn())
        sys.stderr.write(f"\rrun {i + 1}/{repeat}")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * 20 + "\r")
    return rates


def report(title: str, unit: str, rates: dict[str, list[float]], baseline: str) -> None:
    """Print median, spread and ratio to *baseline* for each contender."""
    base = statistics.median(rates[baseline])
    print(f"{title}  (median of {len(rates[baseline])}, ratio against {baseline})")
    width = max(len(n) for n in rates)
    for name, values in rates.items():
        med = statistics.median(values)
        print(
            f"  {name.ljust(width)}  {med:12,.0f} {unit}  "
            f"[{min(values):,.0f} .. {max(values):,.0f}]  ratio {med / base:5.2f}"
        )
