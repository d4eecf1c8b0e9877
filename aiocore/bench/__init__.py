"""``aiocore bench``: aiocore against asyncio, uvloop and hand-written raw loops, here.

The question a user asks first is how fast an event loop is on their machine
and backend; a number from somewhere else does not answer it.  This package is
the answer as a command: it runs aiocore on every available backend, the
baselines a Python programmer would use instead (stock asyncio, uvloop when
installed) and the floors (the same system calls from a hand-written loop
with no framework), alternating them in one run, and prints medians, spreads
and ratios.

* :mod:`aiocore.bench.harness`: alternation, calibration, medians, failures.
* :mod:`aiocore.bench.workloads`: what is measured, and against what.
* :mod:`aiocore.bench.raw`: the floors.
* :mod:`aiocore.bench.report`: table, JSON, summary ratios, plot.
* :mod:`aiocore.bench.cli`: the ``aiocore bench`` subcommand (registered into
  the CLI when this package is imported, which ``aiocore``'s CLI does).

Benchmarks are not tests: nothing here asserts on speed.
"""

from __future__ import annotations

from . import cli

__all__ = ["cli"]
