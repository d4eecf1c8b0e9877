"""A bottom half that reschedules itself 1,000,000 times, against asyncio's call_soon chain.

A thin script over ``aiocore bench --workload bh_chain`` (see
:mod:`aiocore.bench.workloads`): every available backend, stock asyncio's and
uvloop's ``call_soon`` chains and the bare deque floor, alternating, median of
5.  Any ``aiocore bench`` option can be added or overridden:

    python benchmarks/bh_chain.py [--size 1000000] [--repeat 5] [--backend epoll] [--json]
"""

from __future__ import annotations

import sys

from aiocore.bench import cli

if __name__ == "__main__":
    sys.exit(cli.main(["--workload", "bh_chain", "--size", "1000000", *sys.argv[1:]]))
