"""What one operation of each hot path costs, next to the bare Python that does the same.

The profile behind ``docs/performance.rst`` ("Where the time goes"): each line
times one operation of ``AioContext`` -- an idle ``poll()``, one BH of a
chain, a ``poll()`` that dispatches one ready fd, the way from a busy-poll
hit to its ``io_poll_ready``, arming and running a timer, and each backend's
``wait()`` alone -- and, beside it, the least Python that does the same job
(a deque, ``epoll.poll`` with a dict, a spin loop, ``heapq``).  The
difference is the framework's cost per operation, which is what bounds the
ratios ``aiocore bench`` reports.  Medians of 7 runs, nanoseconds:

    python benchmarks/hot_paths.py [--n 200000] [--backend epoll]
"""

from __future__ import annotations

import argparse
import heapq
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable

from aiocore import AioContext, Clock, EventNotifier, PluginRegistry
from aiocore.bench import raw

REPEAT = 7


def _median(fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(REPEAT))


def idle_poll(backend: str, n: int) -> float:
    with AioContext(backend=backend) as ctx:
        poll = ctx.poll
        poll(False)
        t = time.perf_counter()
        for _ in range(n):
            poll(False)
        return (time.perf_counter() - t) / n * 1e9


def raw_idle_epoll(n: int) -> float:
    ep = select.epoll()
    try:
        t = time.perf_counter()
        for _ in range(n):
            ep.poll(0)
        return (time.perf_counter() - t) / n * 1e9
    finally:
        ep.close()


def bh_chain(backend: str, n: int) -> float:
    with AioContext(backend=backend) as ctx:
        count = 0

        def cb(_: object) -> None:
            nonlocal count
            count += 1
            if count < n:
                bh.schedule()

        bh = ctx.bh_new(cb)
        bh.schedule()
        poll = ctx.poll
        t = time.perf_counter()
        while count < n:
            poll(True)
        dt = time.perf_counter() - t
        bh.delete()
        return dt / n * 1e9


def deque_chain(n: int) -> float:
    count, dt = raw.deque_chain(n)  # the same floor ``aiocore bench`` uses
    return dt / count * 1e9


def ready_fd(backend: str, n: int) -> float:
    a, b = socket.socketpair()
    try:
        b.send(b"x")  # stays readable: level-triggered, reported every time
        calls = 0

        def on_read(_: object) -> None:
            nonlocal calls
            calls += 1

        with AioContext(backend=backend) as ctx:
            ctx.set_fd_handler(a, on_read)
            poll = ctx.poll
            poll(False)
            t = time.perf_counter()
            for _ in range(n):
                poll(False)
            dt = time.perf_counter() - t
            ctx.set_fd_handler(a, None)
        assert calls >= n, "the ready fd was not dispatched every time"
        return dt / n * 1e9
    finally:
        a.close()
        b.close()


def raw_ready_fd(n: int) -> float:
    a, b = socket.socketpair()
    ep = select.epoll()
    try:
        b.send(b"x")
        ep.register(a.fileno(), select.EPOLLIN)
        calls = 0

        def on_read(_: object) -> None:
            nonlocal calls
            calls += 1

        handlers = {a.fileno(): on_read}
        t = time.perf_counter()
        for _ in range(n):
            for fd, _mask in ep.poll(0):
                handlers[fd](None)
        return (time.perf_counter() - t) / n * 1e9
    finally:
        ep.close()
        a.close()
        b.close()


class _HitClock:
    """An ``io_poll`` that always hits, reading the clock last, and an
    ``io_poll_ready`` that reads it first: the two readings bracket exactly
    what runs between them."""

    def __init__(self) -> None:
        self.hit_at = self.total = 0

    def io_poll(self, _: object) -> bool:
        self.hit_at = time.perf_counter_ns()
        return True

    def io_poll_ready(self, _: object) -> None:
        self.total += time.perf_counter_ns() - self.hit_at


def poll_hit(backend: str, n: int) -> float:
    """From a busy-poll hit to ``io_poll_ready``: the core's share of a polled
    wake-up, SPEC 2 steps 5-8 after a hit."""
    hits = _HitClock()
    with AioContext(backend=backend, poll_max_ns=32768) as ctx:
        notifier = EventNotifier()
        ctx.set_event_notifier(
            notifier, lambda _: None, hits.io_poll, io_poll_ready=hits.io_poll_ready
        )
        poll = ctx.poll
        for _ in range(10):  # the window opens after the first hits (SPEC 5)
            poll(True)
        assert ctx.poll_ns, "poll mode did not start"
        hits.total = 0
        for _ in range(n):
            poll(True)
        ctx.set_event_notifier(notifier, None)
        notifier.close()
    return hits.total / n


def raw_poll_hit(n: int) -> float:
    """The same bracket around a spin loop's call."""
    hits = _HitClock()
    io_poll, io_poll_ready = hits.io_poll, hits.io_poll_ready
    for _ in range(n):
        while not io_poll(None):
            pass
        io_poll_ready(None)
    return hits.total / n


def backend_wait(backend: str, n: int) -> float:
    """The backend alone: ``wait(0)`` reporting one ready fd, no core around it."""
    registry = PluginRegistry()
    cls = registry.backends[backend].cls
    from aiocore.backend import EVENT_IN, BackendSetup

    opts = {name: opt.default for name, opt in cls.options.items()}
    setup = BackendSetup(options=opts, open=lambda other: None, log=lambda msg: None)
    be = cls(setup)
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        be.update(a.fileno(), 0, EVENT_IN)
        be.wait(0)
        t = time.perf_counter()
        for _ in range(n):
            be.wait(0)
        return (time.perf_counter() - t) / n * 1e9
    finally:
        be.close()
        a.close()
        b.close()


def timers(backend: str, n: int) -> tuple[float, float]:
    with AioContext(backend=backend) as ctx:
        count = 0

        def cb(_: object) -> None:
            nonlocal count
            count += 1

        made = [ctx.timer_new_ns(Clock.REALTIME, cb) for _ in range(n)]
        t = time.perf_counter()
        for i, timer in enumerate(made):
            timer.mod_ns(i)  # all in the past: due at the next run
        arm = (time.perf_counter() - t) / n * 1e9
        t = time.perf_counter()
        ctx.poll(False)
        run = (time.perf_counter() - t) / n * 1e9
        assert count == n
        return arm, run


def raw_heap(n: int) -> tuple[float, float]:
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1

    heap: list[tuple[int, int, Callable[[], None]]] = []
    t = time.perf_counter()
    for i in range(n):
        heapq.heappush(heap, (i, i, cb))
    arm = (time.perf_counter() - t) / n * 1e9
    t = time.perf_counter()
    while heap:
        heapq.heappop(heap)[2]()
    return arm, (time.perf_counter() - t) / n * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="operations per run")
    parser.add_argument("--backend", default="epoll", help="backend for the core lines")
    args = parser.parse_args(argv)
    n, be = args.n, args.backend
    rows: list[tuple[str, float, str, float]] = [
        # Nothing registered needs a system call: the core's own cost alone.
        ("idle poll(False), no syscall", _median(lambda: idle_poll(be, n)), "", 0.0),
        ("(for scale) epoll.poll(0)", _median(lambda: raw_idle_epoll(n)), "", 0.0),
        ("BH chain, per callback", _median(lambda: bh_chain(be, n)),
         "deque chain", _median(lambda: deque_chain(n))),
        ("poll(False) + one io_read", _median(lambda: ready_fd(be, n)),
         "epoll.poll(0) + dict call", _median(lambda: raw_ready_fd(n))),
        ("busy-poll hit to io_poll_ready", _median(lambda: poll_hit(be, n)),
         "spin loop: io_poll, then call", _median(lambda: raw_poll_hit(n))),
    ]  # fmt: skip
    for name in ("poll", "epoll", "io_uring"):
        try:
            ns = _median(lambda name=name: backend_wait(name, n))  # type: ignore[misc]
        except Exception as exc:  # a backend this machine lacks: say so, go on
            print(f"({name}: not measured: {exc})", file=sys.stderr)
            continue
        rows.append((f"{name} backend wait(0), 1 ready", ns, "", 0.0))
    t_core = [timers(be, n // 2) for _ in range(REPEAT)]
    t_raw = [raw_heap(n // 2) for _ in range(REPEAT)]
    rows.append(("timer mod_ns (arm)", statistics.median(a for a, _ in t_core),
                 "heappush", statistics.median(a for a, _ in t_raw)))  # fmt: skip
    rows.append(("timer run, per due timer", statistics.median(r for _, r in t_core),
                 "heappop + call", statistics.median(r for _, r in t_raw)))  # fmt: skip
    print(f"aiocore hot paths on {be}, {n:,} operations per run, median of {REPEAT} (ns per op)")
    print(f"  {'operation':32s} {'aiocore':>8s}   {'bare Python':28s} {'ns':>6s}  {'overhead':>8s}")
    for name, ns, raw_name, raw_ns in rows:
        extra = f"{ns - raw_ns:8.0f}" if raw_name else ""
        raw = f"{raw_ns:6.0f}" if raw_name else ""
        print(f"  {name:32s} {ns:8.0f}   {raw_name:28s} {raw:>6s}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
