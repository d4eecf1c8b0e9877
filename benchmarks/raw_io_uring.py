"""The floor for the io_uring backend: a hand-written raw io_uring ping-pong loop.

One byte goes back and forth over a socketpair; each end is watched with
``IORING_OP_POLL_ADD`` on one ring, through the same ctypes binding the
backend uses (:mod:`aiocore_plugins._liburing`), with no aiocore core and no
backend object: one ``io_uring_submit_and_wait_timeout`` per iteration, SQEs
written with ``struct.pack_into``, CQEs read from memoryviews.  What the
backend adds on top of this (its per-fd bookkeeping, stale-tag checks, the
core's dispatch) is the overhead the ``io_uring backend / raw`` ratio measures
(goal >= 0.8).

Two variants, both what a hand-written loop would do:

* ``oneshot`` (the default, and the floor the backend is compared to): a
  one-shot POLL_ADD re-armed after each completion, like the backend's default
  mode.
* ``multishot``: one ``IORING_POLL_ADD_MULTI`` per fd, never re-armed.  This is
  edge-triggered (no level semantics: it relies on each handler draining its
  fd), so it is cheaper than anything a level-triggered backend can do; it is
  printed for reference only.

    python benchmarks/raw_io_uring.py [--n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ctypes
import select
import socket
import statistics
import time

from aiocore_plugins import _liburing
from aiocore_plugins._liburing import (
    IORING_OP_POLL_ADD,
    IORING_POLL_ADD_MULTI,
    SQE,
    SQE_TAIL_INDEX,
)

__all__ = ["pingpong"]


def pingpong(round_trips: int, multishot: bool = False) -> float:
    """Run *round_trips* socketpair round trips on a raw ring; return round trips per second."""
    lib = _liburing.load()
    ring = _liburing.Ring(lib, 8)
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        fa, fb = a.fileno(), b.fileno()
        pack = SQE.pack_into
        sqes = ring.sqes
        ru32 = ring.ring_u32
        sq_mask = ring.sq_mask
        cq_khead = ring.cq_khead
        cq_ktail = ring.cq_ktail
        cq_mask = ring.cq_mask
        u64 = ring.cqe_u64
        # The argtypes-free variant with ready-made pointer objects: the
        # cheapest way ctypes offers to make this call.
        swt = lib.submit_and_wait_timeout_raw
        addr = ring.address
        ring_arg = ctypes.c_void_p(addr)
        cqe_ptr = ctypes.c_void_p()
        cqe_pp = ctypes.c_void_p(ctypes.addressof(cqe_ptr))
        length = IORING_POLL_ADD_MULTI if multishot else 0
        pollin = select.POLLIN
        a_recv, a_send, b_recv, b_send = a.recv, a.send, b.recv, b.send

        def arm(fd: int) -> None:
            tail = ru32[SQE_TAIL_INDEX]
            pack(sqes, (tail & sq_mask) << 6, IORING_OP_POLL_ADD, 0, 0, fd, 0, 0, length,
                 pollin, fd, 0, 0, 0, 0, 0)
            ru32[SQE_TAIL_INDEX] = (tail + 1) & 0xFFFF_FFFF

        arm(fa)
        arm(fb)
        count = 0
        b_send(b"x")
        t0 = time.perf_counter()
        while count < round_trips:
            if swt is not None:
                swt(ring_arg, cqe_pp, 1, None, None)
            else:
                lib.submit(addr)
                lib.wait_cqe_timeout(addr, cqe_pp.value, None)
            head = cq_khead[0]
            tail = cq_ktail[0]
            while head != tail:
                fd = u64[(head & cq_mask) << 1]
                head = (head + 1) & 0xFFFF_FFFF
                if fd == fa:
                    a_recv(1)
                    a_send(b"x")
                else:
                    b_recv(1)
                    count += 1
                    if count < round_trips:
                        b_send(b"x")
                if not multishot:
                    arm(fd)
            cq_khead[0] = head
        dt = time.perf_counter() - t0
    finally:
        ring.close()
        a.close()
        b.close()
    return round_trips / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="round trips per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (median)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"oneshot": [], "multishot": []}
    for _ in range(args.repeat):
        rates["oneshot"].append(pingpong(args.n))
        rates["multishot"].append(pingpong(args.n, multishot=True))
    print(f"raw io_uring socketpair ping-pong (median of {args.repeat}, {args.n:,} round trips)")
    for name, values in rates.items():
        print(f"  {name:9}  {statistics.median(values):12,.0f} round trips/s  "
              f"[{min(values):,.0f} .. {max(values):,.0f}]")


if __name__ == "__main__":
    main()
