"""Wake-up latency: another thread, or another process, wakes a loop blocked in poll(True).

Latency is the time from the waker's timestamp (``time.monotonic_ns()``, the
system-wide CLOCK_MONOTONIC, so it compares across processes) taken just
before it publishes and kicks, to the loop's timestamp in the callback that
sees the message.  Loop CPU is the loop thread's CPU time
(``time.thread_time``) over the wall time of the run: 100 % is a busy loop.

Scenarios (each a table; contenders alternate, median of the repeats):

* **thread**: a thread of the same process wakes the loop every ~200 us
  (``time.sleep``, which releases the GIL).  aiocore: ``ctx.bh_schedule_oneshot``
  into an IOThread with ``poll_max_ns`` 0 and 32768; asyncio (and uvloop if
  installed): ``call_soon_threadsafe``; floor: a raw ``epoll`` loop woken
  through an eventfd.
* **process, 20 us gaps**: a forked child (it inherited the eventfd and a
  shared ``mmap``) sends a timestamp every 20 us.  aiocore: an eventfd handler,
  and the ``shmring`` source (``aiocore_plugins.shmring_source``) with
  ``poll_max_ns`` 0 and 32768: with polling on, the loop spins on the ring's
  write index and the child skips the eventfd write while it does.  Baselines:
  asyncio's ``add_reader`` on the eventfd; floors: the raw epoll loop, a raw
  loop that consumes the same ring (spin, take, call back: what the shmring
  contenders do without an event loop), and a raw loop that spins on a shared
  index and reads the clock as soon as it moves (full CPU, the lower bound).
* **process, 2 ms gaps**: the same with long gaps, where the adaptive window
  must shrink to nothing so that polling costs (almost) no CPU.

    python benchmarks/wakeup_latency.py [--repeat 5] [--quick] [--json FILE]

``aiocore bench --workload wakeup`` runs the process cases through
:func:`bench_cases`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import random
import select
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiocore
from aiocore import AioContext, Clock, EventNotifier, IOThread, run_in_context

try:
    from aiocore_plugins.shmring_source import ShmRing, shmring_unavailable_reason
except ImportError:  # pragma: no cover - aiocore_plugins always ships with aiocore
    ShmRing = None  # type: ignore[assignment,misc]

    def shmring_unavailable_reason() -> str | None:
        return "aiocore_plugins.shmring_source is missing"


monotonic_ns = time.monotonic_ns

#: Messages discarded at the start of a run (the adaptive window settles).
WARMUP_FRACTION = 0.1
#: No single run may take longer than this (a lost wake-up fails the run).
RUN_DEADLINE_S = 30.0


@dataclass
class Run:
    """One run of one contender: per-message latencies and the loop's CPU."""

    latencies_ns: list[int]
    cpu_s: float
    wall_s: float
    kicks: int = -1  # eventfd writes by the waker (-1: not counted)
    sent: int = 0

    def p(self, q: float) -> float:
        data = sorted(self.latencies_ns[int(len(self.latencies_ns) * WARMUP_FRACTION) :])
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] / 1000.0

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s else float("nan")


@dataclass
class Contender:
    name: str
    role: str  # "aiocore", "baseline", "floor"
    run: Callable[[int], Run] | None
    unavailable: str | None = None
    runs: list[Run] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Thread wakers
# ---------------------------------------------------------------------------

THREAD_GAP_S = 200e-6


def _thread_waker(n: int, send: Callable[[int], object], done: threading.Event) -> None:
    for _ in range(n):
        time.sleep(THREAD_GAP_S * (0.5 + random.random()))
        send(monotonic_ns())
    done.wait(RUN_DEADLINE_S)


def aiocore_thread(poll_max_ns: int) -> Callable[[int], Run]:
    def run(n: int) -> Run:
        lat: list[int] = []
        done = threading.Event()

        def record(ts: int) -> None:
            lat.append(monotonic_ns() - ts)
            if len(lat) == n:
                done.set()

        with IOThread(name="bench-loop", poll_max_ns=poll_max_ns) as io:
            ctx = io.ctx
            cpu0 = run_in_context(ctx, time.thread_time)
            t0 = time.perf_counter()
            oneshot = ctx.bh_schedule_oneshot
            _thread_waker(n, lambda ts: oneshot(record, ts), done)
            wall = time.perf_counter() - t0
            cpu = run_in_context(ctx, time.thread_time) - cpu0
        if not done.is_set():
            raise RuntimeError(f"aiocore thread: {len(lat)} of {n} wake-ups arrived")
        return Run(lat, cpu, wall, sent=n)

    return run


def _asyncio_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return,unused-ignore]


def asyncio_thread(kind: str) -> Callable[[int], Run] | None:
    factory = _asyncio_loop_factory(kind)
    if factory is None:
        return None

    def run(n: int) -> Run:
        lat: list[int] = []
        done = threading.Event()
        cpu = [0.0, 0.0]
        loop = factory()
        started = threading.Event()

        def record(ts: int) -> None:
            lat.append(monotonic_ns() - ts)
            if len(lat) == n:
                done.set()
                cpu[1] = time.thread_time()
                loop.stop()

        def body() -> None:
            asyncio.set_event_loop(loop)
            cpu[0] = time.thread_time()
            loop.call_soon(started.set)
            loop.run_forever()

        t = threading.Thread(target=body, name="bench-asyncio")
        t.start()
        started.wait(10)
        t0 = time.perf_counter()
        _thread_waker(n, lambda ts: loop.call_soon_threadsafe(record, ts), done)
        wall = time.perf_counter() - t0
        if not done.is_set():
            loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
        if not done.is_set():
            raise RuntimeError(f"{kind} thread: {len(lat)} of {n} wake-ups arrived")
        return Run(lat, cpu[1] - cpu[0], wall, sent=n)

    return run


def raw_epoll_thread(n: int) -> Run:
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    ep = select.epoll()
    ep.register(efd, select.EPOLLIN)
    stamps: list[int] = []
    lat: list[int] = []
    done = threading.Event()
    cpu = [0.0]

    def loop() -> None:
        c0 = time.thread_time()
        deadline = time.monotonic() + RUN_DEADLINE_S
        seen = 0
        while seen < n and time.monotonic() < deadline:
            ep.poll(1.0)
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                continue
            now = monotonic_ns()
            while seen < len(stamps):
                lat.append(now - stamps[seen])
                seen += 1
        cpu[0] = time.thread_time() - c0
        done.set()

    def send(ts: int) -> None:
        stamps.append(ts)
        os.eventfd_write(efd, 1)

    t = threading.Thread(target=loop, name="bench-raw")
    t.start()
    t0 = time.perf_counter()
    _thread_waker(n, send, done)
    wall = time.perf_counter() - t0
    t.join(10)
    ep.close()
    os.close(efd)
    if len(lat) < n:
        raise RuntimeError(f"raw epoll thread: {len(lat)} of {n} wake-ups arrived")
    return Run(lat, cpu[0], wall, sent=n)


# ---------------------------------------------------------------------------
# Process wakers: a forked child sends timestamps
# ---------------------------------------------------------------------------

# Control words in a shared mmap: go flag, child kicks, then a log of stamps.
_GO, _KICKS, _COUNT, _LOG = 0, 1, 2, 3


class Shared:
    """An anonymous MAP_SHARED mapping: control words and a log of timestamps."""

    def __init__(self, n: int) -> None:
        self.map = mmap.mmap(-1, 8 * (_LOG + n))
        self.words = memoryview(self.map).cast("Q")

    def close(self) -> None:
        self.words.release()
        self.map.close()


def _fork_writer(
    shared: Shared,
    n: int,
    gap_ns: int,
    send: Callable[[int], object],
    finish: Callable[[], object] | None = None,
) -> int:
    """Fork a child that calls ``send(timestamp)`` every ~gap_ns; return its pid.

    It waits for the go flag, sleeps each gap (jittered by +-25 % so arrivals
    do not lock to the loop's phase; with a 1 ns timer slack), calls
    *finish* after the last message, then exits.  ``send`` returning
    ``False`` means "full, try again" (with the same stamp: the wait counts).
    Between the stamp and the send there is nothing but the call, the same
    for every contender: a writer that has slept runs cold, and every
    operation there is in the measured latency.  It must never return into
    the parent's code.
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns when a multi-threaded process forks (a child
        # could meet a lock another thread held).  This child only sleeps,
        # writes the shared mapping and the eventfd, and os._exit()s.
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        words = shared.words
        deadline = time.monotonic() + RUN_DEADLINE_S
        while not words[_GO]:
            if time.monotonic() > deadline:
                os._exit(2)
            time.sleep(0.0005)
        _fine_timer_slack()
        if WAKER_CPU is not None:
            os.sched_setaffinity(0, {WAKER_CPU})
        rng = random.Random(1)
        t_next = monotonic_ns() + gap_ns
        for _ in range(n):
            t_next += int(gap_ns * (0.75 + 0.5 * rng.random()))
            # Sleep, never spin: a spinning writer would take a CPU from the
            # loop on a small machine.  The timestamp is taken after the
            # sleep, so oversleeping only lengthens the gap, not the latency.
            ahead = t_next - monotonic_ns()
            if ahead > 0:
                time.sleep(ahead / 1e9)
            ts = monotonic_ns()
            while send(ts) is False:
                pass
        if finish is not None:
            finish()
        status = 0
    finally:
        os._exit(status)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


#: The loop runs on one CPU, a forked waker on another: a busy-polling loop
#: and its waker must not share a CPU, or the waker waits for the scheduler
#: to preempt the loop (milliseconds).  choose_cpus() picks the idlest two.
LOOP_CPU: int | None = None
WAKER_CPU: int | None = None


def _busy_jiffies() -> dict[int, int]:
    busy = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    values = [int(v) for v in fields]
                    busy[int(name[3:])] = sum(values) - values[3] - values[4]  # - idle, iowait
    except OSError:
        pass
    return busy


def choose_cpus() -> str:
    """Pin the loop to the idlest CPU we may use and the waker to the next; say which.

    Another process hogging a CPU (this machine is shared) would otherwise
    time-slice with a busy-polling loop and add milliseconds.
    """
    global LOOP_CPU, WAKER_CPU
    allowed = _cpus()
    if len(allowed) < 2:
        LOOP_CPU = WAKER_CPU = None
        return "not pinned (fewer than 2 CPUs)"
    before = _busy_jiffies()
    time.sleep(0.3)
    after = _busy_jiffies()
    load = {c: after.get(c, 0) - before.get(c, 0) for c in allowed}
    order = sorted(allowed, key=lambda c: (load[c], c))
    LOOP_CPU, WAKER_CPU = order[0], order[1]
    return f"loop on CPU {LOOP_CPU}, waker on CPU {WAKER_CPU} (busy jiffies in 0.3 s: {load})"


class pinned:
    """Pin the calling thread to LOOP_CPU for the duration (no-op on one CPU)."""

    def __enter__(self) -> None:
        self.saved = _cpus()
        if LOOP_CPU is not None:
            os.sched_setaffinity(0, {LOOP_CPU})

    def __exit__(self, *exc: object) -> None:
        if self.saved:
            os.sched_setaffinity(0, set(self.saved))


def _fine_timer_slack() -> None:
    """Make this process's sleeps precise to ~1 us (Linux's default slack is 50 us)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def _reap(pid: int) -> None:
    for _ in range(1000):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if status != 0:
                raise RuntimeError(f"writer process failed with status {status}")
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise RuntimeError("writer process did not exit")


def _log_sender(shared: Shared, efd: int | None) -> Callable[[int], None]:
    words = shared.words
    sent = 0  # the child's own count: reading _COUNT would fetch the reader's line

    def send(ts: int) -> None:
        nonlocal sent
        words[_LOG + sent] = ts
        sent += 1
        words[_COUNT] = sent
        if efd is not None:
            os.eventfd_write(efd, 1)
            words[_KICKS] += 1

    return send


def _drain_log(words: memoryview, seen: int, lat: list[int]) -> int:
    now = monotonic_ns()
    count = words[_COUNT]
    while seen < count:
        lat.append(now - words[_LOG + seen])
        seen += 1
    return seen


def raw_epoll_process(gap_ns: int) -> Callable[[int], Run]:
    def run(n: int) -> Run:
        shared = Shared(n)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ep = select.epoll()
        ep.register(efd, select.EPOLLIN)
        pid = _fork_writer(shared, n, gap_ns, _log_sender(shared, efd))
        lat: list[int] = []
        words = shared.words
        try:
            c0, t0 = time.thread_time(), time.perf_counter()
            words[_GO] = 1
            deadline = time.monotonic() + RUN_DEADLINE_S
            seen = 0
            while seen < n and time.monotonic() < deadline:
                ep.poll(1.0)
                try:
                    os.eventfd_read(efd)
                except BlockingIOError:
                    continue
                seen = _drain_log(words, seen, lat)
            cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
            kicks = words[_KICKS]
        finally:
            _reap(pid)
            ep.close()
            os.close(efd)
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"raw epoll: {len(lat)} of {n} wake-ups arrived")
        return Run(lat, cpu, wall, kicks, n)

    return run


def raw_spin_process(gap_ns: int) -> Callable[[int], Run]:
    """The lower bound: a loop that only spins on the shared index (100 % CPU)."""

    def run(n: int) -> Run:
        shared = Shared(n)
        pid = _fork_writer(shared, n, gap_ns, _log_sender(shared, None))
        lat: list[int] = []
        words = shared.words
        try:
            c0, t0 = time.thread_time(), time.perf_counter()
            words[_GO] = 1
            deadline = monotonic_ns() + int(RUN_DEADLINE_S * 1e9)
            seen = 0
            while seen < n:
                if words[_COUNT] != seen:
                    seen = _drain_log(words, seen, lat)
                elif monotonic_ns() > deadline:
                    break
            cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        finally:
            _reap(pid)
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"raw spin: {len(lat)} of {n} messages arrived")
        return Run(lat, cpu, wall, 0, n)

    return run


def raw_ring_process(gap_ns: int) -> Callable[[int], Run] | None:
    """A hand-written ring consumer: spin on the ring, take the value, call back.

    The floor for the ``shmring`` contenders: the same ring and producer, and
    the consumer does what the source's ``io_poll`` and ``io_poll_ready`` do
    (the ring's words read directly, the one-value case first), in one loop
    with no event loop around it.  Against ``raw spin on the index`` (which
    reads the clock as soon as the index moves) it adds taking the value and
    a callback; against it, aiocore adds ``poll()``.
    """
    if ShmRing is None or shmring_unavailable_reason() is not None:
        return None
    from aiocore_plugins.shmring_source import _SLOT_WORDS, _SLOTS, _TAIL

    def run(n: int) -> Run:
        shared = Shared(1)
        ring = ShmRing(capacity=4096)
        producer = ring.producer()
        pid = _fork_writer(shared, n, gap_ns, producer.push)
        lat: list[int] = []

        def on_items(values: list[int]) -> None:
            now = monotonic_ns()
            lat.extend(now - ts for ts in values)

        words = ring._live()
        capacity = ring.capacity
        end = _SLOTS + _SLOT_WORDS * capacity
        # The cursor, kept as the source's io_poll keeps it: the sequence
        # word of the next value's slot, and the number it will hold.
        at, want = _SLOTS, 1
        try:
            ring._set_polling(True)  # always polling: the producer never kicks
            c0, t0 = time.thread_time(), time.perf_counter()
            shared.words[_GO] = 1
            deadline = monotonic_ns() + int(RUN_DEADLINE_S * 1e9)
            while len(lat) < n:
                if words[at] == want:
                    value = words[at + 1]
                    at += _SLOT_WORDS
                    if at == end:
                        at = _SLOTS
                    values = [value]
                    want += 1
                    while words[at] == want:  # more than one: the rest too
                        values.append(words[at + 1])
                        want += 1
                        at += _SLOT_WORDS
                        if at == end:
                            at = _SLOTS
                    words[_TAIL] = want - 1
                    on_items(values)
                elif monotonic_ns() > deadline:
                    break
            cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        finally:
            _reap(pid)
            ring._set_polling(False)
            ring.close()
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"raw ring consumer: {len(lat)} of {n} values arrived")
        return Run(lat, cpu, wall, 0, n)

    return run


def asyncio_process(kind: str, gap_ns: int) -> Callable[[int], Run] | None:
    factory = _asyncio_loop_factory(kind)
    if factory is None:
        return None

    def run(n: int) -> Run:
        shared = Shared(n)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        pid = _fork_writer(shared, n, gap_ns, _log_sender(shared, efd))
        lat: list[int] = []
        words = shared.words
        loop = factory()
        state = {"seen": 0}

        def on_read() -> None:
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                return
            state["seen"] = _drain_log(words, state["seen"], lat)
            if state["seen"] >= n:
                loop.stop()

        try:
            loop.add_reader(efd, on_read)
            loop.call_later(RUN_DEADLINE_S, loop.stop)
            c0, t0 = time.thread_time(), time.perf_counter()
            words[_GO] = 1
            loop.run_forever()
            cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
            kicks = words[_KICKS]
            loop.remove_reader(efd)
        finally:
            loop.close()
            _reap(pid)
            os.close(efd)
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"{kind}: {len(lat)} of {n} wake-ups arrived")
        return Run(lat, cpu, wall, kicks, n)

    return run


def _guarded_poll(ctx: AioContext, done: Callable[[], bool]) -> None:
    """poll(True) until done(); a REALTIME timer bounds the run."""
    timer = ctx.timer_new_ns(Clock.REALTIME, lambda _: None)
    deadline = monotonic_ns() + int(RUN_DEADLINE_S * 1e9)
    timer.mod_ns(deadline)
    poll = ctx.poll
    while not done() and monotonic_ns() < deadline:
        poll(True)
    timer.delete()


def aiocore_eventfd_process(gap_ns: int, poll_max_ns: int) -> Callable[[int], Run]:
    """An eventfd handler (no io_poll, so poll mode stays off whatever poll_max_ns)."""

    def run(n: int) -> Run:
        shared = Shared(n)
        notifier = EventNotifier(kind="eventfd")
        efd = notifier.fileno()
        pid = _fork_writer(shared, n, gap_ns, _log_sender(shared, efd))
        lat: list[int] = []
        words = shared.words
        state = {"seen": 0}

        def on_read(e: EventNotifier) -> None:
            e.test_and_clear()
            state["seen"] = _drain_log(words, state["seen"], lat)

        try:
            with AioContext(poll_max_ns=poll_max_ns) as ctx:
                ctx.set_event_notifier(notifier, on_read)
                ctx.poll(False)
                c0, t0 = time.thread_time(), time.perf_counter()
                words[_GO] = 1
                _guarded_poll(ctx, lambda: state["seen"] >= n)
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                kicks = words[_KICKS]
                ctx.set_event_notifier(notifier, None)
        finally:
            _reap(pid)
            notifier.close()
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"aiocore eventfd: {len(lat)} of {n} wake-ups arrived")
        return Run(lat, cpu, wall, kicks, n)

    return run


def aiocore_shmring_process(
    gap_ns: int, poll_max_ns: int, context_class: type[AioContext] = AioContext
) -> Callable[[int], Run] | None:
    """The shmring source: the child pushes stamps; the loop may busy-poll the ring.

    *context_class* lets ``wakeup_breakdown.py`` run the same contender on a
    reduced ``poll()``.
    """
    if ShmRing is None or shmring_unavailable_reason() is not None:
        return None

    def run(n: int) -> Run:
        shared = Shared(1)
        ring = ShmRing(capacity=4096)
        words = shared.words

        # The producing end, made before fork(): the child pushes, the
        # parent never does.  push() returns False when full: retried.
        producer = ring.producer()

        def finish() -> None:
            words[_KICKS] = ring.kicks

        pid = _fork_writer(shared, n, gap_ns, producer.push, finish)
        lat: list[int] = []

        def on_items(values: list[int]) -> None:
            now = monotonic_ns()
            lat.extend(now - ts for ts in values)

        try:
            with context_class(poll_max_ns=poll_max_ns) as ctx:
                attachment = ctx.sources.shmring.attach(ring, on_items)
                ctx.poll(False)
                c0, t0 = time.thread_time(), time.perf_counter()
                words[_GO] = 1
                _guarded_poll(ctx, lambda: len(lat) >= n)
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                attachment.detach()
        finally:
            _reap(pid)  # first: the child stores its kick count in finish()
            kicks = words[_KICKS]
            ring.close()
            shared.close()
        if len(lat) < n:
            raise RuntimeError(f"aiocore shmring: {len(lat)} of {n} values arrived")
        return Run(lat, cpu, wall, kicks, n)

    return run


# ---------------------------------------------------------------------------
# Scenarios, alternation, the table
# ---------------------------------------------------------------------------


@dataclass
class Scenario:
    title: str
    n: int
    contenders: list[Contender]
    #: Pin the loop (this process) to LOOP_CPU; forked wakers pin themselves.
    pin: bool = True


def _c(name: str, role: str, run: Callable[[int], Run] | None, why: str | None = None) -> Contender:
    return Contender(name, role, run, None if run is not None else (why or "not available"))


_UVLOOP_WHY = "uvloop is not installed"
_RING_WHY = shmring_unavailable_reason()


#: The floors of the process cases, by contender name (``bench_cases`` maps
#: each aiocore contender to its own: the shmring ones to the ring consumer).
RAW_EPOLL = "raw epoll loop"
RAW_RING = "raw ring consumer (spin, take)"
RAW_SPIN = "raw spin on the index"


def process_contenders(gap_ns: int, *, spin: bool = True) -> list[Contender]:
    contenders = [
        _c("aiocore eventfd handler", "aiocore", aiocore_eventfd_process(gap_ns, 0)),
        _c(
            "aiocore shmring, poll_max_ns=0",
            "aiocore",
            aiocore_shmring_process(gap_ns, 0),
            _RING_WHY,
        ),
        _c(
            "aiocore shmring, poll_max_ns=32768",
            "aiocore",
            aiocore_shmring_process(gap_ns, 32768),
            _RING_WHY,
        ),
        _c("asyncio add_reader", "baseline", asyncio_process("asyncio", gap_ns)),
        _c("uvloop add_reader", "baseline", asyncio_process("uvloop", gap_ns), _UVLOOP_WHY),
        _c(RAW_EPOLL, "floor", raw_epoll_process(gap_ns)),
    ]
    if spin:
        contenders.append(_c(RAW_RING, "floor", raw_ring_process(gap_ns), _RING_WHY))
        contenders.append(_c(RAW_SPIN, "floor", raw_spin_process(gap_ns)))
    return contenders


def scenarios(quick: bool) -> list[Scenario]:
    k = 10 if quick else 1
    return [
        Scenario(
            "thread wakes the loop (~200 us gaps)",
            1000 // k,
            [
                _c("aiocore IOThread, poll_max_ns=0", "aiocore", aiocore_thread(0)),
                _c("aiocore IOThread, poll_max_ns=32768", "aiocore", aiocore_thread(32768)),
                _c("asyncio call_soon_threadsafe", "baseline", asyncio_thread("asyncio")),
                _c(
                    "uvloop call_soon_threadsafe", "baseline", asyncio_thread("uvloop"), _UVLOOP_WHY
                ),
                _c("raw epoll loop + eventfd", "floor", raw_epoll_thread),
            ],
            pin=False,
        ),
        Scenario("process wakes the loop, 20 us gaps", 3000 // k, process_contenders(20_000)),
        Scenario(
            "process wakes the loop, 2 ms gaps", 300 // k, process_contenders(2_000_000, spin=False)
        ),
    ]


def measure(scenario: Scenario, repeat: int) -> None:
    """Run every contender *repeat* times, alternating (A B C A B C ...)."""
    for i in range(repeat):
        for c in scenario.contenders:
            if c.run is None:
                continue
            if scenario.pin:
                with pinned():
                    c.runs.append(c.run(scenario.n))
            else:
                c.runs.append(c.run(scenario.n))
        sys.stderr.write(f"\r{scenario.title}: run {i + 1}/{repeat}   ")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * 70 + "\r")


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(c: Contender) -> dict[str, Any]:
    runs = c.runs
    p50 = [r.p(0.5) for r in runs]
    p99 = [r.p(0.99) for r in runs]
    cpu = [r.cpu_pct for r in runs]
    kicks = [r.kicks / r.sent for r in runs if r.kicks >= 0 and r.sent]
    return {
        "name": c.name,
        "role": c.role,
        "unavailable": c.unavailable,
        "p50_us": _med(p50),
        "p50_range_us": [min(p50), max(p50)] if p50 else None,
        "p99_us": _med(p99),
        "cpu_pct": _med(cpu),
        "kicks_per_message": _med(kicks) if kicks else None,
        "runs": len(runs),
    }


def print_table(scenario: Scenario, repeat: int) -> list[dict[str, Any]]:
    rows = [summary(c) for c in scenario.contenders]
    print(f"\n{scenario.title}  ({scenario.n} wake-ups per run, median of {repeat} runs)")
    width = max(len(r["name"]) for r in rows)
    print(
        f"  {'contender'.ljust(width)}  {'p50 us':>8} {'(min..max)':>14} {'p99 us':>8} "
        f"{'loop CPU':>8} {'kicks/msg':>9}"
    )
    for r in rows:
        if r["unavailable"]:
            print(f"  {r['name'].ljust(width)}  not available: {r['unavailable']}")
            continue
        lo, hi = r["p50_range_us"]
        kicks = "" if r["kicks_per_message"] is None else f"{r['kicks_per_message']:.2f}"
        print(
            f"  {r['name'].ljust(width)}  {r['p50_us']:8.1f} {f'({lo:.1f}..{hi:.1f})':>14} "
            f"{r['p99_us']:8.1f} {r['cpu_pct']:7.1f}% {kicks:>9}"
        )
    return rows


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "kernel": os.uname().release,
        "aiocore": aiocore.__version__,
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--repeat", type=int, default=5, help="runs per contender (default 5)")
    p.add_argument("--quick", action="store_true", help="a tenth of the messages: checks only")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--only", choices=("thread", "process"), help="run only the thread or the process cases"
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    env = environment()
    env["pinning"] = choose_cpus()
    print(f"wake-up latency  Python {env['python']}, {env['cpus']} CPUs, kernel {env['kernel']}")
    print(f"  load average {env['loadavg']}; {env['pinning']}")
    results = {}
    for sc in scenarios(args.quick):
        if args.only and not sc.title.startswith(args.only):
            continue
        measure(sc, args.repeat)
        results[sc.title] = print_table(sc, args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)
    return 0


# ---------------------------------------------------------------------------
# aiocore bench --workload wakeup
# ---------------------------------------------------------------------------


def floor_of(name: str, names: set[str]) -> str:
    """The floor of aiocore contender *name* in a case of contenders *names*.

    A ``shmring`` contender's is the raw ring consumer (the same ring and
    producer, no event loop), where the case has one (the 20 us gaps); every
    other aiocore contender's, and the shmring ones' without it, is the raw
    epoll loop.
    """
    if name.startswith("aiocore shmring") and RAW_RING in names:
        return RAW_RING
    return RAW_EPOLL


def bench_cases(settings: Any) -> list[Any]:
    """The process cases as ``aiocore bench`` cases (metric ``latency_us``: the p50).

    Each run's sample also carries ``p99_us`` and ``cpu_pct``.  The thread
    case stays in the script (it runs IOThreads and event loops in threads,
    which the bench harness's SIGALRM watchdog cannot interrupt).  The floor
    of each aiocore contender is given by :func:`floor_of`.
    """
    from aiocore.bench.harness import Case
    from aiocore.bench.harness import Contender as BenchContender

    def sample(fn: Callable[[int], Run], n: int) -> Callable[[int], dict[str, float]]:
        def run(_size: int) -> dict[str, float]:
            with pinned():
                r = fn(n)
            return {"latency_us": r.p(0.5), "p99_us": r.p(0.99), "cpu_pct": r.cpu_pct}

        return run

    choose_cpus()
    cases = []
    for gap_ns, full in ((20_000, 3000), (2_000_000, 300)):
        n = full // 10 if settings.quick else full
        contenders = []
        ours = process_contenders(gap_ns, spin=gap_ns < 1_000_000)
        names = {c.name for c in ours}
        for c in ours:
            family = "aiocore" if c.role == "aiocore" else c.name.split()[0]
            run = None if c.run is None else sample(c.run, n)
            floor = floor_of(c.name, names) if c.role == "aiocore" else None
            contenders.append(
                BenchContender(c.name, c.role, family, run, c.unavailable, floor)  # type: ignore[arg-type]
            )
        label = f"another process, {gap_ns // 1000} us gaps"
        cases.append(
            Case(label, contenders, {"gap_ns": gap_ns, "messages": n}, size=1, time_limit=120)
        )
    return cases


if __name__ == "__main__":
    sys.exit(main())
