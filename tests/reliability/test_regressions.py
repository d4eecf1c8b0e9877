"""Failures the reliability tests found, kept as plain tests.

Each test names the test that found it and reduces the failing example to the
few calls that matter; it failed before its core fix and passes after.
"""

from __future__ import annotations

from aiocore import AioContext, Clock, clock_enable

from .harness import bounded


def _noop(_opaque: object) -> None:
    return None


def test_rearming_the_earliest_timer_notifies(ctx: AioContext) -> None:
    """SPEC 8: a timer that becomes the earliest of its clock notifies.

    Found by ``test_differential``: re-arming a timer left its old, blanked
    heap entry at the head, and "earliest" was judged by ``heap[0] is entry``,
    so no ``notify()`` happened; with its clock disabled the next
    ``poll(True)`` then slept forever instead of returning at once.
    """
    clock_enable(Clock.VIRTUAL, False)
    t = ctx.timer_new_ns(Clock.VIRTUAL, _noop)
    t.mod_ns(0)
    assert ctx.poll(False) is False  # accepts that notification
    t.mod_ns(0)  # the earliest of its clock again
    with bounded(0.5, "poll(True) after a timer became the earliest"):
        assert ctx.poll(True) is False


def test_arming_behind_a_deleted_head_timer_notifies(ctx: AioContext) -> None:
    """The same through another timer: the head was deleted, not moved."""
    clock_enable(Clock.VIRTUAL, False)
    first = ctx.timer_new_ns(Clock.VIRTUAL, _noop)
    second = ctx.timer_new_ns(Clock.VIRTUAL, _noop)
    first.mod_ns(10)
    first.delete()
    assert ctx.poll(False) is False
    second.mod_ns(20)  # no live timer precedes it: it is the earliest
    with bounded(0.5, "poll(True) after a timer became the earliest"):
        assert ctx.poll(True) is False
