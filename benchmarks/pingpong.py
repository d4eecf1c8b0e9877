"""Socketpair and eventfd ping-pong: one message back and forth, 100,000 round trips.

A thin script over ``aiocore bench --workload socketpair --workload eventfd``:
aiocore on every available backend against asyncio's and uvloop's
``add_reader`` ping-pong and the raw poll, epoll and io_uring loops (the
floors), alternating, median of 5.

    python benchmarks/pingpong.py [--size 100000] [--repeat 5] [--backend epoll] [--json]
"""

from __future__ import annotations

import sys

from aiocore.bench import cli

if __name__ == "__main__":
    args = ["--workload", "socketpair", "--workload", "eventfd", "--size", "100000"]
    sys.exit(cli.main([*args, *sys.argv[1:]]))
