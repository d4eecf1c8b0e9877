"""Coroutines left suspended in a context that closes: named, once; CoMutex queues kept live.

Before, ``close()`` named only the coroutines it dropped a BH or a sleep timer
of.  One suspended in ``yield_()`` or in ``CoMutex.lock()`` was stranded with
no word; a CoMutex waiter stayed in the mutex's queue; and a waiter whose
hand-over BH the closing dropped kept the mutex for ever (the next waiter,
in a live context, never got it).  A sleeping coroutine that was also
scheduled was named twice.  A coroutine that closed its own context, then
suspended there, was stranded with no word (``close()`` saw it running).
Each test here fails without the fix, except
those marked as guards (of the bookkeeping's references and of what must
*not* be reported).  No test waits on a clock; the one with a thread uses
``run_in_context`` and ``IOThread.stop()``, both bounded.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable

import pytest

import aiocore
import aiocore._coroutine as coroutine_mod
from aiocore import (
    AioContext,
    CoMutex,
    Coroutine,
    IOThread,
    co_enter,
    co_reschedule_self,
    co_schedule,
    co_wake,
    run_in_context,
    sleep_ns,
    yield_,
)

Make = Callable[..., IOThread]

STRANDED = "coroutine(s) were suspended in a context that closed"
SLEEPING = "coroutine(s) were sleeping in a context that closed"
SCHEDULED = "coroutine(s) were scheduled into a context that closed"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiocore"]


def _mentions(caplog: pytest.LogCaptureFixture, name: str) -> int:
    """How many of the aiocore warnings name the coroutine called *name*."""
    return sum(f"<Coroutine {name!r}" in msg for msg in _warnings(caplog))


def _close(ctx: AioContext, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        ctx.close()


async def _wait_forever() -> None:
    await yield_()  # nobody wakes it in these tests


async def _hold_once(m: CoMutex) -> None:
    """The mutex's holder in these tests: lock, yield once, unlock."""
    await m.lock()
    await yield_()
    m.unlock()


async def _take_turn(m: CoMutex, order: list[str], tag: str) -> None:
    """A waiter: lock, note its turn in *order*, unlock."""
    await m.lock()
    order.append(tag)
    m.unlock()


# -- named, whatever it waits on ------------------------------------------------


def test_a_coroutine_suspended_in_yield_is_named_when_its_context_closes(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = AioContext(registry=registry)
    co = Coroutine(_wait_forever(), name="parked")
    co_enter(doomed, co)
    assert not co.done
    _close(doomed, caplog)
    assert f"1 {STRANDED}" in caplog.text
    assert _mentions(caplog, "parked") == 1


def test_a_comutex_waiter_is_named_and_leaves_the_queue(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder runs in another context; the waiter's home is the closing one."""
    m = CoMutex()
    got: list[str] = []

    async def waiter() -> None:
        async with m:
            got.append("waiter")

    doomed = AioContext(registry=registry)
    h = Coroutine(_hold_once(m), name="holder")
    co_enter(plain, h)
    w = Coroutine(waiter(), name="waiter")
    co_enter(doomed, w)
    assert "1 waiting" in repr(m)
    _close(doomed, caplog)
    assert f"1 {STRANDED}" in caplog.text and _mentions(caplog, "waiter") == 1
    assert _mentions(caplog, "holder") == 0  # it lives in plain, which is open
    assert "0 waiting" in repr(m)  # it stayed queued before the fix
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        co_wake(h)
    assert h.done and h.exception() is None and not m.locked
    assert "skipped" not in caplog.text  # unlock() does not even try the dead waiter
    # Entered elsewhere, the waiter queues again and takes the mutex.
    co_schedule(plain, w)
    plain.poll(False)
    assert w.done and w.exception() is None and got == ["waiter"] and not m.locked


def test_a_comutex_holder_in_the_closing_context_is_named_its_waiter_elsewhere_is_not(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A coroutine belongs to the context it was last entered in, not to the
    mutex's holder's: the waiter in ``plain`` stays queued (and the mutex
    stays held by the stranded holder, which the warning says)."""
    m = CoMutex()

    async def holder() -> None:
        await m.lock()
        await yield_()

    async def waiter() -> None:
        await m.lock()

    doomed = AioContext(registry=registry)
    h = Coroutine(holder(), name="holder")
    co_enter(doomed, h)
    w = Coroutine(waiter(), name="waiter")
    co_enter(plain, w)
    _close(doomed, caplog)
    assert _mentions(caplog, "holder") == 1 and _mentions(caplog, "waiter") == 0
    assert "1 waiting" in repr(m) and m.locked


def test_a_coroutine_that_moved_is_named_by_the_context_it_lives_in(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    first = AioContext(registry=registry)
    second = AioContext(registry=registry)

    async def traveller() -> None:
        await co_reschedule_self(second)
        await yield_()

    co = Coroutine(traveller(), name="traveller")
    co_enter(first, co)
    second.poll(False)
    assert co.ctx is second and not co.done
    _close(first, caplog)
    assert _mentions(caplog, "traveller") == 0
    _close(second, caplog)
    assert _mentions(caplog, "traveller") == 1 and f"1 {STRANDED}" in caplog.text


def test_a_waiter_in_an_iothread_that_stops_hands_the_queue_to_a_live_waiter(
    iothreads: Make, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The realistic shape: the waiter's IOThread stops (closing its context)
    while a coroutine of the main context holds the mutex."""
    m = CoMutex()
    order: list[str] = []

    io = iothreads()
    h = Coroutine(_hold_once(m), name="holder")
    co_enter(plain, h)
    w = Coroutine(_take_turn(m, order, "io"), name="io-waiter")
    run_in_context(io.ctx, co_enter, io.ctx, w, timeout=10)  # waits, first in line
    c = Coroutine(_take_turn(m, order, "main"), name="main-waiter")
    co_enter(plain, c)  # waits behind it
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        io.stop(timeout=10)
        co_wake(h)
    assert _mentions(caplog, "io-waiter") == 1 and STRANDED in caplog.text
    assert "skipped" not in caplog.text
    assert h.done and c.done and order == ["main"] and not m.locked


# -- a coroutine that closes its own context --------------------------------------
#
# close() sees it running, not suspended; the driver names it when it then
# suspends there (and only then: one that leaves for another context is not).


def test_a_coroutine_that_closes_its_own_context_then_yields_is_named(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = AioContext(registry=registry)

    async def body() -> None:
        doomed.close()
        await yield_()

    co = Coroutine(body(), name="self-closer")
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        co_enter(doomed, co)
    assert not co.done
    assert f"1 {STRANDED}" in caplog.text  # it was stranded with no word before
    assert _mentions(caplog, "self-closer") == 1


def test_a_coroutine_that_closes_its_own_context_then_waits_for_a_mutex_leaves_the_queue(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    m = CoMutex()
    h = Coroutine(_hold_once(m), name="holder")
    co_enter(plain, h)
    doomed = AioContext(registry=registry)

    async def body() -> None:
        doomed.close()
        await m.lock()

    w = Coroutine(body(), name="self-closing waiter")
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        co_enter(doomed, w)
        assert _mentions(caplog, "self-closing waiter") == 1
        assert "0 waiting" in repr(m)
        co_wake(h)
    assert h.done and h.exception() is None and not m.locked  # not handed to w
    assert not w.done


def test_a_coroutine_that_closes_its_own_context_then_leaves_it_is_not_named(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A guard: scheduled into a live context, it is not stranded, and runs there."""
    doomed = AioContext(registry=registry)
    where: list[AioContext | None] = []

    async def body() -> None:
        doomed.close()
        await co_reschedule_self(plain)
        where.append(co.ctx)

    co = Coroutine(body(), name="leaver")
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        co_enter(doomed, co)
        plain.poll(False)
    assert co.done and co.exception() is None and where == [plain]
    assert _mentions(caplog, "leaver") == 0


# -- the mutex is never left to a coroutine that will not run -------------------


@pytest.mark.parametrize("next_waiter", [True, False], ids=["next-waiter", "no-waiter"])
def test_a_comutex_handed_to_a_waiter_whose_context_closes_is_passed_on(
    registry: aiocore.PluginRegistry,
    plain: AioContext,
    caplog: pytest.LogCaptureFixture,
    next_waiter: bool,
) -> None:
    """unlock() made the waiter the holder and queued its BH; close() dropped
    the BH: the mutex stayed held by a coroutine that never runs, and the
    waiter behind it (in a live context) waited for ever."""
    m = CoMutex()
    order: list[str] = []

    doomed = AioContext(registry=registry)
    a = Coroutine(_hold_once(m), name="holder")
    co_enter(plain, a)
    b = Coroutine(_take_turn(m, order, "b"), name="b")
    co_enter(doomed, b)
    if next_waiter:
        c = Coroutine(_take_turn(m, order, "c"), name="c")
        co_enter(plain, c)
    co_wake(a)  # hands m to b: b is the holder, its BH is queued in doomed
    assert b.scheduled and "held by <Coroutine 'b'" in repr(m)
    _close(doomed, caplog)
    assert _mentions(caplog, "b") == 1 and SCHEDULED in caplog.text
    if next_waiter:
        # Handed to c through a BH: nothing of c's ran inside close().
        assert c.scheduled and not c.done and "held by <Coroutine 'c'" in repr(m)
        plain.poll(False)
        assert c.done and c.exception() is None and order == ["c"]
    assert not m.locked and "0 waiting" in repr(m)
    # b, scheduled elsewhere as the warning says, queues again and takes it.
    co_schedule(plain, b)
    plain.poll(False)
    assert b.done and b.exception() is None and order[-1] == "b" and not m.locked


# -- named once; finished ones never -----------------------------------------------


def test_a_sleeping_coroutine_also_scheduled_there_is_named_once(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Its dropped BH and its dropped sleep timer each named it."""

    async def sleeper() -> None:
        await sleep_ns(10**12)  # never, in this test

    doomed = AioContext(registry=registry)
    woken = Coroutine(sleeper(), name="woken")
    co_enter(doomed, woken)
    co_schedule(doomed, woken)  # a BH, dropped by the closing
    asleep = Coroutine(sleeper(), name="asleep")
    co_enter(doomed, asleep)
    parked = Coroutine(_wait_forever(), name="parked")
    co_enter(doomed, parked)
    _close(doomed, caplog)
    assert _mentions(caplog, "woken") == 1 and f"1 {SCHEDULED}" in caplog.text
    assert _mentions(caplog, "asleep") == 1 and f"1 {SLEEPING}" in caplog.text
    assert _mentions(caplog, "parked") == 1 and f"1 {STRANDED}" in caplog.text
    assert len(_warnings(caplog)) == 3


def test_finished_and_departed_coroutines_are_not_named(
    registry: aiocore.PluginRegistry, plain: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    """Guard: what finished, or lives in another context, or is scheduled
    into one, is not stranded by this closing."""
    doomed = AioContext(registry=registry)

    async def quick() -> None:
        pass

    async def woken_once() -> None:
        await yield_()

    async def leaves() -> None:
        await co_reschedule_self(plain)

    a = Coroutine(quick(), name="quick")
    co_enter(doomed, a)
    b = Coroutine(woken_once(), name="woken_once")
    co_enter(doomed, b)
    co_wake(b)
    c = Coroutine(leaves(), name="leaves")
    co_enter(doomed, c)  # scheduled into plain, not run yet
    d = Coroutine(_wait_forever(), name="on-its-way")
    co_enter(doomed, d)
    co_schedule(plain, d)  # will run in plain
    assert a.done and b.done and not c.done and c.scheduled and d.scheduled
    _close(doomed, caplog)
    assert _warnings(caplog) == []
    plain.poll(False)
    assert c.done and d.done and d.ctx is plain


# -- the bookkeeping holds no one ----------------------------------------------------


def test_the_bookkeeping_keeps_no_coroutine_or_context_alive(
    registry: aiocore.PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Guard: finished coroutines, an abandoned suspended one and a closed
    context all go away; a strong reference anywhere would keep them."""
    ctx = AioContext(registry=registry)

    async def hop() -> None:
        await yield_()

    refs: list[weakref.ref[Coroutine]] = []
    for i in range(200):
        co = Coroutine(hop(), name=f"hop{i}")
        co_enter(ctx, co)
        co_wake(co)
        assert co.done
        refs.append(weakref.ref(co))
    abandoned = Coroutine(_wait_forever(), name="abandoned")
    co_enter(ctx, abandoned)
    refs.append(weakref.ref(abandoned))
    del co, abandoned
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    _close(ctx, caplog)
    assert _warnings(caplog) == []  # the abandoned one is gone, nothing to name
    assert id(ctx) not in coroutine_mod._residents  # the closing forgot the context
    ctx_ref = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert ctx_ref() is None
