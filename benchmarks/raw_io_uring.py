"""The floor for the io_uring backend: a hand-written raw io_uring ping-pong loop.

One byte goes back and forth over a socketpair; each end is watched with
``IORING_OP_POLL_ADD`` on one ring, through the same ctypes binding the
backend uses, with no aiocore core and no backend object (the loop is
:func:`aiocore.bench.raw.raw_io_uring_pingpong`, also the floor of
``aiocore bench``).  Two variants, alternating, median of the repeats:

* ``oneshot`` (the floor the backend is compared to): a one-shot POLL_ADD
  re-armed after each completion, like the backend's default mode.
* ``multishot``: one ``IORING_POLL_ADD_MULTI`` per fd, never re-armed.  This is
  edge-triggered (it relies on each handler draining its fd), so it is
  cheaper than anything a level-triggered backend can do; for reference only.

    python benchmarks/raw_io_uring.py [--n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys

from aiocore.bench import harness, raw, report, workloads


def _variant(multishot: bool) -> harness.Contender:
    def run(n: int) -> harness.Sample:
        pair = raw.socketpair_pair()
        try:
            count, seconds = raw.raw_io_uring_pingpong(pair, n, multishot=multishot)
        finally:
            pair.close()
        return {"rate": count / seconds, "count": float(count), "seconds": seconds}

    name = "multishot" if multishot else "oneshot"
    return harness.Contender(f"raw io_uring {name}", "floor", name, run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="round trips per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (median)")
    args = parser.parse_args()
    why = raw.io_uring_unavailable()
    if why is not None:
        print(f"raw io_uring is not available here: {why}")
        return 1
    workload = harness.Workload(
        "raw_io_uring",
        "raw io_uring socketpair ping-pong",
        "one byte back and forth, POLL_ADD per fd",
        "-",
        "this is a floor",
        workloads.RATE_ROUND_TRIPS,
        lambda _s: [],
    )
    case = harness.Case(f"{args.n:,} round trips", [_variant(False), _variant(True)], size=args.n)
    settings = harness.Settings(backends=[], repeat=args.repeat)
    result = harness.run_case(case, settings, harness.Progress(1 + 2 * args.repeat))
    report.write_table([harness.WorkloadResult(workload, [result])], args.repeat, sys.stdout)
    return 1 if any(c.status == "failed" for c in result.contenders) else 0


if __name__ == "__main__":
    sys.exit(main())
