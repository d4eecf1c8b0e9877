"""Coroutines on a context: enter, schedule, wake, yield, sleep, move, CoMutex, wait_while."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import aiocore
from aiocore import (
    AioContext,
    Clock,
    CoMutex,
    Coroutine,
    IOThread,
    co_enter,
    co_reschedule_self,
    co_schedule,
    co_wake,
    current_coroutine,
    in_coroutine,
    run_in_context,
    sleep_ns,
    wait_while,
    yield_,
)

from ._support import Watchdog, join_all

Make = Callable[..., IOThread]


def _errors(ctx: AioContext) -> list[BaseException]:
    errors: list[BaseException] = ctx.errors  # type: ignore[attr-defined]
    return errors


def _frames() -> int:
    f = sys._getframe()
    n = 0
    while f is not None:
        n += 1
        f = f.f_back  # type: ignore[assignment]
    return n


# -- entering, yielding, waking ------------------------------------------------


def test_enter_runs_until_the_first_yield_then_wake_resumes(plain: AioContext) -> None:
    steps: list[str] = []

    async def body() -> str:
        steps.append("start")
        assert in_coroutine()
        assert current_coroutine() is co
        await yield_()
        steps.append("woken")
        return "result"

    co = Coroutine(body())
    assert co.name.endswith("body") and co.ctx is None and not co.done
    assert not in_coroutine() and current_coroutine() is None
    co_enter(plain, co)
    assert steps == ["start"] and co.ctx is plain and not co.done
    co_wake(co)  # home thread, outside a coroutine: runs now
    assert steps == ["start", "woken"]
    assert co.done and co.result() == "result" and co.exception() is None


def test_wake_from_inside_a_coroutine_is_queued_not_nested(plain: AioContext) -> None:
    order: list[str] = []

    async def sleeper() -> None:
        await yield_()
        order.append("sleeper")

    async def waker() -> None:
        co_wake(s)
        order.append("waker continues first")
        await yield_()

    s = Coroutine(sleeper())
    co_enter(plain, s)
    w = Coroutine(waker())
    co_enter(plain, w)
    assert order == ["waker continues first", "sleeper"]
    assert s.done and not w.done


def test_chain_of_25000_hand_offs_keeps_the_stack_flat(plain: AioContext) -> None:
    """QEMU's queue-chaining test: each wake from inside a coroutine is queued."""
    n = 25_000
    depths: list[int] = []
    a: Coroutine
    b: Coroutine

    async def ping() -> int:
        for _ in range(n):
            depths.append(_frames())
            co_wake(b)
            await yield_()
        return n

    async def pong() -> int:
        await yield_()
        for i in range(n):
            depths.append(_frames())
            co_wake(a)
            if i < n - 1:
                await yield_()
        return n

    a = Coroutine(ping(), name="ping")
    b = Coroutine(pong(), name="pong")
    co_enter(plain, b)
    old = sys.getrecursionlimit()
    # Far too little for 25,000 nested frames: a recursive driver would raise
    # RecursionError (and the test fail through a.exception()).
    sys.setrecursionlimit(_frames() + 60)
    try:
        co_enter(plain, a)
    finally:
        sys.setrecursionlimit(old)
    assert a.done and a.exception() is None and a.result() == n
    assert b.done and b.result() == n
    assert len(depths) == 2 * n
    assert max(depths) - min(depths) <= 1, (min(depths), max(depths))
    assert not _errors(plain)


def test_scheduling_twice_before_it_runs_is_an_error(plain: AioContext) -> None:
    ran: list[int] = []

    async def body() -> None:
        ran.append(1)

    co = Coroutine(body(), name="twice")
    co_schedule(plain, co)
    assert co.scheduled
    with pytest.raises(RuntimeError, match=r"'twice'.*already scheduled \(co_schedule into"):
        co_schedule(plain, co)
    with pytest.raises(RuntimeError, match=r"'twice'.*already scheduled"):
        co_enter(plain, co)
    plain.poll(False)
    assert ran == [1] and co.done and not co.scheduled  # ran once
    with pytest.raises(RuntimeError, match=r"'twice'.*has finished"):
        co_schedule(plain, co)


def test_waking_twice_from_inside_a_coroutine_is_an_error(plain: AioContext) -> None:
    async def sleeper() -> None:
        await yield_()

    async def waker() -> None:
        co_wake(s)
        co_wake(s)

    s = Coroutine(sleeper(), name="sleeper")
    co_enter(plain, s)
    w = Coroutine(waker(), name="waker")
    co_enter(plain, w)
    exc = w.exception()
    assert isinstance(exc, RuntimeError)
    assert "'sleeper'" in str(exc) and "queued by <Coroutine 'waker'" in str(exc)
    assert s.done  # the first wake was not lost
    assert _errors(plain) == [exc]  # reported through the exception handler


def test_co_schedule_from_another_thread_wakes_a_blocked_loop(ctx: AioContext) -> None:
    ran: list[str] = []

    async def body() -> None:
        ran.append(threading.current_thread().name)

    co = Coroutine(body())
    ctx.poll(False)

    def later() -> None:
        time.sleep(0.02)
        co_schedule(ctx, co)

    t = threading.Thread(target=later, name="x")
    t.start()
    with Watchdog(ctx, 5) as dog:
        for _ in range(100):
            if ran:
                break
            ctx.poll(True)
    join_all([t], 5)
    assert not dog.fired
    assert ran == [threading.current_thread().name]


def test_co_wake_from_another_thread(iothreads: Make, backend: str) -> None:
    io = iothreads(backend=backend)
    where: list[threading.Thread] = []
    done = threading.Event()

    async def body() -> None:
        await yield_()
        where.append(threading.current_thread())
        done.set()

    co = Coroutine(body())
    run_in_context(io.ctx, co_enter, io.ctx, co, timeout=5)
    assert co.ctx is io.ctx
    co_wake(co)  # from the main thread: scheduled into its context
    assert done.wait(5)
    assert where == [io.thread]


def test_coroutines_move_between_iothreads(iothreads: Make) -> None:
    ios = [iothreads(name=f"mv{i}") for i in range(3)]
    path: list[str] = []
    finished = threading.Event()

    async def traveller() -> None:
        for io in [*ios, ios[0]]:
            await co_reschedule_self(io.ctx)
            path.append(threading.current_thread().name)
            assert current_coroutine() is co and co.ctx is io.ctx
        finished.set()

    co = Coroutine(traveller())
    co_schedule(ios[2].ctx, co)
    assert finished.wait(5)
    assert path == ["mv0", "mv1", "mv2", "mv0"]
    assert co.done and co.exception() is None


def test_scheduling_a_running_coroutine_waits_until_it_suspends(iothreads: Make) -> None:
    """Publish-then-yield: another thread may schedule it before it has suspended."""
    a, b = iothreads(), iothreads()
    published = threading.Event()
    go_on = threading.Event()
    trace: list[str] = []

    async def body() -> None:
        published.set()
        go_on.wait(5)  # still running, in a's thread, while b schedules us
        trace.append("suspending")
        await yield_()
        trace.append(f"resumed in {threading.current_thread().name}")

    co = Coroutine(body())
    co_schedule(a.ctx, co)
    assert published.wait(5)
    co_schedule(b.ctx, co)  # co is running: deferred until it suspends
    assert co.scheduled
    with pytest.raises(RuntimeError, match="already scheduled"):
        co_schedule(b.ctx, co)
    go_on.set()
    run_in_context(b.ctx, lambda: None, timeout=5)
    deadline = time.monotonic() + 5
    while not co.done and time.monotonic() < deadline:
        time.sleep(0.001)
    assert trace == ["suspending", f"resumed in {b.name}"]


# -- sleeping ------------------------------------------------------------------


def test_sleep_ns(plain: AioContext) -> None:
    async def body() -> int:
        t0 = time.monotonic_ns()
        await sleep_ns(20_000_000)
        return time.monotonic_ns() - t0

    co = Coroutine(body())
    co_enter(plain, co)
    wait_while(plain, lambda: not co.done, timeout=5)
    assert co.result() >= 20_000_000
    assert not plain._timers.armed


def test_sleep_woken_early_cancels_its_timer(plain: AioContext) -> None:
    log: list[str] = []

    async def body() -> None:
        await sleep_ns(30_000_000)
        log.append("woken")
        await yield_()  # the old sleep's timer must not wake this wait
        log.append("woken again")

    co = Coroutine(body())
    co_enter(plain, co)
    co_wake(co)
    assert log == ["woken"]
    assert not plain._timers.armed
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        plain.poll(False)
    assert log == ["woken"] and not co.done


def test_sleep_on_the_virtual_clock(plain: AioContext) -> None:
    aiocore.clock_enable(Clock.VIRTUAL, True)

    async def body() -> None:
        await sleep_ns(1_000, Clock.VIRTUAL)

    co = Coroutine(body())
    co_enter(plain, co)
    plain.poll(False)
    assert not co.done
    aiocore.virtual_clock_step(1_000)
    plain.poll(False)
    assert co.done


# -- errors ------------------------------------------------------------------------


def test_exception_goes_to_the_handler_and_result(plain: AioContext) -> None:
    async def body() -> None:
        await yield_()
        raise ValueError("boom")

    co = Coroutine(body())
    co_enter(plain, co)
    with pytest.raises(RuntimeError, match="has not finished"):
        co.result()
    co_wake(co)
    assert co.done
    with pytest.raises(ValueError, match="boom"):
        co.result()
    assert isinstance(co.exception(), ValueError)
    assert _errors(plain) == [co.exception()]


def test_foreign_awaitable_is_refused_at_the_await(plain: AioContext) -> None:
    caught: list[BaseException] = []

    async def body() -> str:
        try:
            await asyncio.sleep(0)
        except TypeError as exc:
            caught.append(exc)
        await yield_()
        return "went on"

    co = Coroutine(body())
    co_enter(plain, co)
    assert len(caught) == 1 and "aiocore cannot drive" in str(caught[0])
    co_wake(co)
    assert co.result() == "went on"


def test_base_exception_propagates_and_queued_coroutines_are_not_lost(
    plain: AioContext,
) -> None:
    ran: list[str] = []

    async def other() -> None:
        await yield_()
        ran.append("other")

    async def interrupter() -> None:
        co_wake(o)  # queued behind us
        raise KeyboardInterrupt

    o = Coroutine(other())
    co_enter(plain, o)
    with pytest.raises(KeyboardInterrupt):
        co_enter(plain, Coroutine(interrupter()))
    assert ran == []
    plain.poll(False)  # handed to a BH, not lost
    assert ran == ["other"]


def test_finishing_while_scheduled_is_reported(iothreads: Make, plain: AioContext) -> None:
    io = iothreads()
    started = threading.Event()
    go_on = threading.Event()

    async def body() -> None:
        started.set()
        go_on.wait(5)

    co = Coroutine(body(), name="short")
    errors: list[BaseException] = []
    run_in_context(io.ctx, io.ctx.set_exception_handler, lambda _c, e: errors.append(e), timeout=5)
    co_schedule(io.ctx, co)
    assert started.wait(5)
    co_schedule(plain, co)  # deferred: but it finishes instead of suspending
    go_on.set()
    run_in_context(io.ctx, lambda: None, timeout=5)
    assert co.done and not co.scheduled
    assert len(errors) == 1 and "finished while scheduled" in str(errors[0])


def test_awaitables_outside_an_aiocore_coroutine(plain: AioContext) -> None:
    async def under_asyncio() -> None:
        await yield_()

    with pytest.raises(RuntimeError, match=r"yield_\(\) must be awaited inside a coroutine"):
        asyncio.run(under_asyncio())
    mutex = CoMutex()
    with pytest.raises(RuntimeError, match="not locked"):
        mutex.unlock()


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda ctx: Coroutine(42), TypeError, "coro must be a coroutine object"),  # type: ignore[arg-type]
        (lambda ctx: Coroutine(_started()), ValueError, "already been started"),
        (lambda ctx: Coroutine(_fresh(), name=3), TypeError, "name must be a str"),  # type: ignore[arg-type]
        (lambda ctx: co_enter("ctx", _co()), TypeError, "ctx must be an AioContext"),  # type: ignore[arg-type]
        (lambda ctx: co_enter(ctx, _fresh()), TypeError, "co must be an aiocore.Coroutine"),
        (lambda ctx: co_schedule(ctx, None), TypeError, "co must be an aiocore.Coroutine"),  # type: ignore[arg-type]
        (lambda ctx: co_wake("co"), TypeError, "co must be an aiocore.Coroutine"),  # type: ignore[arg-type]
        (lambda ctx: co_wake(_co()), RuntimeError, "was never entered"),
        (lambda ctx: sleep_ns(-1), ValueError, "ns must be >= 0"),
        (lambda ctx: sleep_ns(1.5), TypeError, "ns must be an int"),  # type: ignore[arg-type]
        (lambda ctx: sleep_ns(1, "wall"), (TypeError, ValueError), "clock"),  # type: ignore[arg-type]
        (lambda ctx: co_reschedule_self(None), TypeError, "ctx must be an AioContext"),  # type: ignore[arg-type]
        (lambda ctx: wait_while(ctx, 3), TypeError, "cond must be a callable"),  # type: ignore[arg-type]
        (lambda ctx: wait_while(ctx, bool, timeout=-1), ValueError, "or a number >= 0"),
    ],
)
@pytest.mark.filterwarnings("ignore:coroutine '_noop_body' was never awaited")
def test_bad_arguments(
    plain: AioContext, call: Callable[[AioContext], object], exc: Any, match: str
) -> None:
    with pytest.raises(exc, match=match):
        call(plain)
    assert not plain._bhs.pending


async def _noop_body() -> None:
    await yield_()


def _fresh() -> Any:
    return _noop_body()


def _co() -> Coroutine:
    return Coroutine(_fresh())


class _Bare:
    def __await__(self) -> Any:
        yield None


async def _bare_body() -> None:
    await _Bare()


def _started() -> Any:
    coro = _bare_body()
    coro.send(None)
    return coro


def test_schedule_into_a_closed_context_changes_nothing(
    registry: aiocore.PluginRegistry, plain: AioContext
) -> None:
    closed = AioContext(registry=registry)
    closed.close()
    co = _co()
    with pytest.raises(RuntimeError, match="closed"):
        co_schedule(closed, co)
    assert not co.scheduled and co.ctx is None
    co_enter(plain, co)  # still usable
    co_wake(co)
    assert co.done


# -- wait_while (AIO_WAIT_WHILE) ----------------------------------------------


def test_wait_while_returns_when_another_thread_changes_the_condition(ctx: AioContext) -> None:
    state = {"busy": True}

    def finish() -> None:
        time.sleep(0.02)
        state["busy"] = False  # publish ...
        ctx.notify()  # ... then wake (SPEC 6)

    t = threading.Thread(target=finish)
    t.start()
    with Watchdog(ctx, 5) as dog:
        wait_while(ctx, lambda: state["busy"])
    join_all([t], 5)
    assert not dog.fired


def test_wait_while_timeout(plain: AioContext) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"still true after 0\.05 s"):
        wait_while(plain, lambda: True, timeout=0.05)
    assert 0.05 <= time.monotonic() - t0 < 2
    assert not plain._timers.armed  # its timer is gone


def test_wait_while_from_the_wrong_place(iothreads: Make, plain: AioContext) -> None:
    io = iothreads()
    with pytest.raises(RuntimeError, match="home thread"):
        wait_while(io.ctx, lambda: False)

    async def body() -> None:
        wait_while(plain, lambda: True)

    co = Coroutine(body())
    co_enter(plain, co)
    with pytest.raises(RuntimeError, match="inside a coroutine"):
        co.result()


# -- CoMutex -------------------------------------------------------------------


def test_comutex_is_fifo_and_hands_over(plain: AioContext) -> None:
    mutex = CoMutex()
    order: list[str] = []

    async def user(tag: str) -> None:
        async with mutex:
            order.append(f"{tag} in")
            await yield_()
            order.append(f"{tag} out")

    cos = [Coroutine(user(t), name=t) for t in "abc"]
    for co in cos:
        co_enter(plain, co)
    assert order == ["a in"] and mutex.locked
    co_wake(cos[0])
    assert order == ["a in", "a out", "b in"]
    co_wake(cos[1])
    co_wake(cos[2])
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert not mutex.locked and all(co.done for co in cos)


def test_comutex_misuse(plain: AioContext) -> None:
    mutex = CoMutex()

    async def twice() -> None:
        await mutex.lock()
        await mutex.lock()

    co = Coroutine(twice())
    co_enter(plain, co)
    with pytest.raises(RuntimeError, match="not recursive"):
        co.result()

    async def thief() -> None:
        mutex.unlock()

    t = Coroutine(thief())
    co_enter(plain, t)
    with pytest.raises(RuntimeError, match=r"held by <Coroutine '.*twice'"):
        t.result()
    assert "held by" in repr(mutex)


def test_comutex_spurious_wake_keeps_waiting(plain: AioContext) -> None:
    mutex = CoMutex()
    got: list[str] = []

    async def holder() -> None:
        await mutex.lock()
        await yield_()
        mutex.unlock()

    async def waiter() -> None:
        async with mutex:
            got.append("waiter")

    h, w = Coroutine(holder()), Coroutine(waiter())
    co_enter(plain, h)
    co_enter(plain, w)
    co_wake(w)  # spurious: it is not the holder yet
    assert got == [] and not w.done
    co_wake(h)
    assert got == ["waiter"] and not mutex.locked


def test_comutex_waiter_closed_while_waiting_leaves_the_queue(plain: AioContext) -> None:
    mutex = CoMutex()

    async def holder() -> None:
        await mutex.lock()
        await yield_()
        mutex.unlock()

    async def waiter() -> None:
        await mutex.lock()

    h = Coroutine(holder())
    co_enter(plain, h)
    coro = waiter()
    w = Coroutine(coro)
    co_enter(plain, w)
    coro.close()  # GeneratorExit at its await
    co_wake(h)
    assert h.done and not mutex.locked
