"""The notify protocol (SPEC 6) under every single-preemption interleaving.

A stress test finds a lost wake-up only if the scheduler happens to preempt
a thread in the right instruction window.  These tests do not wait for luck:
with ``sys.settrace`` they stop one thread at each line, in turn, of the code
that matters (the poller's ``poll()`` up to its wait, the waker's
``notify()`` and whatever publishes the work), run the other thread as far as
it goes, then let the first one go on.  So for a poller P and a waker W:

* **P preempted**: P stops before its k-th traced line; W runs to the end
  (or until it blocks on a lock P holds); P continues.  For every k until P
  sleeps in the backend.
* **W preempted**: W stops before its j-th traced line; P runs until it
  sleeps or finishes; W continues.  For every j until W is done.

In every schedule P must see the work: its loop ends within a deadline.  If
it does not, the wake-up was lost; the test then wakes P by writing the
notifier's fd directly and fails, naming the schedule.  Under CPython's GIL,
line granularity is coarser than the real interleavings (one line may be
several bytecodes), but the protocol's reads and writes of ``_notify_me``,
``_notified`` and the published state are each on lines of their own, which
is the granularity its argument needs.

``test_the_harness_catches_a_wrong_order`` runs the same harness against a
``notify()`` that reads ``_notify_me`` *before* setting ``_notified`` (the
classic mistake) and requires it to find the lost wake-up: the harness is
able to fail.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import pytest

import aiocore
from aiocore import AioContext, Clock
from aiocore._bh import BH, BHQueue
from aiocore._context import AioContext as _Ctx
from aiocore._timers import Timer, TimerGroup

TraceFn = Callable[[FrameType, str, Any], Any]

#: How long a thread must make no traced progress to count as asleep/blocked.
QUIET_S = 0.02
#: How long P may take to finish once W is done, before the wake-up counts as lost.
LOST_AFTER_S = 1.0


def _codes(*fns: Any) -> set[CodeType]:
    return {getattr(fn, "__func__", fn).__code__ for fn in fns}


#: The core code on the two sides of the protocol.
CORE_CODES = _codes(
    _Ctx.poll,
    _Ctx._compute_timeout,
    _Ctx.notify,
    _Ctx.set_fd_handler,
    _Ctx._set_handler,
    _Ctx.set_event_notifier,
    BH.schedule,
    BHQueue.schedule_oneshot,
    Timer.mod_ns,
    TimerGroup.arm,
    TimerGroup.deadline_ns,
)


class Kind:
    """One way of waking the loop: set up, the waker's action, the poller's test."""

    name = "?"

    def setup(self, ctx: AioContext) -> None:
        """In the poller's thread, before anything is traced."""

    def wake(self) -> None:
        """The waker's action (traced)."""
        raise NotImplementedError

    def seen(self) -> bool:
        """The poller's loop condition: the work has been handled."""
        raise NotImplementedError

    def teardown(self, ctx: AioContext) -> None:
        """In the poller's thread, after both threads are done."""


class BHKind(Kind):
    name = "bh.schedule"

    def setup(self, ctx: AioContext) -> None:
        self.ran = False
        self.bh = ctx.bh_new(self._cb)

    def _cb(self, _: object) -> None:
        self.ran = True

    def wake(self) -> None:
        self.bh.schedule()

    def seen(self) -> bool:
        return self.ran


class OneshotKind(BHKind):
    name = "bh_schedule_oneshot"

    def setup(self, ctx: AioContext) -> None:
        self.ran = False
        self.ctx = ctx

    def wake(self) -> None:
        self.ctx.bh_schedule_oneshot(self._cb)


class NotifyKind(Kind):
    """A bare notify() after publishing a flag: only _notified records the wake-up."""

    name = "notify"

    def setup(self, ctx: AioContext) -> None:
        self.flag = False
        self.ctx = ctx

    def wake(self) -> None:
        self.flag = True
        self.ctx.notify()

    def seen(self) -> bool:
        return self.flag


class BareNotifyKind(Kind):
    """notify() alone: one poll(True) that starts after the previous one accepted
    the notifications must return ("wake a blocking poll, now or the next one")."""

    name = "bare notify"

    def setup(self, ctx: AioContext) -> None:
        self.ctx = ctx
        self.checks = 0

    def wake(self) -> None:
        self.ctx.notify()

    def seen(self) -> bool:
        self.checks += 1
        return self.checks > 1  # after one poll(True) returned


class TimerKind(Kind):
    name = "timer moved earlier"

    def setup(self, ctx: AioContext) -> None:
        self.fired = False
        self.timer = ctx.timer_new_ns(Clock.REALTIME, self._cb)
        self.timer.mod_ns(aiocore.clock_get_ns(Clock.REALTIME) + 3600 * 10**9)

    def _cb(self, _: object) -> None:
        self.fired = True

    def wake(self) -> None:
        self.timer.mod_ns(0)

    def seen(self) -> bool:
        return self.fired

    def teardown(self, ctx: AioContext) -> None:
        self.timer.delete()


class HandlerKind(Kind):
    name = "handler added under acquire()"

    def setup(self, ctx: AioContext) -> None:
        self.called = False
        self.ctx = ctx
        self.notifier = aiocore.EventNotifier(active=True)

    def _cb(self, _: object) -> None:
        self.called = True

    def wake(self) -> None:
        self.ctx.acquire()
        try:
            self.ctx.set_event_notifier(self.notifier, self._cb)
        finally:
            self.ctx.release()

    def seen(self) -> bool:
        return self.called

    def teardown(self, ctx: AioContext) -> None:
        ctx.set_event_notifier(self.notifier, None)
        self.notifier.close()


KINDS = [BHKind, OneshotKind, NotifyKind, BareNotifyKind, TimerKind, HandlerKind]


class Schedule:
    """One run: which thread stops before which of its traced lines."""

    def __init__(self, who: str, at: int, codes: set[CodeType]) -> None:
        self.who = who
        self.at = at
        self.codes = codes
        self.steps = {"P": 0, "W": 0}
        self.paused = threading.Event()
        self.resume = threading.Event()

    def tracer(self, name: str) -> TraceFn:
        codes = self.codes
        steps = self.steps
        stop_here = self.at if name == self.who else -1

        def local(frame: FrameType, event: str, arg: Any) -> TraceFn:
            if event == "line":
                steps[name] += 1
                if steps[name] == stop_here:
                    self.paused.set()
                    self.resume.wait(5)
            return local

        def global_trace(frame: FrameType, event: str, arg: Any) -> TraceFn | None:
            if event == "call" and frame.f_code in codes:
                return local
            return None

        return global_trace

    def quiet(self, name: str, seconds: float) -> None:
        """Wait until thread *name* made no traced progress for QUIET_S (at most *seconds*)."""
        deadline = time.monotonic() + seconds
        last = -1
        while time.monotonic() < deadline:
            now = self.steps[name]
            if now == last:
                return
            last = now
            time.sleep(QUIET_S)


def _run_one(
    make_ctx: Callable[[], AioContext],
    ctx_cls: type[AioContext],
    kind_cls: type[Kind],
    who: str,
    at: int,
) -> tuple[str, int]:
    """Run one schedule; return (outcome, steps of the stopped thread).

    outcome: "ok", "lost" (P had to be rescued), or "past-end" (the stopped
    thread never reached line *at*: the sweep is complete).
    """
    kind = kind_cls()
    box: dict[str, Any] = {}
    ready = threading.Event()
    go = threading.Event()
    p_done = threading.Event()
    may_close = threading.Event()

    def p_loop(ctx: AioContext) -> None:
        for _ in range(100):
            if kind.seen():
                return
            ctx.poll(True)

    def w_action() -> None:
        kind.wake()

    codes = CORE_CODES | _codes(p_loop, w_action, kind.wake, kind.seen, ctx_cls.notify)
    sched = Schedule(who, at, codes)

    def poller() -> None:
        ctx = make_ctx()
        box["ctx"] = ctx
        kind.setup(ctx)
        ctx.poll(False)  # consume the setup's notifications
        ready.set()
        go.wait(10)
        old = sys.gettrace()
        sys.settrace(sched.tracer("P"))
        try:
            p_loop(ctx)
        finally:
            sys.settrace(old)
            p_done.set()
        may_close.wait(10)
        kind.teardown(ctx)
        ctx.close()

    def waker() -> None:
        old = sys.gettrace()
        sys.settrace(sched.tracer("W"))
        try:
            w_action()
        finally:
            sys.settrace(old)

    p = threading.Thread(target=poller, name="P")
    w = threading.Thread(target=waker, name="W")
    p.start()
    assert ready.wait(10)
    ctx: AioContext = box["ctx"]
    outcome = "ok"
    if who == "P":
        go.set()
        if not sched.paused.wait(0.15):
            outcome = "past-end"  # P went to sleep before line `at`: wake it
        w.start()
        w.join(0.1)  # may block on a lock P holds while stopped
        sched.resume.set()
    else:
        w.start()
        if not sched.paused.wait(0.15):
            outcome = "past-end"
        go.set()
        sched.quiet("P", 2.0)  # P asleep in the backend, or done
        sched.resume.set()
    w.join(5)
    if not p_done.wait(LOST_AFTER_S):
        outcome = "lost" if outcome == "ok" else outcome
        for _ in range(50):  # rescue, bypassing notify()
            ctx._event.set()
            if p_done.wait(0.1):
                break
    may_close.set()
    p.join(10)
    assert not p.is_alive() and not w.is_alive()
    return outcome, sched.steps[who]


def _sweep(
    make_ctx: Callable[[], AioContext], ctx_cls: type[AioContext], kind_cls: type[Kind]
) -> list[str]:
    """Every single-preemption schedule; return descriptions of the lost ones."""
    lost = []
    for who in ("P", "W"):
        for at in range(1, 400):
            outcome, _ = _run_one(make_ctx, ctx_cls, kind_cls, who, at)
            if outcome == "lost":
                lost.append(f"{kind_cls.name}: {who} stopped before its traced line {at}")
            if outcome == "past-end":
                break
        else:
            pytest.fail(f"{who} had more than 400 traced lines: the sweep is not bounded")
        assert at > 3, f"{who} was stopped at only {at - 1} lines: tracing is not working"
    return lost


@pytest.mark.parametrize("kind_cls", KINDS, ids=[k.name for k in KINDS])
def test_no_lost_wake_up_under_any_single_preemption(
    registry: aiocore.PluginRegistry, kind_cls: type[Kind]
) -> None:
    lost = _sweep(lambda: AioContext(registry=registry), AioContext, kind_cls)
    assert not lost, lost


class _WrongOrder(AioContext):
    """notify() with the protocol's order broken: reads _notify_me, then sets _notified."""

    def notify(self) -> None:
        announced = self._notify_me
        self._notified = True
        if announced:
            self._kicked = True
            self._event.set()


def test_the_harness_catches_a_wrong_order(registry: aiocore.PluginRegistry) -> None:
    lost = _sweep(lambda: _WrongOrder(registry=registry), _WrongOrder, BareNotifyKind)
    assert lost, "the harness did not find the lost wake-up of a wrong-order notify()"
    assert all("W stopped" in entry for entry in lost), lost
