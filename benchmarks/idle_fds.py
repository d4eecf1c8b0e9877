"""Idle-fd scaling: socketpair ping-pong beside 1, 64, 1024 and 8192 idle fds.

A thin script over ``aiocore bench --workload idle_fds``: each backend and the
raw poll, epoll and io_uring loops with the same never-ready eventfds
registered; prints each one's rate at 8192 idle fds as a share of its rate at
one.  Raises the ``RLIMIT_NOFILE`` soft limit as needed (and says so if the
hard limit is too low).

    python benchmarks/idle_fds.py [--duration 0.1] [--repeat 5] [--backend epoll] [--plot f.png]
"""

from __future__ import annotations

import sys

from aiocore.bench import cli

if __name__ == "__main__":
    sys.exit(cli.main(["--workload", "idle_fds", "--duration", "0.1", *sys.argv[1:]]))
