"""SPEC section 2 step 9: the progress value ``poll()`` returns, case by case.

True if a non-idle BH ran, an ``io_read``/``io_write``/``io_poll_ready`` ran,
an ``io_poll`` returned true, or a timer callback ran; never for ``notify()``
alone (the context's own notifier is excepted from the fd rules), an idle BH,
a cancelled BH, a timer on a disabled clock, a registration's notification, or
nothing at all.  The cross-thread notify case (the internal notifier's own
``io_read`` running) is in ``test_threads.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aiocore import AioContext, Clock, EventNotifier, PluginRegistry, clock_enable

from ._support import ExcLog, Guard, Pair, make_pipe


@pytest.fixture
def pipe(ctx: AioContext) -> Iterator[tuple[int, int]]:
    r, w = make_pipe()
    yield r, w
    if not ctx.closed and r in ctx.handler_fds():
        ctx.set_fd_handler(r, None)
    os.close(r)
    os.close(w)


def test_nothing_to_do_is_no_progress(ctx: AioContext) -> None:
    assert ctx.poll(False) is False
    assert ctx.poll(False) is False


def test_notify_alone_is_no_progress(ctx: AioContext) -> None:
    ctx.notify()
    assert ctx.poll(False) is False
    guard = Guard(ctx)
    ctx.poll(False)
    ctx.notify()
    assert ctx.poll(True) is False
    assert not guard.fired


def test_set_poll_params_notification_is_no_progress(ctx: AioContext) -> None:
    ctx.set_poll_params(1000, 2, 2)
    assert ctx.poll(False) is False


def test_registering_a_handler_is_no_progress(ctx: AioContext, pair: Pair) -> None:
    ctx.set_fd_handler(pair.a, lambda _o: None)
    assert ctx.poll(False) is False
    ctx.set_fd_handler(pair.a, None)
    assert ctx.poll(False) is False


def test_non_idle_bh_is_progress(ctx: AioContext) -> None:
    ctx.bh_new(lambda _o: None).schedule()
    assert ctx.poll(False) is True


def test_oneshot_is_progress(ctx: AioContext) -> None:
    ctx.bh_schedule_oneshot(lambda _o: None)
    assert ctx.poll(False) is True


def test_idle_bh_is_no_progress(ctx: AioContext) -> None:
    ran: list[int] = []
    ctx.bh_new(lambda _o: ran.append(1)).schedule_idle()
    assert ctx.poll(False) is False
    assert ran == [1]


def test_idle_bh_with_a_non_idle_bh_is_progress(ctx: AioContext) -> None:
    ctx.bh_new(lambda _o: None).schedule_idle()
    ctx.bh_new(lambda _o: None).schedule()
    assert ctx.poll(False) is True


def test_cancelled_bh_is_no_progress(ctx: AioContext) -> None:
    bh = ctx.bh_new(lambda _o: None)
    bh.schedule()
    bh.cancel()
    assert ctx.poll(False) is False


def test_io_read_is_progress(ctx: AioContext, pair: Pair) -> None:
    ctx.set_fd_handler(pair.a, lambda _o: None)
    pair.send_to_a()
    assert ctx.poll(False) is True


def test_io_write_is_progress(ctx: AioContext, pair: Pair) -> None:
    ctx.set_fd_handler(pair.a, None, lambda _o: None)
    assert ctx.poll(False) is True


def test_ready_fd_without_a_matching_callback_is_no_progress(
    ctx: AioContext, pair: Pair
) -> None:
    # Writable, but the handler only has io_read.
    ctx.set_fd_handler(pair.a, lambda _o: None)
    assert ctx.poll(False) is False
    assert ctx.poll(False) is False


def test_event_notifier_read_is_progress(ctx: AioContext, registry: PluginRegistry) -> None:
    e = EventNotifier(registry=registry)
    try:
        ctx.set_event_notifier(e, lambda n: n.test_and_clear())
        assert ctx.poll(False) is False
        e.set()
        assert ctx.poll(False) is True
        assert ctx.poll(False) is False
        ctx.set_event_notifier(e, None)
    finally:
        e.close()


def test_io_poll_true_is_progress(ctx: AioContext, pipe: tuple[int, int]) -> None:
    r, _w = pipe
    reads: list[int] = []
    state = {"hit": True}
    ctx.set_fd_handler(r, lambda _o: reads.append(1), None, lambda _o: state["hit"])
    assert ctx.poll(False) is True
    # io_poll's hit is the progress: io_read did not run (the fd is not ready).
    assert reads == []
    state["hit"] = False
    assert ctx.poll(False) is False


def test_io_poll_ready_is_progress(ctx: AioContext, pipe: tuple[int, int]) -> None:
    r, _w = pipe
    state = {"hit": 1}

    def io_poll(_opaque: object) -> bool:
        hit = state["hit"] > 0
        state["hit"] -= 1
        return hit

    ready: list[int] = []
    ctx.set_fd_handler(
        r, lambda _o: None, None, io_poll, io_poll_ready=lambda _o: ready.append(1)
    )
    assert ctx.poll(False) is True
    assert ready == [1]
    assert ctx.poll(False) is False


def test_timer_is_progress(ctx: AioContext) -> None:
    ctx.timer_new_ns(Clock.REALTIME, lambda _o: None).mod_ns(0)
    assert ctx.poll(False) is True
    assert ctx.poll(False) is False


def test_timer_on_a_disabled_clock_is_no_progress(ctx: AioContext) -> None:
    ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(0)
    assert ctx.poll(False) is False
    clock_enable(Clock.VIRTUAL, True)
    assert ctx.poll(False) is True


def test_not_yet_due_timer_is_no_progress(ctx: AioContext) -> None:
    clock_enable(Clock.VIRTUAL, True)
    ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(10**12)
    assert ctx.poll(False) is False


def test_callbacks_that_raise_still_ran(ctx: AioContext, pair: Pair) -> None:
    ctx.set_exception_handler(ExcLog())

    def boom(_opaque: object) -> None:
        raise ValueError("boom")

    ctx.bh_schedule_oneshot(boom)
    assert ctx.poll(False) is True
    ctx.timer_new_ns(Clock.REALTIME, boom).mod_ns(0)
    assert ctx.poll(False) is True
    ctx.set_fd_handler(pair.a, boom)
    pair.send_to_a()
    assert ctx.poll(False) is True


def test_progress_combines_all_sources(ctx: AioContext, pair: Pair) -> None:
    ctx.set_fd_handler(pair.a, lambda _o: pair.read_a())
    ctx.bh_new(lambda _o: None).schedule_idle()
    ctx.notify()
    assert ctx.poll(False) is False
    pair.send_to_a()
    ctx.bh_new(lambda _o: None).schedule_idle()
    assert ctx.poll(False) is True
