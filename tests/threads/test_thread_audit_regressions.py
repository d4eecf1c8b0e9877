"""Regression tests for the defects a threads/coroutines audit found.

Each test fails without its fix; the docstrings say what went wrong.  All of
them are deterministic: interleavings are forced with events (with timeouts,
so a regression fails instead of hanging), never with sleeps.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any

import pytest

import aiocore
import aiocore._iothread as iothread_mod
from aiocore import (
    AioContext,
    CoMutex,
    Coroutine,
    IOThread,
    co_enter,
    co_schedule,
    co_wake,
    run_in_context,
    sleep_ns,
    wait_while,
    yield_,
)

from ._support import join_all


class Boom(Exception):
    pass


# -- 1. a coroutine scheduled into a context that closes -----------------------


def test_coroutine_scheduled_into_a_context_that_closes_can_be_scheduled_elsewhere(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """Its BH was dropped by close(), and it stayed "scheduled" for ever."""
    ran: list[str] = []

    async def body() -> str:
        ran.append("ran")
        return "ok"

    doomed = AioContext(registry=registry)
    co = Coroutine(body(), name="body")
    co_schedule(doomed, co)
    assert co.scheduled
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        doomed.close()
    assert not co.scheduled and ran == []
    assert "1 coroutine(s) were scheduled into a context that closed" in caplog.text
    assert "'body'" in caplog.text
    co_schedule(plain, co)  # raised "already scheduled" before the fix
    plain.poll(False)
    assert ran == ["ran"] and co.result() == "ok"


def test_suspended_coroutine_woken_into_a_context_that_closes_mid_pass(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, for a BH left in a pass interrupted by a re-raising handler."""
    steps: list[str] = []

    async def body() -> None:
        steps.append("start")
        await yield_()
        steps.append("woken")

    doomed = AioContext(registry=registry)

    def reraise(_ctx: AioContext, exc: BaseException) -> None:
        raise exc

    doomed.set_exception_handler(reraise)
    co = Coroutine(body())
    co_enter(doomed, co)
    assert steps == ["start"]

    def fail(_: object) -> None:
        raise Boom

    doomed.bh_schedule_oneshot(fail)
    co_schedule(doomed, co)  # queued behind the failing BH
    with pytest.raises(Boom):
        doomed.poll(False)  # the pass stops at fail(); co's BH is left in it
    assert co.scheduled
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        doomed.close()
    assert not co.scheduled and "1 coroutine(s)" in caplog.text
    co_schedule(plain, co)
    plain.poll(False)
    assert steps == ["start", "woken"] and co.done and co.ctx is plain


def test_coroutine_in_a_batch_waiting_behind_a_resumed_pass_is_released_by_close(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, for a BH in the batch a poll() took before finishing an
    interrupted pass, when the rest of that pass raised again."""
    ran: list[str] = []

    async def body() -> None:
        ran.append("ran")

    doomed = AioContext(registry=registry)

    def reraise(_ctx: AioContext, exc: BaseException) -> None:
        raise exc

    def fail(_: object) -> None:
        raise Boom

    doomed.set_exception_handler(reraise)
    doomed.bh_schedule_oneshot(fail)
    doomed.bh_schedule_oneshot(fail)
    with pytest.raises(Boom):
        doomed.poll(False)  # stops at the first fail(); the second is left
    co = Coroutine(body())
    co_schedule(doomed, co)  # taken as the next poll's own batch...
    with pytest.raises(Boom):
        doomed.poll(False)  # ...which waits while the old pass raises again
    assert co.scheduled and ran == []
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        doomed.close()
    assert not co.scheduled and "1 coroutine(s)" in caplog.text
    co_schedule(plain, co)
    plain.poll(False)
    assert ran == ["ran"]


# -- 2. CoMutex handed to a waiter whose context closed ------------------------


def test_comutex_unlock_skips_a_waiter_whose_context_closed(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """unlock() raised in the holder and left the mutex held by the dead waiter."""
    m = CoMutex()
    log: list[str] = []

    async def holder() -> None:
        await m.lock()
        await yield_()
        m.unlock()
        log.append("A unlocked")

    async def waiter(tag: str) -> None:
        await m.lock()
        log.append(f"{tag} locked")
        m.unlock()

    doomed = AioContext(registry=registry)
    a = Coroutine(holder())
    co_enter(plain, a)
    b = Coroutine(waiter("B"))
    co_enter(doomed, b)  # B waits, first in line, on a context that then closes
    c = Coroutine(waiter("C"))
    co_enter(plain, c)  # C waits behind B
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        doomed.close()  # names B, which leaves the queue (it used to stay in it)
        co_wake(a)
    assert a.done and a.exception() is None and _errors(plain) == []
    assert log == ["A unlocked", "C locked"]
    assert c.done and not m.locked
    assert "1 coroutine(s) were suspended in a context that closed" in caplog.text
    assert "skipped" not in caplog.text  # unlock() no longer even tries B
    # B, left out of the queue, can still be entered elsewhere and take it.
    co_schedule(plain, b)
    plain.poll(False)
    assert b.done and b.exception() is None and log[-1] == "B locked" and not m.locked


def test_comutex_unlock_with_only_a_dead_waiter_unlocks(
    registry: aiocore.PluginRegistry, plain: AioContext
) -> None:
    m = CoMutex()

    async def holder() -> None:
        await m.lock()
        await yield_()
        m.unlock()

    async def waiter() -> None:
        await m.lock()
        m.unlock()

    doomed = AioContext(registry=registry)
    a = Coroutine(holder())
    co_enter(plain, a)
    b = Coroutine(waiter())
    co_enter(doomed, b)
    doomed.close()
    co_wake(a)
    assert a.done and a.exception() is None and not m.locked


def _errors(ctx: AioContext) -> list[BaseException]:
    errors: list[BaseException] = ctx.errors  # type: ignore[attr-defined]
    return errors


# -- 3. IOThread.stop() racing start() -----------------------------------------


class _SignallingLock:
    """The IOThread's state lock, announcing when the "stopper" thread wants it."""

    def __init__(self, real: Any, stopper_waits: threading.Event) -> None:
        self.real = real
        self.stopper_waits = stopper_waits

    def __enter__(self) -> Any:
        if threading.current_thread().name == "stopper":
            self.stopper_waits.set()
        return self.real.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.real.__exit__(*exc)


def test_stop_while_start_is_publishing_the_thread(
    registry: aiocore.PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() set "starting" before publishing the thread: a stop() in between
    returned without stopping (or joined a thread nobody asked to stop).

    The thread's construction is held until stop() is at the state lock, so
    stop() always reads the state while start() is in that window.
    """
    stopper_waits = threading.Event()
    real_thread = threading.Thread

    class HeldThread(real_thread):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            assert stopper_waits.wait(10), "stop() never reached the state lock"
            super().__init__(*args, **kwargs)

    fake = types.SimpleNamespace(
        Thread=HeldThread,
        current_thread=threading.current_thread,
        Event=threading.Event,
        Lock=threading.Lock,
    )
    io = IOThread(name="racy", registry=registry)
    monkeypatch.setattr(iothread_mod, "threading", fake)
    io._state_lock = _SignallingLock(io._state_lock, stopper_waits)  # type: ignore[assignment]
    outcome: list[object] = []

    def start() -> None:
        try:
            io.start()
            outcome.append("started")
        except BaseException as exc:
            outcome.append(exc)

    def stop() -> None:
        try:
            io.stop(timeout=10)
            outcome.append("stopped")
        except BaseException as exc:
            outcome.append(exc)

    starter = real_thread(target=start, name="starter")
    starter.start()
    stopper = real_thread(target=stop, name="stopper")
    stopper.start()
    try:
        join_all([starter, stopper], 20)
        assert sorted(map(str, outcome)) == ["started", "stopped"]
        assert not io.is_alive() and io.ctx.closed and "stopped" in repr(io)
    finally:
        stopper_waits.set()
        io.stop(timeout=10)


# -- 4. a re-raising exception handler is called once --------------------------


def _reraising(ctx: AioContext) -> list[BaseException]:
    calls: list[BaseException] = []

    def handler(_ctx: AioContext, exc: BaseException) -> None:
        calls.append(exc)
        raise exc

    ctx.set_exception_handler(handler)
    return calls


def test_reraising_handler_called_once_for_a_scheduled_coroutine(plain: AioContext) -> None:
    """The driver called it, then the BH pass called it again with what it raised."""
    calls = _reraising(plain)

    async def body() -> None:
        raise Boom("coroutine")

    co_schedule(plain, Coroutine(body()))
    with pytest.raises(Boom, match="coroutine"):
        plain.poll(False)
    assert [str(e) for e in calls] == ["coroutine"]


def test_reraising_handler_called_once_for_a_coroutine_woken_by_its_sleep_timer(
    plain: AioContext,
) -> None:
    """Same through the sleep timer, whose run also reported what escaped."""
    calls = _reraising(plain)

    async def body() -> None:
        await sleep_ns(0)
        raise Boom("after sleep")

    co = Coroutine(body())
    co_enter(plain, co)
    with pytest.raises(Boom, match="after sleep"):
        for _ in range(1000):  # the timer is due at once; bounded anyway
            plain.poll(False)
    assert co.done and [str(e) for e in calls] == ["after sleep"]


# -- 5. infinite timeouts --------------------------------------------------------


@pytest.mark.parametrize("forever", [float("inf"), 1e300])
def test_an_infinite_timeout_waits_forever(
    plain: AioContext, registry: aiocore.PluginRegistry, forever: float
) -> None:
    """inf/1e300 passed the checks, then OverflowError (in stop(): after the state changed)."""
    flag = [True]

    def clear(_: object) -> None:
        flag.clear()

    plain.bh_schedule_oneshot(clear)
    wait_while(plain, lambda: flag, timeout=forever)
    io = IOThread(registry=registry).start()
    try:
        assert run_in_context(io.ctx, lambda: 7, timeout=forever) == 7
        io.stop(timeout=forever)
        assert not io.is_alive() and io.ctx.closed
    finally:
        io.stop(timeout=10)


# -- 6. one coroutine object, two wrappers ---------------------------------------


def test_a_coroutine_object_can_be_wrapped_once() -> None:
    """Two wrappers each had their own "scheduled" mark: the object ran twice."""

    async def body() -> None:
        await yield_()

    coro = body()
    Coroutine(coro)
    with pytest.raises(ValueError, match="coro is already wrapped by another Coroutine"):
        Coroutine(coro)
    coro.close()


# -- 7. IOThread arguments and lifecycle -------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "backend must name at least one backend"),
        ((), "backend must name at least one backend"),
        ("", "backend must name at least one backend"),
        (["poll", ""], r"backend has an empty name \(item 2\)"),
    ],
)
def test_iothread_refuses_an_empty_backend_in_the_constructor(
    registry: aiocore.PluginRegistry, bad: object, message: str
) -> None:
    """Only start() refused these, from inside the new thread."""
    with pytest.raises(ValueError, match=message):
        IOThread(backend=bad, registry=registry)  # type: ignore[arg-type]
    # The same check (and message) as AioContext's.
    with pytest.raises(ValueError, match=message):
        AioContext(backend=bad, registry=registry)  # type: ignore[arg-type]


def test_entering_a_stopped_iothread_raises(registry: aiocore.PluginRegistry) -> None:
    """``with io:`` on a stopped IOThread ran its body against a closed context."""
    io = IOThread(registry=registry).start()
    io.stop(timeout=10)
    with pytest.raises(RuntimeError, match="stopped: an IOThread cannot be entered again"):
        io.__enter__()
    retired = IOThread(registry=registry)
    retired.stop()  # before start(): it can never start now
    with pytest.raises(RuntimeError, match="stopped: an IOThread cannot be entered again"):
        retired.__enter__()
    with pytest.raises(RuntimeError, match="it was stopped, and cannot start"):
        retired.ctx  # noqa: B018  (said "call start() first", which raises)
    with pytest.raises(RuntimeError, match="can only be started once"):
        retired.start()
    with IOThread(registry=registry) as fresh:  # a new one still works
        assert run_in_context(fresh.ctx, lambda: 1, timeout=5) == 1
    started = IOThread(registry=registry).start()
    with started:  # an already started one is used as it is
        assert started.is_alive()
    assert not started.is_alive()


# -- 8. the coroutine example of docs/threads.rst runs ---------------------------


def _doc_example(heading: str) -> str:
    """The first ``.. code-block:: python`` after *heading* in docs/threads.rst."""
    lines = (Path(__file__).parents[2] / "docs" / "threads.rst").read_text().splitlines()
    start = lines.index(heading)
    at = lines.index(".. code-block:: python", start) + 1
    block: list[str] = []
    for line in lines[at:]:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_the_coroutine_example_in_the_threads_page_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used co_reschedule_self, other_ctx and io without defining them."""
    code = _doc_example("Coroutines on a context")
    assert "co_reschedule_self(other.ctx)" in code
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(code, "docs/threads.rst", "exec"), {"__name__": "__doc_example__"})
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, name="doc-example", daemon=True)
    runner.start()
    join_all([runner], 30)
    assert errors == []
    assert capsys.readouterr().out == "done\n"


def test_a_schedule_racing_the_pass_that_takes_the_bh_is_not_lost(
    registry: aiocore.PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel() and schedule() from another thread between the pass's check
    of a BH and its unmarking: the BH sat in the live queue unmarked, and
    the next pass skipped it.

    The other thread is started at exactly that point (a property on the
    BH's slot) and given 0.2 s to run in between.
    """
    import aiocore._bh as bh_mod

    slot = bh_mod.BH._where
    armed = [True]

    class ProbeBH(bh_mod.BH):
        __slots__ = ()

        @property  # type: ignore[override]
        def _where(self) -> Any:
            where = slot.__get__(self)
            caller = sys._getframe(1)
            in_pass = caller.f_code.co_name == "run" and where is caller.f_locals.get("batch")
            if armed[0] and in_pass:
                armed[0] = False
                racer = threading.Thread(target=lambda: (self.cancel(), self.schedule()))
                racer.start()
                racer.join(0.2)
                racers.append(racer)
            return where

        @_where.setter
        def _where(self, value: Any) -> None:
            slot.__set__(self, value)

    racers: list[threading.Thread] = []
    monkeypatch.setattr(bh_mod, "BH", ProbeBH)
    runs: list[int] = []
    with AioContext(backend="poll", registry=registry) as ctx:
        bh = ctx.bh_new(lambda _o: runs.append(1))
        bh.schedule()
        ctx.poll(False)  # runs it (the cancel raced the pass: allowed)
        join_all(racers, 5)
        assert runs == [1]
        for _ in range(3):
            ctx.poll(False)
        assert runs == [1, 1], "the second schedule() never ran"
        assert not bh.scheduled


def test_run_in_context_from_a_callback_polls_the_callers_context(
    registry: aiocore.PluginRegistry,
) -> None:
    """A asks B, whose function asks A: A's thread was blocked on an Event
    inside its own callback, so A's loop never ran the call back: both
    waited until the timeout (for ever without one)."""
    a = IOThread(name="A", registry=registry).start()
    b = IOThread(name="B", registry=registry).start()
    try:

        def where() -> str:
            return threading.current_thread().name

        def in_b() -> str:
            return aiocore.run_in_context(a.ctx, where, timeout=10)

        def in_a() -> tuple[str, str]:
            return where(), aiocore.run_in_context(b.ctx, in_b, timeout=10)

        assert aiocore.run_in_context(a.ctx, in_a, timeout=20) == ("A", "A")
    finally:
        a.stop()
        b.stop()


def test_run_in_context_polls_every_context_the_caller_is_inside(
    registry: aiocore.PluginRegistry,
) -> None:
    """Two contexts of this thread polling (one nested in a callback of the
    other): the call back into the outer one is served too."""
    b = IOThread(name="B", registry=registry).start()
    outer = AioContext(backend="poll", registry=registry)
    inner = AioContext(backend="poll", registry=registry)
    results: list[str] = []
    try:

        def in_b() -> str:
            return aiocore.run_in_context(outer, lambda: "outer served", timeout=10)

        def inner_cb(_o: object) -> None:
            results.append(aiocore.run_in_context(b.ctx, in_b, timeout=10))

        def outer_cb(_o: object) -> None:
            inner.bh_schedule_oneshot(inner_cb)
            inner.poll(False)

        outer.bh_schedule_oneshot(outer_cb)
        outer.poll(False)
        assert results == ["outer served"]
    finally:
        b.stop()
        inner.close()
        outer.close()


def test_the_signals_example_in_the_threads_page_wakes_the_main_thread() -> None:
    """A SIGINT raised in another thread reaches a main thread in poll(True).

    Run in a child process: it takes the process's wake-up fd and SIGINT.
    Without the wake-up fd the main thread would sleep on (the child is
    killed by the timeout and the test fails).
    """
    import subprocess

    code = _doc_example("Signals")
    assert "signal.set_wakeup_fd" in code
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout == "interrupted\n"


def test_a_coroutine_sleeping_in_a_context_that_closes_is_reported(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Its sleep timer was dropped silently: the coroutine (and whatever it
    held) stayed suspended for ever with no word.  It is reported now."""

    async def sleeper() -> None:
        await aiocore.sleep_ns(10**12)  # never, in this test

    doomed = AioContext(registry=registry)
    co = Coroutine(sleeper(), name="sleeper")
    co_enter(doomed, co)
    assert not co.done
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        doomed.close()
    assert "1 coroutine(s) were sleeping in a context that closed" in caplog.text
    assert "'sleeper'" in caplog.text
