"""Threads: SPEC 2 step 1, SPEC 6 (the notify protocol across threads) and SPEC 11.

``poll()`` from another thread raises ``RuntimeError``; ``acquire()``/
``release()`` are recursive and exclude other threads, and ``poll()`` does not
take that lock; ``set_fd_handler`` from another thread holding ``acquire()``,
``notify()``, ``bh.schedule()``, ``bh_schedule_oneshot()``, ``timer.mod()``
(moving it earlier), ``virtual_clock_step()`` and ``clock_enable()`` from
another thread each wake a home thread blocked in ``poll(True)``; cross-thread
``cancel()``/``delete()`` before a pass; and a stress test for lost wake-ups.

Every blocking poll here is bounded: a REALTIME guard timer (see
``_support.Guard``) fires if a wake-up is lost, and the test then fails on it
instead of hanging; every thread is joined with a timeout.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from aiocore import (
    SCALE_MS,
    AioContext,
    Clock,
    PluginRegistry,
    clock_enable,
    clock_get_ns,
    virtual_clock_step,
)

from ._support import Guard, Pair, Recorder, WaitSpy

JOIN_S = 5.0


class Worker:
    """Run *fn* in a daemon thread after *delay_s*; keep its exception."""

    def __init__(self, fn: Callable[[], object], delay_s: float = 0.02) -> None:
        self.fn = fn
        self.delay_s = delay_s
        self.started = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.started.set()
            self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive(), "worker thread did not finish"
        if self.error is not None:
            raise self.error


def blocked_poll_is_woken_by(
    ctx: AioContext, fn: Callable[[], object], until: Callable[[], bool]
) -> list[bool]:
    """Block in poll(True) while another thread runs *fn*; poll until *until()*.

    Returns the poll results.  Fails if the guard fired (a lost wake-up) or if
    a poll returned before the worker acted.
    """
    guard = Guard(ctx, 3000)
    ctx.poll(False)  # accept the guard's own notification
    worker = Worker(fn)
    results: list[bool] = []
    for _ in range(10):
        results.append(ctx.poll(True))
        assert worker.started.is_set(), "poll(True) returned before the other thread acted"
        # The wake-up may come from inside fn (its notify()); let fn finish
        # before judging the outcome.
        worker.done.wait(JOIN_S)
        if until():
            break
    worker.join()
    assert not guard.fired, "the blocked poll was not woken (the guard timer fired)"
    assert until()
    guard.cancel()
    return results


# -- home thread ---------------------------------------------------------------------


def test_poll_from_another_thread_raises(ctx: AioContext) -> None:
    errors: list[BaseException] = []
    in_home: list[bool] = []

    def other() -> None:
        in_home.append(ctx.in_home_thread())
        for blocking in (False, True):
            try:
                ctx.poll(blocking)
            except RuntimeError as exc:
                errors.append(exc)

    ran: list[int] = []
    ctx.bh_schedule_oneshot(lambda _o: ran.append(1))
    Worker(other, 0).join()
    assert len(errors) == 2
    assert in_home == [False]
    assert ctx.in_home_thread()
    # The other thread's attempts changed nothing: the BH is still pending.
    assert ran == []
    assert ctx.poll(False) is True
    assert ran == [1]


# -- acquire / release ------------------------------------------------------------------


def test_acquire_is_recursive(ctx: AioContext) -> None:
    for _ in range(3):
        ctx.acquire()
    for _ in range(3):
        ctx.release()
    with pytest.raises(RuntimeError):
        ctx.release()


def test_release_from_a_thread_not_holding_it_raises(ctx: AioContext) -> None:
    ctx.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            ctx.release()
        except RuntimeError as exc:
            errors.append(exc)

    Worker(other, 0).join()
    assert len(errors) == 1
    ctx.release()


def test_acquire_excludes_other_threads_until_fully_released(ctx: AioContext) -> None:
    got = threading.Event()
    let_go = threading.Event()

    def other() -> None:
        ctx.acquire()
        got.set()
        let_go.wait(JOIN_S)
        ctx.release()

    ctx.acquire()
    ctx.acquire()
    worker = Worker(other, 0)
    assert not got.wait(0.02)
    ctx.release()
    assert not got.wait(0.02)
    ctx.release()
    assert got.wait(JOIN_S)
    let_go.set()
    worker.join()


def test_poll_does_not_take_the_lock(ctx: AioContext) -> None:
    holding = threading.Event()
    polled = threading.Event()
    timed_out: list[bool] = []

    def other() -> None:
        ctx.acquire()
        holding.set()
        timed_out.append(not polled.wait(2.0))
        ctx.release()

    worker = Worker(other, 0)
    assert holding.wait(JOIN_S)
    ran: list[int] = []
    ctx.bh_schedule_oneshot(lambda _o: ran.append(1))
    assert ctx.poll(False) is True
    ctx.notify()
    ctx.poll(True)
    polled.set()
    worker.join()
    assert ran == [1]
    assert timed_out == [False], "poll() waited for the lock another thread held"


# -- wake-ups from another thread --------------------------------------------------------


def test_set_fd_handler_from_another_thread_wakes_a_blocked_poll(
    ctx: AioContext, pair: Pair
) -> None:
    # The fd is not ready: only the change's notify() can end the wait.
    registered = threading.Event()

    def other() -> None:
        ctx.acquire()
        try:
            ctx.set_fd_handler(pair.a, lambda _o: None)
        finally:
            ctx.release()
        registered.set()

    results = blocked_poll_is_woken_by(ctx, other, registered.is_set)
    assert results == [False]
    assert pair.a in ctx.handler_fds()


def test_handler_added_from_another_thread_is_dispatched(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    pair.send_to_a()

    def other() -> None:
        ctx.acquire()
        try:
            ctx.set_fd_handler(pair.a, rec.cb("read"), opaque="t")
        finally:
            ctx.release()

    blocked_poll_is_woken_by(ctx, other, lambda: bool(rec.calls))
    assert rec.calls[0] == ("read", "t")


def test_handler_removed_from_another_thread_wakes_and_is_gone(
    ctx: AioContext, pair: Pair
) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"))
    removed = threading.Event()

    def other() -> None:
        ctx.acquire()
        try:
            ctx.set_fd_handler(pair.a, None)
        finally:
            ctx.release()
        removed.set()
        pair.send_to_a()

    blocked_poll_is_woken_by(ctx, other, removed.is_set)
    assert pair.a not in ctx.handler_fds()
    assert ctx.poll(False) is False
    assert rec.calls == []


def test_notify_from_another_thread_wakes_without_progress(ctx: AioContext) -> None:
    results = blocked_poll_is_woken_by(ctx, ctx.notify, lambda: True)
    # The internal notifier's io_read ran: not progress.
    assert results == [False]
    # The wake-up was drained: the next blocking poll sleeps until its timer.
    fired: list[int] = []
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_MS + 20
    )
    ctx.poll(False)
    returns = 0
    for _ in range(20):
        ctx.poll(True)
        returns += 1
        if fired:
            break
    assert fired == [1]
    assert returns <= 2


def test_blocking_wait_with_nothing_due_has_no_timeout(ctx: AioContext, pair: Pair) -> None:
    # Nothing due: the backend is asked to wait without limit (-1); the other
    # thread's notify() ends it.  A guard timer would be a deadline, so the
    # fallback that bounds this test is fd readiness: if the poll has not
    # returned 2 s after the notify, the worker makes the fd readable.
    returned = threading.Event()
    fallback: list[int] = []

    def other() -> None:
        ctx.notify()
        if not returned.wait(2.0):
            fallback.append(1)
            pair.send_to_a()

    ctx.set_fd_handler(pair.a, lambda _o: pair.read_a())
    ctx.poll(False)
    spy = WaitSpy(ctx)
    try:
        worker = Worker(other)
        ctx.poll(True)
        returned.set()
        worker.join()
        assert fallback == [], "notify() did not wake the unbounded wait"
        assert worker.started.is_set()
        assert spy.timeouts == [-1]
    finally:
        spy.restore()


def test_bh_schedule_from_another_thread_wakes(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"), "op")
    results = blocked_poll_is_woken_by(ctx, bh.schedule, lambda: bool(rec.calls))
    assert results == [True]
    assert rec.calls == [("bh", "op")]


def test_oneshot_from_another_thread_wakes(ctx: AioContext) -> None:
    rec = Recorder()
    results = blocked_poll_is_woken_by(
        ctx, lambda: ctx.bh_schedule_oneshot(rec.cb("one"), 7), lambda: bool(rec.calls)
    )
    assert results == [True]
    assert rec.calls == [("one", 7)]


@pytest.mark.parametrize("how", ["mod", "mod_ns", "mod_anticipate"])
def test_timer_moved_earlier_from_another_thread_wakes(ctx: AioContext, how: str) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ms(Clock.REALTIME, rec.cb("timer"))
    # Armed far beyond the guard: only the move can make it run in time.
    timer.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + 60_000)

    def other() -> None:
        now_ms = clock_get_ns(Clock.REALTIME) // SCALE_MS
        if how == "mod":
            timer.mod(now_ms)
        elif how == "mod_ns":
            timer.mod_ns(now_ms * SCALE_MS)
        else:
            timer.mod_anticipate(now_ms)

    results = blocked_poll_is_woken_by(ctx, other, lambda: bool(rec.calls))
    assert results[-1] is True
    assert rec.names() == ["timer"]


def test_virtual_clock_step_from_another_thread_wakes(ctx: AioContext) -> None:
    clock_enable(Clock.VIRTUAL, True)
    rec = Recorder()
    # Due in 60 virtual seconds: the blocking wait would last 60 real
    # seconds (beyond the guard) unless the step wakes it.
    step = 60_000 * SCALE_MS
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("v")).mod_ns(clock_get_ns(Clock.VIRTUAL) + step)
    results = blocked_poll_is_woken_by(
        ctx, lambda: virtual_clock_step(step), lambda: bool(rec.calls)
    )
    assert results[-1] is True


def test_clock_enable_from_another_thread_wakes(ctx: AioContext) -> None:
    rec = Recorder()
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("v")).mod_ns(0)
    results = blocked_poll_is_woken_by(
        ctx, lambda: clock_enable(Clock.VIRTUAL, True), lambda: bool(rec.calls)
    )
    assert results[-1] is True


def test_cancel_and_delete_from_another_thread(ctx: AioContext) -> None:
    rec = Recorder()
    a = ctx.bh_new(rec.cb("a"))
    b = ctx.bh_new(rec.cb("b"))
    t = ctx.timer_new_ns(Clock.REALTIME, rec.cb("t"))
    a.schedule()
    b.schedule()
    t.mod_ns(0)

    def other() -> None:
        a.cancel()
        b.delete()
        t.delete()

    Worker(other, 0).join()
    assert ctx.poll(False) is False
    assert rec.calls == []
    with pytest.raises(RuntimeError):
        b.schedule()
    a.schedule()
    assert ctx.poll(False) is True
    assert rec.names() == ["a"]


# -- stress: no lost wake-ups ----------------------------------------------------------------


@pytest.mark.parametrize("waker", ["bh", "notify", "timer", "oneshot", "handler"])
def test_no_lost_wakeups(ctx: AioContext, waker: str, pair: Pair) -> None:
    rounds = 200
    guard = Guard(ctx, 8000)
    ctx.poll(False)
    woken: list[int] = []
    kicks = [0]
    bh = ctx.bh_new(lambda _o: woken.append(1))
    timer = ctx.timer_new_ns(Clock.REALTIME, lambda _o: woken.append(1))
    go = threading.Semaphore(0)
    stop = threading.Event()
    rng = random.Random(waker)
    spins = [rng.randrange(300) for _ in range(rounds)]

    # "handler": the worker registers a handler on an fd that is always
    # readable; the handler removes itself when it runs.
    pair.send_to_a()

    def on_read(_opaque: object) -> None:
        woken.append(1)
        ctx.set_fd_handler(pair.a, None)

    def wake() -> None:
        if waker == "handler":
            ctx.acquire()
            try:
                ctx.set_fd_handler(pair.a, on_read)
            finally:
                ctx.release()
        elif waker == "bh":
            bh.schedule()
        elif waker == "oneshot":
            ctx.bh_schedule_oneshot(lambda _o: woken.append(1))
        elif waker == "timer":
            timer.mod_ns(0)
        else:
            kicks[0] += 1
            ctx.notify()

    def worker() -> None:
        for i in range(rounds):
            while not go.acquire(timeout=0.1):
                if stop.is_set():
                    return
            for _ in range(spins[i]):
                pass
            wake()

    def progress() -> int:
        return kicks[0] if waker == "notify" else len(woken)

    w = Worker(worker, 0)
    try:
        for i in range(rounds):
            go.release()
            # Polls may return without progress while the worker is half-way
            # through its change (e.g. the fd is in the backend but not yet in
            # the handler table, and the worker waits for the GIL): bound the
            # loop by time as well as by count.
            deadline = time.monotonic() + 2.0
            for _ in range(100_000):
                if progress() > i or time.monotonic() > deadline:
                    break
                ctx.poll(True)
                assert not guard.fired, f"wake-up lost in round {i}"
            assert progress() > i, f"round {i} never completed"
    finally:
        stop.set()
        w.join()
    assert not guard.fired


def test_notify_reentered_during_its_own_kick_does_not_deadlock(ctx: AioContext) -> None:
    # A Python signal handler runs in the main thread between two bytecodes,
    # so it may call notify() (QEMU's termination handler does) while that
    # thread is inside notify()'s kick.  Stand-in for the signal: the
    # notifier's set() calls notify() once, re-entering the kick.  The poll
    # being woken is stood in for by the announcement it makes.
    event = ctx._event
    real_set = event.set
    depth: list[int] = []

    def set_reentering() -> None:
        if not depth:
            depth.append(1)
            ctx.notify()
        real_set()

    event.set = set_reentering  # type: ignore[method-assign]
    ctx._notify_me += 2
    t = threading.Thread(target=ctx.notify, daemon=True)  # daemon: a deadlock must not hang exit
    try:
        t.start()
        t.join(10)
        assert not t.is_alive(), "notify() deadlocked on its own kick lock"
    finally:
        ctx._notify_me -= 2
        del event.set
    assert ctx.poll(False) is False  # the kick is drained, no progress


def test_close_from_another_thread_is_refused_while_the_home_thread_runs(
    registry: PluginRegistry,
) -> None:
    # The home thread may be inside poll(), or about to enter it, and would
    # go on with a released backend: close() belongs to it.  Once it has
    # ended, anyone may close what it left (cleanup).
    made: list[AioContext] = []
    polling, stop = threading.Event(), threading.Event()

    def home() -> None:
        ctx = AioContext(registry=registry)
        made.append(ctx)
        polling.set()
        while not stop.is_set():
            ctx.poll(True)

    t = threading.Thread(target=home)
    t.start()
    try:
        assert polling.wait(5)
        ctx = made[0]
        with pytest.raises(RuntimeError, match=r"close\(\) from thread id .* home thread"):
            ctx.close()
        assert not ctx.closed
    finally:
        stop.set()
        made[0].notify()
        t.join(10)
    assert not t.is_alive()
    assert not ctx.closed
    ctx.close()  # its home thread has ended
    assert ctx.closed


def test_close_after_the_home_thread_ended_closes_its_sources(
    backend: str, registry: PluginRegistry
) -> None:
    """The sources' close() removes handlers, a home-thread operation.

    From another thread it raised, so close() failed half-way and the timer
    source's timerfds (plain fd numbers, nothing collects them) leaked.
    """
    from aiocore.testing import open_fds

    before = open_fds()
    made: list[AioContext] = []

    def home() -> None:
        ctx = AioContext(backend=backend, registry=registry)
        for _ in range(3):
            ctx.sources.timer.periodic(10**9, lambda _overrun: None, mechanism="timerfd")
        ctx.sources.notifier.new(lambda: None)
        ctx.poll(False)
        made.append(ctx)

    t = threading.Thread(target=home)
    t.start()
    t.join(10)
    assert not t.is_alive() and made
    ctx = made[0]
    assert open_fds() - before, "the context made no fds"
    ctx.close()
    assert ctx.closed
    assert open_fds() - before == set()
