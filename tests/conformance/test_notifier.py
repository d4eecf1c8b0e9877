"""SPEC section 4 (event notifiers) and section 6 (the notify protocol, same thread).

``EventNotifier`` set/test_and_clear/fileno/close for every registered
implementation; ``set_event_notifier`` add/remove/wait/flush, the notifier as
the opaque, ``io_poll`` keeping a notifier registered without ``io_read``;
``notify()`` before a blocking poll, accepted by every poll (blocking or not),
and from inside a callback.  Cross-thread wake-ups are in ``test_threads.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aiocore import AioContext, Clock, EventNotifier, PluginRegistry, clock_get_ns

from ..conftest import session_registry
from ._support import Guard, Recorder, poll_until

NOTIFIER_KINDS = sorted(session_registry().notifiers)


@pytest.fixture(params=NOTIFIER_KINDS)
def kind(request: pytest.FixtureRequest, registry: PluginRegistry) -> str:
    name: str = request.param
    cls = registry.notifier_class(name)
    reason = cls.probe()
    if reason is not None:
        pytest.skip(f"notifier {name!r} unavailable: {reason}")
    return name


@pytest.fixture
def notifier(ctx: AioContext, registry: PluginRegistry) -> Iterator[EventNotifier]:
    e = EventNotifier(registry=registry)
    yield e
    if not ctx.closed and not e.closed and e.fileno() in ctx.handler_fds():
        ctx.set_event_notifier(e, None)
    e.close()


# -- EventNotifier itself -----------------------------------------------------


def test_set_and_test_and_clear(kind: str, registry: PluginRegistry) -> None:
    with EventNotifier(kind=kind, registry=registry) as e:
        assert isinstance(e, EventNotifier)
        assert isinstance(e.fileno(), int)
        assert e.fileno() >= 0
        assert e.test_and_clear() is False
        e.set()
        e.set()
        assert e.test_and_clear() is True
        assert e.test_and_clear() is False


def test_active_starts_set(kind: str, registry: PluginRegistry) -> None:
    with EventNotifier(True, kind=kind, registry=registry) as e:
        assert e.test_and_clear() is True
        assert e.test_and_clear() is False


def test_close_is_idempotent_and_releases_fds(
    kind: str, registry: PluginRegistry, no_fd_leak: None
) -> None:
    for _ in range(50):
        e = EventNotifier(kind=kind, registry=registry)
        e.set()
        assert not e.closed
        e.close()
        assert e.closed
        e.close()


def test_notifier_of_each_kind_dispatches(
    ctx: AioContext, kind: str, registry: PluginRegistry
) -> None:
    e = EventNotifier(kind=kind, registry=registry)
    try:
        got: list[object] = []
        def on_read(n: EventNotifier) -> None:
            got.append(n)
            n.test_and_clear()

        ctx.set_event_notifier(e, on_read)
        assert ctx.poll(False) is False
        e.set()
        assert ctx.poll(False) is True
        assert got == [e]
        ctx.set_event_notifier(e, None)
    finally:
        e.close()


# -- set_event_notifier --------------------------------------------------------


def test_add_dispatches_with_the_notifier_as_opaque(
    ctx: AioContext, notifier: EventNotifier
) -> None:
    rec = Recorder()

    def on_read(n: EventNotifier) -> None:
        rec.calls.append(("read", n))
        n.test_and_clear()

    ctx.set_event_notifier(notifier, on_read)
    assert notifier.fileno() in ctx.handler_fds()
    assert ctx.poll(False) is False
    notifier.set()
    assert ctx.poll(False) is True
    assert rec.calls == [("read", notifier)]
    assert ctx.poll(False) is False
    assert len(rec.calls) == 1


def test_undrained_notifier_stays_ready(ctx: AioContext, notifier: EventNotifier) -> None:
    rec = Recorder()
    ctx.set_event_notifier(notifier, rec.cb("read"))
    notifier.set()
    for i in range(1, 4):
        assert ctx.poll(False) is True
        assert rec.count("read") == i
    assert notifier.test_and_clear() is True
    assert ctx.poll(False) is False


def test_remove(ctx: AioContext, notifier: EventNotifier) -> None:
    rec = Recorder()
    ctx.set_event_notifier(notifier, rec.cb("read"))
    ctx.set_event_notifier(notifier, None)
    assert notifier.fileno() not in ctx.handler_fds()
    notifier.set()
    for _ in range(3):
        assert ctx.poll(False) is False
    assert rec.calls == []


def test_io_poll_alone_keeps_it_registered(ctx: AioContext, notifier: EventNotifier) -> None:
    seen: list[object] = []

    def io_poll(n: EventNotifier) -> bool:
        seen.append(n)
        return False

    ctx.set_event_notifier(notifier, None, io_poll)
    assert notifier.fileno() in ctx.handler_fds()
    ctx.poll(False)
    assert seen
    assert all(n is notifier for n in seen)
    ctx.set_event_notifier(notifier, None, None)
    assert notifier.fileno() not in ctx.handler_fds()


def test_wait_blocking_poll_returns_for_a_set_notifier(
    ctx: AioContext, notifier: EventNotifier
) -> None:
    guard = Guard(ctx)
    rec = Recorder()
    def on_read(n: EventNotifier) -> None:
        rec.calls.append(("r", n))
        n.test_and_clear()

    ctx.set_event_notifier(notifier, on_read)
    ctx.poll(False)
    notifier.set()
    assert ctx.poll(True) is True
    assert rec.names() == ["r"]
    assert not guard.fired


def test_flush_a_self_setting_notifier(ctx: AioContext, notifier: EventNotifier) -> None:
    # QEMU's test_flush_event_notifier: the callback re-sets the notifier
    # until its count runs out; polling until no progress flushes it all.
    state = {"n": 0, "active": 10}

    def on_read(n: EventNotifier) -> None:
        assert n.test_and_clear()
        state["n"] += 1
        state["active"] -= 1
        if state["active"] > 0:
            n.set()

    ctx.set_event_notifier(notifier, on_read)
    notifier.set()
    polls = 0
    while ctx.poll(False):
        polls += 1
        assert polls <= 50, "the notifier never went quiet"
    assert state == {"n": 10, "active": 0}
    assert polls == 10
    ctx.set_event_notifier(notifier, None)
    assert ctx.poll(False) is False


def test_external_notifier_is_quiesced(ctx: AioContext, notifier: EventNotifier) -> None:
    rec = Recorder()
    ctx.set_event_notifier(notifier, rec.cb("read"), is_external=True)
    notifier.set()
    ctx.disable_external()
    assert ctx.poll(False) is False
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.count("read") == 1


def test_closed_notifier_is_refused(ctx: AioContext, registry: PluginRegistry) -> None:
    e = EventNotifier(registry=registry)
    e.close()
    before = ctx.handler_fds()
    with pytest.raises(ValueError, match="notifier"):
        ctx.set_event_notifier(e, lambda _n: None)
    assert ctx.handler_fds() == before


def test_non_notifier_is_refused(ctx: AioContext) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(TypeError, match="notifier"):
            ctx.set_event_notifier(r, lambda _n: None)  # type: ignore[arg-type]
        assert r not in ctx.handler_fds()
    finally:
        os.close(r)
        os.close(w)


# -- notify() in the home thread (SPEC 6) --------------------------------------


def test_notify_before_a_blocking_poll_makes_it_return(ctx: AioContext) -> None:
    guard = Guard(ctx)
    ctx.poll(False)
    ctx.notify()
    assert ctx.poll(True) is False
    assert not guard.fired


@pytest.mark.parametrize("accept_with", ["poll(False)", "poll(True)"])
def test_every_poll_accepts_the_notification(ctx: AioContext, accept_with: str) -> None:
    fired: list[int] = []
    timer = ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1))
    timer.mod(clock_get_ns(Clock.REALTIME) // 1_000_000 + 30)
    ctx.poll(False)
    ctx.notify()
    ctx.notify()
    assert ctx.poll(accept_with == "poll(True)") is False
    assert fired == []
    # Accepted: the next blocking poll sleeps until the timer.
    assert ctx.poll(True) is True
    assert fired == [1]


def test_notify_from_a_callback_wakes_the_next_blocking_poll(ctx: AioContext) -> None:
    guard = Guard(ctx)
    ctx.poll(False)
    ctx.bh_schedule_oneshot(lambda _o: ctx.notify())
    assert ctx.poll(True) is True
    assert ctx.poll(True) is False
    assert not guard.fired


def test_blocking_poll_sleeps_when_nothing_is_due(ctx: AioContext) -> None:
    fired: list[int] = []
    timer = ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1))
    deadline = clock_get_ns(Clock.REALTIME) // 1_000_000 + 20
    timer.mod(deadline)
    n = poll_until(ctx, lambda: bool(fired), blocking=True, max_polls=20)
    # One poll accepts the arming's notification, one sleeps until the timer.
    assert 1 <= n <= 2
    assert clock_get_ns(Clock.REALTIME) >= deadline * 1_000_000


def test_a_closed_notifier_can_still_be_removed_through_itself(ctx: AioContext) -> None:
    """SPEC 4: ``set_event_notifier(e, None)`` removes it, closed or not.

    Closing it first is the caller's mistake (SPEC 3), but once closed its
    ``fileno()`` raises, so the removal raised too and the stale handler
    could be removed only by a caller who had kept the fd number.
    """
    e = EventNotifier()
    other = EventNotifier()
    try:
        fd = e.fileno()
        ctx.set_event_notifier(e, lambda n: n.test_and_clear())
        ctx.set_event_notifier_poll(e, lambda n: None, lambda n: None)
        e.close()
        with pytest.raises(ValueError, match="notifier is closed"):
            ctx.set_event_notifier(e, lambda n: None)  # only a removal is accepted
        assert fd in ctx.handler_fds()
        ctx.set_event_notifier_poll(e, None, None)
        ctx.set_event_notifier(e, None)
        assert fd not in ctx.handler_fds()
        ctx.set_event_notifier(e, None)  # idempotent, like any removal
        other.close()
        ctx.set_event_notifier(other, None)  # never registered here: nothing to do
        ctx.poll(False)
    finally:
        e.close()
        other.close()
