"""Where the polled cross-process wake-up goes: aiocore against what it is made of.

``benchmarks/wakeup_latency.py`` gives the polled ``shmring`` wake-up p50 next
to other loops; this script takes that path apart, to back the "what bounds
it" of ``docs/threads.rst``.  A forked producer pushes a timestamp into a
:class:`~aiocore_plugins.shmring_source.ShmRing` every ~20 us (the same
writer as ``wakeup_latency.py``), and four consumers, alternating, take it:

* ``aiocore poll()``: a context with ``poll_max_ns=32768`` and the ring
  attached, as in ``wakeup_latency.py``;
* ``spin + io_poll_ready``: the same handler, but a ``poll()`` that only spins
  on its ``io_poll`` and calls its ``io_poll_ready`` on a hit, skipping
  SPEC 2's steps 5-8 (wait, withdraw, adapt, BHs) and the busy round's
  checks: the most any faster core could win.  A measuring device only: it
  breaks every other promise of ``poll()``;
* ``raw ring consumer``: no event loop, the take and the callback inline;
* ``raw spin``: a shared index, the clock read as soon as it moves.

Each run is a p50 of 3,000 messages; the table gives the median over the
runs and each consumer's median difference to ``aiocore poll()`` over the
same rounds (paired: this shared machine moves every figure by up to 1 us
between minutes, much less within a round)::

    python benchmarks/wakeup_breakdown.py [--repeat 11] [--messages 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wakeup_latency as wl  # the sibling script: the same writer, the same floors

from aiocore import AioContext

GAP_NS = 20_000
monotonic_ns = time.monotonic_ns


class SpinThenReady(AioContext):
    """``poll()`` reduced to: spin on the one ``io_poll``, then ``io_poll_ready``."""

    def poll(self, blocking: bool = True) -> bool:
        node = self._table.poll_nodes[0]
        io_poll, ready, opaque = node.io_poll, node.io_poll_ready, node.opaque
        assert io_poll is not None and ready is not None
        end = monotonic_ns() + 1_000_000_000
        while not io_poll(opaque):
            if monotonic_ns() > end:
                return False
        ready(opaque)
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--repeat", type=int, default=11, help="rounds (default 11)")
    p.add_argument("--messages", type=int, default=3000, help="messages per run (default 3000)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.messages < 1:
        p.error("--repeat and --messages must be >= 1")
    aiocore = wl.aiocore_shmring_process(GAP_NS, 32768)
    reduced = wl.aiocore_shmring_process(GAP_NS, 32768, SpinThenReady)
    raw_ring = wl.raw_ring_process(GAP_NS)
    if aiocore is None or reduced is None or raw_ring is None:
        print(f"not available here: {wl.shmring_unavailable_reason()}")
        return 1
    contenders: dict[str, Callable[[int], wl.Run]] = {
        "aiocore poll()": aiocore,
        "spin + io_poll_ready (no SPEC 2 steps 5-8)": reduced,
        "raw ring consumer (spin, take)": raw_ring,
        "raw spin on an index": wl.raw_spin_process(GAP_NS),
    }
    print(f"wake-up breakdown  Python {sys.version.split()[0]}; {wl.choose_cpus()}")
    p50: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(args.repeat):
        for name, fn in contenders.items():
            with wl.pinned():
                p50[name].append(fn(args.messages).p(0.5))
        sys.stderr.write(f"\rround {i + 1}/{args.repeat}   ")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * 30 + "\r")
    base = p50["aiocore poll()"]
    width = max(map(len, contenders))
    print(f"  {'consumer'.ljust(width)}  {'p50 us':>7}  {'vs aiocore poll() (paired)':>27}")
    for name, values in p50.items():
        diff = statistics.median(b - v for b, v in zip(base, values, strict=True))
        paired = "" if values is base else f"{diff:+.2f} us faster"
        print(f"  {name.ljust(width)}  {statistics.median(values):7.2f}  {paired:>27}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
