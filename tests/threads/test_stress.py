"""Stress tests: many threads, many wake-ups; bounded in count and time.

Each test has a fixed amount of work or a fixed run time plus a hard
deadline, and a :class:`Watchdog` or join timeouts, so a lost wake-up or a
deadlock fails the test instead of hanging it.  They run on the default
backend only (every backend shares the core code under test; the
per-backend wake-up tests are in ``test_cross_thread.py``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import aiocore
from aiocore import (
    AioContext,
    Clock,
    CoMutex,
    Coroutine,
    IOThread,
    co_reschedule_self,
    co_schedule,
    current_coroutine,
    run_in_context,
    yield_,
)

from ._support import Watchdog, join_all

Make = Callable[..., IOThread]


@pytest.fixture
def plain(registry: aiocore.PluginRegistry) -> Iterator[AioContext]:
    ctx = AioContext(registry=registry)
    try:
        yield ctx
    finally:
        ctx.close()


# -- 4 producers x 100,000 BHs and one-shots into one blocked context --------------


def test_four_threads_schedule_100000_each_every_callback_runs_exactly_once(
    plain: AioContext,
) -> None:
    producers, per_producer = 4, 100_000
    total = producers * per_producer
    # runs[p] collects the sequence numbers of producer p in the order they ran.
    runs: list[list[int]] = [[] for _ in range(producers)]
    start = threading.Barrier(producers + 1)
    ctx = plain

    def produce(p: int) -> None:
        record = runs[p].append
        oneshot = ctx.bh_schedule_oneshot
        start.wait(10)
        for i in range(per_producer):
            if i % 2:
                oneshot(record, i)
            else:
                ctx.bh_new(record, i).schedule()

    threads = [threading.Thread(target=produce, args=(p,), name=f"p{p}") for p in range(producers)]
    for t in threads:
        t.start()
    # Count the waits that may block, to show the loop really slept and was woken.
    blocking_waits = [0]
    real_wait = ctx._backend.wait

    def counting_wait(timeout_ns: int) -> list[tuple[int, int]]:
        if timeout_ns:
            blocking_waits[0] += 1
        return real_wait(timeout_ns)

    ctx._backend.wait = counting_wait  # type: ignore[method-assign]
    start.wait(10)
    deadline = time.monotonic() + 50
    polls = 0
    with Watchdog(ctx, 50) as dog:
        while sum(len(r) for r in runs) < total:
            assert time.monotonic() < deadline, "producers too slow"
            ctx.poll(True)  # blocks whenever the producers fall behind
            polls += 1
    join_all(threads, 10)
    for _ in range(3):
        ctx.poll(False)  # nothing more may run
    assert not dog.fired, "a wake-up was lost: the loop slept with BHs queued"
    for p in range(producers):
        # Exactly once each, and in each producer's order (BH passes are FIFO).
        assert runs[p] == list(range(per_producer)), f"producer {p}"
    assert polls < total  # batches were run, not one callback per poll
    assert blocking_waits[0] > 10, blocking_waits  # it did block, and was woken


# -- handshakes: every single wake-up must arrive --------------------------------


def _handshakes(
    ctx: AioContext,
    rounds: int,
    arm: Callable[[Callable[[], None]], Callable[[], None]],
) -> int:
    """A waker thread does *rounds* wake-ups, one at a time, each waited for.

    ``arm(done)`` returns the waker's action for one round; the action makes
    the home thread (blocked in ``poll(True)`` with nothing else to do) call
    ``done()``.  Nothing else can wake the loop, so a lost wake-up stalls the
    round: the waker then fails after 2 s and the watchdog rescues the loop.
    Returns the number of rounds completed.
    """
    completed = threading.Semaphore(0)
    finished = [0]
    stop = [False]
    failures: list[str] = []

    def done() -> None:
        finished[0] += 1
        completed.release()

    action = arm(done)

    def waker() -> None:
        for i in range(rounds):
            action()
            if not completed.acquire(timeout=2):
                failures.append(f"round {i}: the wake-up was lost")
                break
        stop[0] = True
        ctx.notify()

    t = threading.Thread(target=waker, name="waker")
    deadline = time.monotonic() + 40
    with Watchdog(ctx, 40) as dog:
        t.start()
        while not stop[0]:
            assert time.monotonic() < deadline
            ctx.poll(True)
        join_all([t], 10)
    assert not failures, failures
    assert not dog.fired
    return finished[0]


ROUNDS = 20_000


def test_handshake_bh_schedule(plain: AioContext) -> None:
    def arm(done: Callable[[], None]) -> Callable[[], None]:
        return plain.bh_new(lambda _: done()).schedule

    assert _handshakes(plain, ROUNDS, arm) == ROUNDS


def test_handshake_oneshot(plain: AioContext) -> None:
    def arm(done: Callable[[], None]) -> Callable[[], None]:
        return lambda: plain.bh_schedule_oneshot(lambda _: done())

    assert _handshakes(plain, ROUNDS, arm) == ROUNDS


def test_handshake_notify_after_publishing_a_flag(plain: AioContext) -> None:
    """A bare notify(): the only record of the work is a flag the loop checks."""
    flag = [False]
    calls = [0]

    def check(_: object) -> None:
        # An idle BH polls the flag on every poll() without making progress.
        calls[0] += 1

    def arm(done: Callable[[], None]) -> Callable[[], None]:
        def wake() -> None:
            flag[0] = True
            plain.notify()

        orig_poll = plain.poll

        def poll(blocking: bool = True) -> bool:
            if flag[0]:
                flag[0] = False
                done()
            return orig_poll(blocking)

        plain.poll = poll  # type: ignore[method-assign]
        return wake

    try:
        assert _handshakes(plain, ROUNDS, arm) == ROUNDS
    finally:
        del plain.poll


def test_handshake_timer_moved_earlier(plain: AioContext) -> None:
    def arm(done: Callable[[], None]) -> Callable[[], None]:
        timer = plain.timer_new_ns(Clock.REALTIME, lambda _: done())

        def wake() -> None:
            timer.mod_ns(aiocore.clock_get_ns(Clock.REALTIME) + 3600 * 10**9)  # far...
            timer.mod_ns(0)  # ... then due now: earliest, notifies

        return wake

    assert _handshakes(plain, ROUNDS, arm) == ROUNDS


def test_handshake_handler_added_under_acquire(plain: AioContext) -> None:
    notifier = aiocore.EventNotifier(active=True)  # always readable

    def arm(done: Callable[[], None]) -> Callable[[], None]:
        def on_read(e: aiocore.EventNotifier) -> None:
            plain.set_event_notifier(e, None)  # one call per registration
            done()

        def wake() -> None:
            plain.acquire()
            try:
                plain.set_event_notifier(notifier, on_read)
            finally:
                plain.release()

        return wake

    try:
        assert _handshakes(plain, 2_000, arm) == 2_000
    finally:
        plain.set_event_notifier(notifier, None)
        notifier.close()


def test_handshake_with_poll_mode_on(registry: aiocore.PluginRegistry) -> None:
    """The busy-poll path of poll() must see notifications too."""
    with AioContext(registry=registry, poll_max_ns=200_000) as ctx:

        def arm(done: Callable[[], None]) -> Callable[[], None]:
            return lambda: ctx.bh_schedule_oneshot(lambda _: done())

        assert _handshakes(ctx, ROUNDS, arm) == ROUNDS


# -- QEMU's test-aio-multithread "schedule": coroutines across 5 IOThreads ---------


def test_five_iothreads_schedule_coroutines_to_each_other(iothreads: Make) -> None:
    """Each IOThread runs coroutines that wake coroutines parked at random others.

    As QEMU's test: a coroutine parks itself in its context's slot, takes a
    coroutine parked in the slot of a random context and schedules it there
    (a cross-thread ``co_schedule``), and yields.  Here coroutines
    also move to a random context now and then (``co_reschedule_self``).
    After a fixed time everyone is told to stop; each context then wakes the
    coroutine parked in its slot, from inside that context (so it cannot race
    a coroutine parking there).  As in QEMU's test, a waker that finds the
    slot empty gives up (so activity settles to few coroutines hopping
    between threads); unlike it, the last active one then wakes from its own
    slot, as coroutines that move can leave the chosen slot empty for good.
    Every wake must be matched by exactly one resumption, every coroutine
    must finish, and nothing may stay scheduled.
    """
    n = 5
    per_context = 2
    run_seconds = 2.0
    ios = [iothreads(name=f"sched{i}") for i in range(n)]
    ctxs = [io.ctx for io in ios]
    index = {id(c): i for i, c in enumerate(ctxs)}
    slots: list[list[Coroutine]] = [[] for _ in range(n)]
    lock = threading.Lock()
    stopping = [False]
    total = n * per_context
    parked = [0]
    counts = {"here": 0, "other": 0, "retry": 0, "resumed": 0, "moves": 0}
    finished = threading.Semaphore(0)

    def schedule_next(target: int, own: int) -> None:
        with lock:
            if not slots[target]:
                counts["retry"] += 1
                if parked[0] < total:
                    return  # as QEMU: give up, one coroutine fewer is active
                # Everyone is parked (the caller too): wake from the caller's
                # own slot so that activity never dies out.
                target = own
            co = slots[target].pop(0)
            parked[0] -= 1
            me = current_coroutine()
            counts["here" if me is not None and me.ctx is ctxs[target] else "other"] += 1
        co_schedule(ctxs[target], co)

    def wake_parked(i: int) -> None:
        with lock:
            wake = slots[i][:]
            slots[i].clear()
            parked[0] -= len(wake)
            counts["here"] += len(wake)
        for co in wake:
            co_schedule(ctxs[i], co)

    async def entry(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                if rng.random() < 0.1:
                    with lock:
                        counts["moves"] += 1
                    await co_reschedule_self(ctxs[rng.randrange(n)])
                # The stop check and the parking happen in one run of this
                # coroutine in its current context: finish_cb, which runs in
                # that context too, cannot fall between them.
                if stopping[0]:
                    return
                me = current_coroutine()
                assert me is not None and me.ctx is not None
                here = index[id(me.ctx)]
                # Park first, then wake a random parked one (perhaps this one:
                # scheduling a running coroutine takes effect when it yields),
                # as QEMU's original test: at least one coroutine stays active.
                with lock:
                    slots[here].append(me)
                    parked[0] += 1
                schedule_next(rng.randrange(n), here)
                await yield_()
                with lock:
                    counts["resumed"] += 1
                    assert all(me not in s for s in slots)
        finally:
            finished.release()

    cos = []
    for i in range(n):
        for j in range(per_context):
            co = Coroutine(entry(i * 100 + j), name=f"co{i}.{j}")
            cos.append(co)
            co_schedule(ctxs[i], co)
    time.sleep(run_seconds)
    stopping[0] = True

    for i in range(n):
        # In context i itself, so it cannot fall between a coroutine's stop
        # check and its parking there.
        run_in_context(ctxs[i], wake_parked, i, timeout=10)
    for _ in cos:
        assert finished.acquire(timeout=10), "a coroutine never finished (a lost wake-up?)"
    for c in cos:
        assert c.done and c.exception() is None, c
        assert not c.scheduled
    for i, ctx in enumerate(ctxs):
        # Nothing queued behind this very check (which runs as a BH itself).
        assert run_in_context(ctx, lambda c=ctx: len(c._bhs._live), timeout=5) == 0, i
    assert all(not s for s in slots)
    with lock:
        wakes = counts["here"] + counts["other"]
        assert wakes == counts["resumed"], counts  # none lost, none doubled
        assert counts["other"] > 1000, counts  # it really crossed threads
        assert counts["moves"] > 100, counts
    for io in ios:
        io.stop(timeout=10)
        assert io.ctx.closed


# -- CoMutex under contention from 5 threads ----------------------------------------


def test_comutex_counter_under_contention_from_five_threads(iothreads: Make) -> None:
    """QEMU's test-aio-multithread "mutex": the protected count equals the atomic one.

    The critical section reads the counter, suspends (and, half of the time,
    moves to another thread), then writes it back: without mutual exclusion
    updates would be lost (checked by the unprotected run first).
    """
    n = 5
    per_context = 3
    run_seconds = 1.5
    ios = [iothreads(name=f"mutex{i}") for i in range(n)]
    ctxs = [io.ctx for io in ios]

    def run(mutex: CoMutex | None) -> tuple[int, int]:
        counter = [0]
        atomic = [0]
        atomic_lock = threading.Lock()
        stopping = [False]
        finished = threading.Semaphore(0)

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not stopping[0]:
                    if mutex is not None:
                        await mutex.lock()
                    value = counter[0]
                    if rng.random() < 0.5:
                        await co_reschedule_self(ctxs[rng.randrange(n)])
                    else:
                        await co_reschedule_self(current_coroutine().ctx)  # type: ignore[union-attr, arg-type]
                    counter[0] = value + 1
                    if mutex is not None:
                        mutex.unlock()
                    with atomic_lock:
                        atomic[0] += 1
            finally:
                finished.release()

        cos = [
            Coroutine(worker(i * 10 + j), name=f"w{i}.{j}")
            for i in range(n)
            for j in range(per_context)
        ]
        for k, co in enumerate(cos):
            co_schedule(ctxs[k % n], co)
        time.sleep(run_seconds)
        stopping[0] = True
        for _ in cos:
            assert finished.acquire(timeout=10), "a worker never finished"
        for co in cos:
            assert co.exception() is None, co
        if mutex is not None:
            assert not mutex.locked
        return counter[0], atomic[0]

    # Without the mutex the test must be able to see lost updates ...
    unprotected, total = run(None)
    assert unprotected < total
    # ... and with it there are none.
    protected, total = run(CoMutex())
    assert total > 1000
    assert protected == total
