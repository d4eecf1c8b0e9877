"""Failures the reliability tests found, kept as plain tests.

Each test names the test that found it and reduces the failing example to the
few calls that matter; it failed before its core fix and passes after.
"""

from __future__ import annotations

import socket

from aiocore import AioContext, Clock, clock_enable, virtual_clock_step

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


def test_timer_rearmed_during_a_run_is_run_by_a_nested_poll(ctx: AioContext) -> None:
    """SPEC 8: a timer armed during a timer run runs at the next ``poll()``,
    and a nested ``poll()`` from a later timer callback is such a poll.

    Found by ``test_differential`` (soak): the run set the re-armed, due timer
    aside in a list local to the outer run, so the nested poll did not see it,
    while one that sorted after the running timer was still in the heap and
    was run by the nested poll: the outcome depended on heap order.
    """
    clock_enable(Clock.VIRTUAL, True)
    calls: list[str] = []
    nested: list[bool] = []

    def a_cb(_opaque: object) -> None:
        calls.append("a")
        if calls.count("a") == 1:
            a.mod_ns(0)  # due at once, armed during the run

    def b_cb(_opaque: object) -> None:
        calls.append("b")
        nested.append(ctx.poll(False))
        calls.append("b done")

    a = ctx.timer_new_ns(Clock.VIRTUAL, a_cb)
    b = ctx.timer_new_ns(Clock.VIRTUAL, b_cb)
    virtual_clock_step(10)
    a.mod_ns(0)
    b.mod_ns(5)
    # a runs, re-arms itself at 0, which sorts before b: the run meets the
    # new entry (armed during the run: not this run's) before it reaches b.
    assert ctx.poll(False) is True
    assert calls == ["a", "b", "a", "b done"]
    assert nested == [True]
    assert not a.pending


def test_nested_blocking_poll_does_not_sleep_past_a_rearmed_due_timer(
    ctx: AioContext,
) -> None:
    """The same, with a nested ``poll(True)``: its timeout counts that timer."""
    clock_enable(Clock.VIRTUAL, True)
    calls: list[str] = []

    def a_cb(_opaque: object) -> None:
        calls.append("a")
        if calls.count("a") == 1:
            a.mod_ns(0)

    def b_cb(_opaque: object) -> None:
        calls.append("b")
        with bounded(0.5, "a nested poll(True) with a due timer"):
            ctx.poll(True)

    a = ctx.timer_new_ns(Clock.VIRTUAL, a_cb)
    b = ctx.timer_new_ns(Clock.VIRTUAL, b_cb)
    virtual_clock_step(10)
    a.mod_ns(0)
    b.mod_ns(5)
    ctx.poll(False)
    assert calls == ["a", "b", "a"]


def test_readiness_gone_before_the_wait_is_not_reported(ctx: AioContext) -> None:
    """SPEC 3: readiness is level-triggered on every backend, so a wait
    reports what is ready *when it waits*, not what was ready earlier.

    Found by ``test_differential`` (soak) on io_uring: an fd that became
    readable while its one-shot POLL_ADD was armed and was drained again
    before the next wait was still reported (the completion was reaped
    without a re-check), so ``io_read`` ran with nothing to read and the
    poll counted as progress.  poll, epoll and kqueue report nothing.
    """
    a, b = socket.socketpair()
    a.setblocking(False)
    calls: list[object] = []
    try:
        ctx.set_fd_handler(a, calls.append)
        assert ctx.poll(False) is False  # the registration's notification
        assert ctx.poll(False) is False  # armed, nothing ready
        b.send(b"x")
        assert a.recv(16) == b"x"  # ready, then not, between two waits
        assert ctx.poll(False) is False
        assert calls == []
    finally:
        ctx.set_fd_handler(a, None)
        a.close()
        b.close()
