"""The floors: the same system calls from hand-written Python loops, no framework.

A benchmark that only compares aiocore with asyncio says how the two
frameworks differ, not how much of the time is the framework at all.  The
floor answers that: a loop written by hand for one workload, making the very
system calls a backend makes (``poll``, ``epoll_wait``,
``io_uring_submit_and_wait_timeout``), with every name it touches bound to a
local and nothing else on the path.  A Python event loop cannot be faster than
its floor by more than noise; ``backend / floor`` is the share of the
achievable rate the framework keeps.

The ping-pong loops all take a :class:`Pair` (a socketpair or two eventfds,
read and written with :func:`os.read`/:func:`os.write` so every contender does
the same per-message work) and an optional list of *idle* fds, registered for
reading and never ready, for the idle-fd scaling workload.

The raw io_uring loop is the one ``benchmarks/raw_io_uring.py`` started with:
one ``IORING_OP_POLL_ADD`` per fd, re-armed after each completion (one-shot,
the io_uring backend's default mode) or armed once with
``IORING_POLL_ADD_MULTI`` (multishot: edge-triggered, so cheaper than anything
a level-triggered backend may do; for reference only), through the same
``ctypes`` binding the backend uses.
"""

from __future__ import annotations

import collections
import ctypes
import heapq
import importlib
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Pair",
    "deque_chain",
    "deque_fanout",
    "eventfd_pair",
    "heap_timers",
    "io_uring_unavailable",
    "make_pair",
    "open_idle_fds",
    "pingpong",
    "raw_io_uring_pingpong",
    "socketpair_pair",
]

#: The 8-byte native-endian 1 an eventfd write adds to the counter.
_ONE = (1).to_bytes(8, sys.byteorder)


@dataclass
class Pair:
    """Two endpoints A and B: A reads *ra* and answers on *wa*; B reads *rb*, sends on *wb*.

    For a socketpair ``ra == wa`` and ``rb == wb``; for eventfds A reads its
    own eventfd and writes B's.  ``os.read(r, size)`` drains one message;
    ``os.write(w, payload)`` sends one.  *owned* are the fds to close.
    """

    kind: str
    ra: int
    wa: int
    rb: int
    wb: int
    size: int
    payload: bytes
    owned: list[Any] = field(default_factory=list)

    def close(self) -> None:
        """Close every fd of the pair (idempotent)."""
        owned, self.owned = self.owned, []
        for obj in owned:
            if isinstance(obj, int):
                os.close(obj)
            else:
                obj.close()


def socketpair_pair() -> Pair:
    """A non-blocking AF_UNIX socketpair; messages are one byte."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return Pair("socketpair", a.fileno(), a.fileno(), b.fileno(), b.fileno(), 1, b"x", [a, b])


def eventfd_pair() -> Pair:
    """Two non-blocking eventfds; a message is an 8-byte add, a read drains it.

    Raises :class:`OSError` where eventfd does not exist (``os.eventfd`` is
    Linux-only).
    """
    if not hasattr(os, "eventfd"):
        raise OSError("os.eventfd is not available on this platform (Linux only)")
    flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
    ea = os.eventfd(0, flags)
    try:
        eb = os.eventfd(0, flags)
    except BaseException:
        os.close(ea)
        raise
    # A reads ea and writes eb; B reads eb and writes ea.
    return Pair("eventfd", ea, eb, eb, ea, 8, _ONE, [ea, eb])


def make_pair(kind: str) -> Pair:
    """A :class:`Pair` of *kind* ``"socketpair"`` or ``"eventfd"``."""
    if kind == "socketpair":
        return socketpair_pair()
    if kind == "eventfd":
        return eventfd_pair()
    raise ValueError(f"pair kind must be 'socketpair' or 'eventfd', got {kind!r}")


def open_idle_fds(count: int) -> tuple[list[int], Callable[[], None]]:
    """Open *count* fds that are never readable; return them and a closer.

    Eventfds where the platform has them (one fd each, counter stays 0);
    otherwise one end of a socketpair whose other end stays open and silent.
    A failure part-way closes what was opened and re-raises (``EMFILE``
    included: the caller raises ``RLIMIT_NOFILE`` first).
    """
    fds: list[int] = []
    keep: list[socket.socket] = []

    def close() -> None:
        for fd in fds:
            os.close(fd)
        fds.clear()
        for s in keep:
            s.close()
        keep.clear()

    try:
        for _ in range(count):
            if hasattr(os, "eventfd"):
                fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
            else:
                a, b = socket.socketpair()
                keep.append(b)
                fds.append(a.detach())
    except BaseException:
        close()
        raise
    return list(fds), close


# -- readiness floors -------------------------------------------------------


def pingpong(kind: str, pair: Pair, n: int, idle: Sequence[int] = ()) -> tuple[int, float]:
    """*n* round trips on *pair* from a raw ``poll`` or ``epoll`` loop.

    Returns ``(round trips, seconds)`` of the timed part (setup excluded).
    """
    if kind == "epoll":
        poller: Any = select.epoll()
        pollin = select.EPOLLIN
        timeout: float | None = -1
    elif kind == "poll":
        poller = select.poll()
        pollin = select.POLLIN
        timeout = None
    else:
        raise ValueError(f"raw loop kind must be 'poll' or 'epoll', got {kind!r}")
    ra, wa, rb, wb, size, payload = pair.ra, pair.wa, pair.rb, pair.wb, pair.size, pair.payload
    read, write = os.read, os.write
    try:
        poller.register(ra, pollin)
        poller.register(rb, pollin)
        for fd in idle:
            poller.register(fd, pollin)
        wait = poller.poll
        count = 0
        write(wb, payload)
        t0 = time.perf_counter()
        while count < n:
            for fd, _ in wait(timeout):
                if fd == ra:
                    read(ra, size)
                    write(wa, payload)
                elif fd == rb:
                    read(rb, size)
                    count += 1
                    if count < n:
                        write(wb, payload)
        dt = time.perf_counter() - t0
    finally:
        if kind == "epoll":
            poller.close()
    return count, dt


def _liburing() -> Any:
    # The built-in plugins are the separate top-level package aiocore_plugins
    # (plugins/ in the source tree); the core never imports them statically,
    # and the type checker knows them under another name, hence Any.
    return importlib.import_module("aiocore_plugins._liburing")


def io_uring_unavailable() -> str | None:
    """Why a raw io_uring loop cannot run here, or ``None`` if it can."""
    try:
        lr = _liburing()
        ring = lr.Ring(lr.load(), 4)
    except (ImportError, OSError) as exc:
        return str(exc)
    ring.close()
    return None


def raw_io_uring_pingpong(
    pair: Pair, n: int, idle: Sequence[int] = (), multishot: bool = False
) -> tuple[int, float]:
    """*n* round trips on *pair* from a raw io_uring loop; ``(round trips, seconds)``.

    Each fd is watched with ``IORING_OP_POLL_ADD`` (``user_data`` = the fd),
    one ``io_uring_submit_and_wait_timeout`` per iteration submits the re-arms
    and waits; SQEs are written with ``struct.pack_into`` and CQEs read from
    memoryviews, exactly as the io_uring backend does, minus its bookkeeping.
    Idle fds are armed once, in batches of the SQ size, before timing starts.
    """
    lr = _liburing()
    lib = lr.load()
    ring = lr.Ring(lib, 256)
    try:
        pack = lr.SQE.pack_into
        sqes = ring.sqes
        ru32 = ring.ring_u32
        tail_index = lr.SQE_TAIL_INDEX
        sq_mask = ring.sq_mask
        sq_entries = ring.sq_entries
        cq_khead = ring.cq_khead
        cq_ktail = ring.cq_ktail
        cq_mask = ring.cq_mask
        u64 = ring.cqe_u64
        op = lr.IORING_OP_POLL_ADD
        # The argtypes-free variant with ready-made pointer objects: the
        # cheapest way ctypes offers to make this call.
        swt = lib.submit_and_wait_timeout_raw
        addr = ring.address
        ring_arg = ctypes.c_void_p(addr)
        cqe_ptr = ctypes.c_void_p()
        cqe_pp = ctypes.c_void_p(ctypes.addressof(cqe_ptr))
        length = lr.IORING_POLL_ADD_MULTI if multishot else 0
        pollin = select.POLLIN
        ra, wa, rb, wb, size, payload = pair.ra, pair.wa, pair.rb, pair.wb, pair.size, pair.payload
        read, write = os.read, os.write

        def arm(fd: int) -> None:
            tail = ru32[tail_index]
            pack(sqes, (tail & sq_mask) << 6, op, 0, 0, fd, 0, 0, length,
                 pollin, fd, 0, 0, 0, 0, 0)  # fmt: skip
            ru32[tail_index] = (tail + 1) & 0xFFFF_FFFF

        pending = 0
        for fd in idle:
            arm(fd)
            pending += 1
            if pending == sq_entries:
                lib.submit(addr)
                pending = 0
        arm(ra)
        arm(rb)
        count = 0
        write(wb, payload)
        t0 = time.perf_counter()
        while count < n:
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
                if fd == ra:
                    read(ra, size)
                    write(wa, payload)
                elif fd == rb:
                    read(rb, size)
                    count += 1
                    if count < n:
                        write(wb, payload)
                if not multishot:
                    arm(fd)
            cq_khead[0] = head
        dt = time.perf_counter() - t0
    finally:
        ring.close()
    return count, dt


# -- callback floors ----------------------------------------------------------


def deque_chain(n: int) -> tuple[int, float]:
    """A callback that re-queues itself *n* times on a bare deque: the BH chain floor."""
    queue: collections.deque[Callable[[], None]] = collections.deque()
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1
        if count < n:
            queue.append(cb)

    queue.append(cb)
    pop = queue.popleft
    t0 = time.perf_counter()
    while queue:
        pop()()
    return count, time.perf_counter() - t0


def deque_fanout(n: int) -> tuple[int, float]:
    """*n* callbacks appended to a deque, then run: the one-shot fan-out floor."""
    queue: collections.deque[Callable[[], None]] = collections.deque()
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1

    append = queue.append
    pop = queue.popleft
    t0 = time.perf_counter()
    for _ in range(n):
        append(cb)
    while queue:
        pop()()
    return count, time.perf_counter() - t0


def heap_timers(
    deadlines_ns: Sequence[int], on_fire: Callable[[int], None], budget_s: float
) -> tuple[float, int]:
    """Call ``on_fire(i)`` at each ``deadlines_ns[i]`` (``time.monotonic_ns``) from a heap.

    The timer floor: a ``heapq`` of ``(deadline, index)``, one clock read per
    iteration, every due entry fired, then ``epoll_wait`` (``poll`` where
    there is no epoll) for the time to the next deadline.  Stops after
    *budget_s* seconds even if entries remain (the caller sees how many fired).
    Returns when the heap was ready (the end of "arming") as
    ``(time.perf_counter(), time.monotonic_ns())``.
    """
    heap = [(d, i) for i, d in enumerate(deadlines_ns)]
    heapq.heapify(heap)
    ready = time.perf_counter(), time.monotonic_ns()
    has_epoll = hasattr(select, "epoll")
    poller: Any = select.epoll() if has_epoll else select.poll()
    wait = poller.poll
    # epoll.poll takes seconds, poll.poll milliseconds; CPython rounds both up.
    scale = 1e-9 if has_epoll else 1e-6
    now_ns = time.monotonic_ns
    pop = heapq.heappop
    stop = now_ns() + int(budget_s * 1e9)
    try:
        while heap:
            now = now_ns()
            if now > stop:
                return ready
            while heap and heap[0][0] <= now:
                on_fire(pop(heap)[1])
            if heap:
                wait((heap[0][0] - now) * scale)
    finally:
        if has_epoll:
            poller.close()
    return ready
