"""200,000 timers at seeded random deadlines within 1 s: fire span and lateness.

A thin script over ``aiocore bench --workload timers --duration 0.25`` (the
duration at which the workload reaches its full size): aiocore's REALTIME
timers on epoll and on auto against asyncio's and uvloop's ``call_at`` and a
heapq + epoll_wait floor.

    python benchmarks/timers.py [--repeat 5] [--backend epoll] [--json]
"""

from __future__ import annotations

import sys

from aiocore.bench import cli

if __name__ == "__main__":
    sys.exit(cli.main(["--workload", "timers", "--duration", "0.25", *sys.argv[1:]]))
