"""SPEC section 8: timers (and the clock rules of section 1).

Timers on each clock: REALTIME (monotonic) and HOST (wall clock) with real
short deadlines, VIRTUAL (disabled until ``clock_enable``, advanced only by
``virtual_clock_step``) for deterministic logic.  Scales and clamping,
``pending``/``expire_time_ns``/``delete``/re-arming, ``mod_anticipate``,
equal expiries in the order they were set, expiry order, a disabled clock
neither running timers nor contributing deadlines, timers after fd dispatch,
"now" read once per clock, re-arming callbacks, and the deviation from QEMU: a
timer armed during a timer run (even into the past) waits for the next poll.
Cross-thread ``mod()`` waking a blocked poll is in ``test_threads.py``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from aiocore import (
    SCALE_MS,
    SCALE_NS,
    SCALE_US,
    AioContext,
    Clock,
    Timer,
    clock_enable,
    clock_enabled,
    clock_get_ns,
    virtual_clock_step,
)
from aiocore.backend import MAX_WAIT_NS

from ._support import Guard, Pair, Recorder, WaitSpy, poll_until


@pytest.fixture
def virtual() -> None:
    """Enable the VIRTUAL clock (the suite's autouse fixture resets it)."""
    clock_enable(Clock.VIRTUAL, True)


def vnow() -> int:
    return clock_get_ns(Clock.VIRTUAL)


# -- clocks ----------------------------------------------------------------------


def test_clock_sources() -> None:
    assert abs(clock_get_ns(Clock.HOST) - time.time_ns()) < 1_000_000_000
    assert abs(clock_get_ns(Clock.REALTIME) - time.monotonic_ns()) < 1_000_000_000
    assert clock_enabled(Clock.REALTIME)
    assert clock_enabled(Clock.HOST)
    assert not clock_enabled(Clock.VIRTUAL)


def test_virtual_clock_moves_only_when_stepped() -> None:
    start = vnow()
    time.sleep(0.001)
    assert vnow() == start
    assert virtual_clock_step(250) == start + 250
    assert vnow() == start + 250
    assert virtual_clock_step(0) == start + 250


# -- real clocks -------------------------------------------------------------------


@pytest.mark.parametrize("clock", [Clock.REALTIME, Clock.HOST], ids=["REALTIME", "HOST"])
def test_real_clock_timer_fires_no_earlier_than_its_expiry(
    ctx: AioContext, clock: Clock
) -> None:
    guard = Guard(ctx, 3000)
    fired_at: list[int] = []
    token = object()
    seen: list[object] = []

    def cb(opaque: object) -> None:
        seen.append(opaque)
        fired_at.append(clock_get_ns(clock))

    timer = ctx.timer_new_us(clock, cb, token)
    expire_us = clock_get_ns(clock) // SCALE_US + 5000
    timer.mod(expire_us)
    assert timer.pending
    assert timer.expire_time_ns == expire_us * SCALE_US
    assert poll_until(ctx, lambda: bool(fired_at), blocking=True, max_polls=20) >= 0
    assert fired_at[0] >= expire_us * SCALE_US
    assert seen == [token]
    assert not timer.pending
    assert timer.expire_time_ns == -1
    assert not guard.fired


@pytest.mark.parametrize("clock", [Clock.REALTIME, Clock.HOST], ids=["REALTIME", "HOST"])
def test_real_clock_rearming_callback(ctx: AioContext, clock: Clock) -> None:
    guard = Guard(ctx, 3000)
    expiries: list[int] = []
    fired_at: list[int] = []
    holder: list[Timer] = []

    def cb(_opaque: object) -> None:
        fired_at.append(clock_get_ns(clock))
        if len(fired_at) < 3:
            arm()

    def arm() -> None:
        expire = clock_get_ns(clock) + 2 * SCALE_MS
        expiries.append(expire)
        holder[0].mod_ns(expire)

    holder.append(ctx.timer_new_ns(clock, cb))
    arm()
    assert poll_until(ctx, lambda: len(fired_at) == 3, blocking=True, max_polls=50) >= 0
    assert all(f >= e for f, e in zip(fired_at, expiries, strict=True))
    assert not holder[0].pending
    assert not guard.fired


# -- the virtual clock ---------------------------------------------------------------


def test_virtual_clock_is_disabled_until_enabled(ctx: AioContext) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t"))
    timer.mod_ns(0)
    virtual_clock_step(1000)
    for _ in range(3):
        assert ctx.poll(False) is False
    assert rec.calls == []
    assert timer.pending
    clock_enable(Clock.VIRTUAL, True)
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


def test_disabling_the_clock_again_stops_its_timers(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t"))
    timer.mod_ns(vnow() + 10)
    clock_enable(Clock.VIRTUAL, False)
    virtual_clock_step(10)
    assert ctx.poll(False) is False
    assert rec.calls == []
    clock_enable(Clock.VIRTUAL, True)
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


def test_virtual_clock_step_makes_a_timer_due(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t"))
    timer.mod_ns(vnow() + 100)
    virtual_clock_step(99)
    assert ctx.poll(False) is False
    assert rec.calls == []
    virtual_clock_step(1)
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


def test_disabled_clock_contributes_no_deadline(ctx: AioContext, spy: WaitSpy) -> None:
    # VIRTUAL is disabled: its due timer must not shorten the wait for the
    # REALTIME one.
    rec = Recorder()
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("virtual")).mod_ns(vnow())
    fired: list[int] = []
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_MS + 20
    )
    ctx.poll(False)
    spy.reset()
    assert poll_until(ctx, lambda: bool(fired), blocking=True, max_polls=10) >= 0
    assert spy.timeouts
    assert spy.timeouts[0] > 5 * SCALE_MS
    assert rec.calls == []


def test_enabled_virtual_clock_gives_the_exact_deadline(
    ctx: AioContext, virtual: None, spy: WaitSpy
) -> None:
    rec = Recorder()
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t")).mod_ns(vnow() + 3 * SCALE_MS)
    ctx.poll(False)
    spy.reset()
    # Virtual time does not move by itself: the blocking poll waits out the
    # whole (real) timeout and runs nothing.
    assert ctx.poll(True) is False
    assert spy.timeouts == [3 * SCALE_MS]
    assert rec.calls == []


@pytest.mark.parametrize("ahead_ns", [30 * 86_400 * 10**9, 2**63 - 1], ids=["30 days", "never"])
def test_a_far_timer_waits_at_most_max_wait_ns(
    ctx: AioContext, spy: WaitSpy, ahead_ns: int
) -> None:
    # poll(2) and epoll_wait(2) take at most 2**31 - 1 ms: a timer further
    # away (QEMU code arms INT64_MAX for "never") must make a long wait, not
    # an OverflowError from every blocking poll().
    now = clock_get_ns(Clock.REALTIME)
    timer = ctx.timer_new_ns(Clock.REALTIME, lambda _o: None)
    timer.mod_ns(min(now + ahead_ns, 2**63 - 1))
    ctx.poll(False)
    bh = ctx.bh_new(lambda _o: None)
    spy.reset()
    waker = threading.Timer(0.05, bh.schedule)
    waker.start()
    try:
        assert ctx.poll(True) is True  # woken by the BH, no OverflowError
    finally:
        waker.join(10)
    assert spy.timeouts[0] == MAX_WAIT_NS
    assert timer.pending


class _ClosedMeanwhile:
    """A context another thread closed after ``_wake_all`` took its snapshot."""

    closed = True

    def notify(self) -> None:
        raise RuntimeError("this AioContext is closed")


class _Registry:
    """The clock's context registry with a fixed iteration order."""

    def __init__(self, items: dict[object, None]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[object]:
        return iter(list(self.items))

    def add(self, item: object) -> None:
        self.items[item] = None

    def discard(self, item: object) -> None:
        self.items.pop(item, None)


@pytest.mark.parametrize("change", ["clock_enable", "virtual_clock_step"])
def test_a_clock_change_wakes_every_context_when_one_closes_meanwhile(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # The registry is snapshotted under a lock and notified outside it: a
    # context closed in between must be skipped, not end the loop before the
    # contexts after it (a lost wake-up for a poll waiting on VIRTUAL).
    import aiocore._clocks as clocks

    ctx.poll(False)
    assert not ctx._notified
    wakers = dict.fromkeys([_ClosedMeanwhile(), ctx])  # in this order
    monkeypatch.setattr(clocks, "_wakers", _Registry(wakers))
    if change == "clock_enable":
        clock_enable(Clock.VIRTUAL, True)
    else:
        virtual_clock_step(1)
    assert ctx._notified


# -- arming --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [SCALE_NS, SCALE_US, SCALE_MS])
def test_mod_uses_the_scale(ctx: AioContext, scale: int) -> None:
    timer = ctx.timer_new(Clock.VIRTUAL, scale, lambda _o: None)
    timer.mod(1234)
    assert timer.expire_time_ns == 1234 * scale
    timer.mod_ns(777)
    assert timer.expire_time_ns == 777


def test_timer_new_shorthands_have_their_scales(ctx: AioContext) -> None:
    for make, scale in (
        (ctx.timer_new_ns, SCALE_NS),
        (ctx.timer_new_us, SCALE_US),
        (ctx.timer_new_ms, SCALE_MS),
    ):
        timer = make(Clock.VIRTUAL, lambda _o: None)
        timer.mod(3)
        assert timer.expire_time_ns == 3 * scale


def test_mod_clamps_at_zero(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ms(Clock.VIRTUAL, rec.cb("t"))
    timer.mod(-5)
    assert timer.pending
    assert timer.expire_time_ns == 0
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


def test_delete_deactivates_and_can_rearm(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t"))
    assert not timer.pending
    assert timer.expire_time_ns == -1
    timer.mod_ns(vnow() + 10)
    timer.delete()
    assert not timer.pending
    assert timer.expire_time_ns == -1
    timer.delete()
    virtual_clock_step(20)
    assert ctx.poll(False) is False
    assert rec.calls == []
    timer.mod_ns(vnow())
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


def test_mod_moves_an_armed_timer(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t"))
    timer.mod_ns(vnow() + 10)
    timer.mod_ns(vnow() + 50)
    virtual_clock_step(10)
    assert ctx.poll(False) is False
    virtual_clock_step(40)
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]
    assert ctx.poll(False) is False


def test_mod_anticipate_only_moves_earlier(ctx: AioContext) -> None:
    timer = ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None)
    timer.mod(100)
    timer.mod_anticipate(200)
    assert timer.expire_time_ns == 100
    timer.mod_anticipate(100)
    assert timer.expire_time_ns == 100
    timer.mod_anticipate(50)
    assert timer.expire_time_ns == 50


def test_mod_anticipate_arms_a_timer_that_is_not_pending(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timer = ctx.timer_new_us(Clock.VIRTUAL, rec.cb("t"))
    timer.mod_anticipate(7)
    assert timer.pending
    assert timer.expire_time_ns == 7 * SCALE_US
    virtual_clock_step(7 * SCALE_US)
    assert ctx.poll(False) is True
    assert rec.names() == ["t"]


# -- running ---------------------------------------------------------------------


def test_equal_expiries_fire_in_the_order_they_were_set(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    timers = {name: ctx.timer_new_ns(Clock.VIRTUAL, rec.cb(name)) for name in "abcde"}
    expire = vnow() + 100
    for name in "dbeac":
        timers[name].mod_ns(expire)
    # Setting again counts as setting later.
    timers["b"].mod_ns(expire)
    virtual_clock_step(100)
    assert ctx.poll(False) is True
    assert rec.names() == ["d", "e", "a", "c", "b"]


def test_timers_fire_in_expiry_order(ctx: AioContext, virtual: None) -> None:
    rng = random.Random(1234)
    fired: list[tuple[int, int]] = []
    expected: list[tuple[int, int]] = []
    base = vnow()
    for i in range(200):
        expire = base + rng.randrange(1, 50)
        ctx.timer_new_ns(Clock.VIRTUAL, fired.append, (expire, i)).mod_ns(expire)
        expected.append((expire, i))
    virtual_clock_step(100)
    assert ctx.poll(False) is True
    assert fired == sorted(expected)


def test_only_due_timers_run(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    base = vnow()
    for name, delta in (("a", 10), ("b", 20), ("c", 30)):
        ctx.timer_new_ns(Clock.VIRTUAL, rec.cb(name)).mod_ns(base + delta)
    virtual_clock_step(20)
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b"]
    virtual_clock_step(10)
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b", "c"]


def test_timers_of_every_enabled_clock_run(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("virtual")).mod_ns(vnow())
    ctx.timer_new_ns(Clock.REALTIME, rec.cb("realtime")).mod_ns(0)
    ctx.timer_new_ns(Clock.HOST, rec.cb("host")).mod_ns(0)
    assert ctx.poll(False) is True
    assert sorted(rec.names()) == ["host", "realtime", "virtual"]


def test_order_is_bhs_then_fds_then_timers(ctx: AioContext, virtual: None, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("fd"))
    ctx.poll(False)
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("timer")).mod_ns(vnow())
    pair.send_to_a()
    ctx.bh_new(rec.cb("bh")).schedule()
    assert ctx.poll(False) is True
    assert rec.names() == ["bh", "fd", "timer"]


def test_now_is_read_once_per_clock(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    base = vnow()

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        virtual_clock_step(10)  # makes "b" due, but this run's "now" is read

    ctx.timer_new_ns(Clock.VIRTUAL, first).mod_ns(base + 10)
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("b")).mod_ns(base + 20)
    virtual_clock_step(10)
    assert ctx.poll(False) is True
    assert rec.names() == ["a"]
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b"]


def test_callback_rearms_its_own_timer_periodically(ctx: AioContext, virtual: None) -> None:
    fired: list[int] = []
    holder: list[Timer] = []

    def cb(_opaque: object) -> None:
        fired.append(vnow())
        holder[0].mod_ns(vnow() + 100)

    holder.append(ctx.timer_new_ns(Clock.VIRTUAL, cb))
    holder[0].mod_ns(vnow() + 100)
    for i in range(1, 6):
        virtual_clock_step(50)
        assert ctx.poll(False) is False
        virtual_clock_step(50)
        assert ctx.poll(False) is True
        assert len(fired) == i
    assert holder[0].pending


def test_timer_rearmed_into_the_past_runs_at_the_next_poll(
    ctx: AioContext, virtual: None
) -> None:
    # Deviation from QEMU: no re-run within the same poll, so no livelock.
    fired: list[int] = []
    holder: list[Timer] = []

    def cb(_opaque: object) -> None:
        fired.append(1)
        holder[0].mod_ns(0)

    holder.append(ctx.timer_new_ns(Clock.VIRTUAL, cb))
    holder[0].mod_ns(0)
    for i in range(1, 5):
        assert ctx.poll(False) is True
        assert len(fired) == i
    holder[0].delete()
    assert ctx.poll(False) is False


def test_timer_armed_by_another_timer_during_the_run_waits(
    ctx: AioContext, virtual: None
) -> None:
    rec = Recorder()
    other = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("b"))

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        other.mod_ns(0)  # due at once

    ctx.timer_new_ns(Clock.VIRTUAL, first).mod_ns(vnow())
    assert ctx.poll(False) is True
    assert rec.names() == ["a"]
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b"]


def test_rearmed_timer_waits_for_the_next_poll_even_if_already_due(
    ctx: AioContext, virtual: None
) -> None:
    # "b" is due when the run starts; "a" re-arms it (still due): it was armed
    # during the run, so it waits for the next poll.
    rec = Recorder()
    b = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("b"))

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        b.mod_ns(vnow() - 1)

    base = vnow()
    ctx.timer_new_ns(Clock.VIRTUAL, first).mod_ns(base)
    b.mod_ns(base)
    virtual_clock_step(5)
    assert ctx.poll(False) is True
    assert rec.names() == ["a"]
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b"]


def test_timer_deleted_by_an_earlier_timer_does_not_run(ctx: AioContext, virtual: None) -> None:
    rec = Recorder()
    b = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("b"))
    c = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("c"))

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        b.delete()
        c.mod_ns(vnow() + 1000)

    base = vnow()
    ctx.timer_new_ns(Clock.VIRTUAL, first).mod_ns(base)
    b.mod_ns(base)
    c.mod_ns(base)
    assert ctx.poll(False) is True
    assert ctx.poll(False) is False
    assert rec.names() == ["a"]
    assert not b.pending
    assert c.pending


def test_pending_timer_keeps_blocking_poll_bounded(ctx: AioContext) -> None:
    fired: list[int] = []
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_MS + 10
    )
    assert poll_until(ctx, lambda: bool(fired), blocking=True, max_polls=10) >= 0
    assert ctx.poll(False) is False


def test_nearest_deadline_over_all_clocks(
    ctx: AioContext, virtual: None, spy: WaitSpy
) -> None:
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: None).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_MS + 3000
    )
    ctx.timer_new_ns(Clock.HOST, lambda _o: None).mod_ns(clock_get_ns(Clock.HOST) + 10**10)
    ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(vnow() + 2 * SCALE_MS)
    ctx.poll(False)
    spy.reset()
    assert ctx.poll(True) is False
    assert spy.timeouts == [2 * SCALE_MS]
    # Now a REALTIME deadline nearer than the virtual one.
    fired: list[int] = []
    ctx.timer_new_us(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_US + 1000
    )
    ctx.poll(False)
    spy.reset()
    assert poll_until(ctx, lambda: bool(fired), blocking=True, max_polls=5) >= 0
    assert spy.timeouts
    assert 0 <= spy.timeouts[0] <= 1 * SCALE_MS
