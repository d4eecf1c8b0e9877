"""One-shot BH fan-out: N one-shot bottom halves scheduled, then run by one poll().

A thin script over ``aiocore bench --workload bh_fanout``: against asyncio's
(and uvloop's) ``call_soon`` of N callbacks and a bare deque.

    python benchmarks/bh_fanout.py [--size 100000] [--repeat 5] [--backend epoll] [--json]
"""

from __future__ import annotations

import sys

from aiocore.bench import cli

if __name__ == "__main__":
    sys.exit(cli.main(["--workload", "bh_fanout", "--size", "100000", *sys.argv[1:]]))
