"""SPEC section 12 (lifecycle): close, the context manager, use after close.

``close()`` releases every OS resource (no fd leak, also over many contexts
with handlers, BHs and timers), is idempotent, leaves the users' own fds
open; afterwards every method but ``close()`` raises ``RuntimeError``, and so
do ``schedule``/``schedule_idle`` on its BHs and ``mod``/``mod_ns``/
``mod_anticipate`` on its timers, while ``cancel``/``delete`` stay harmless
no-ops; process-wide clock changes no longer reach it.  ``with AioContext(...)``
returns the context and closes it, also on an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from aiocore import (
    SCALE_MS,
    AioContext,
    Clock,
    EventNotifier,
    PluginRegistry,
    clock_enable,
    virtual_clock_step,
)

from ._support import Pair, make_pipe


def _noop(_opaque: object) -> None:
    return None


def busy_context(backend: str, registry: PluginRegistry, pair: Pair) -> AioContext:
    """A context with a handler, poll hooks, a scheduled BH and an armed timer."""
    ctx = AioContext(backend=backend, registry=registry, poll_max_ns=10_000)
    ctx.set_fd_handler(pair.a, _noop, _noop, lambda _o: False)
    ctx.set_fd_poll(pair.a, _noop, _noop)
    ctx.bh_new(_noop).schedule()
    ctx.timer_new_ms(Clock.REALTIME, _noop).mod(10**9)
    ctx.poll(False)
    return ctx


def test_close_releases_every_fd(backend: str, registry: PluginRegistry, no_fd_leak: None) -> None:
    pair = Pair()
    try:
        for _ in range(50):
            ctx = busy_context(backend, registry, pair)
            ctx.close()
    finally:
        pair.close()


def test_many_contexts_leak_nothing(
    backend: str, registry: PluginRegistry, no_fd_leak: None
) -> None:
    for _ in range(200):
        AioContext(backend=backend, registry=registry).close()


def test_close_is_idempotent(backend: str, registry: PluginRegistry) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    assert not ctx.closed
    ctx.close()
    assert ctx.closed
    ctx.close()
    assert ctx.closed


def test_close_leaves_the_users_fds_open(backend: str, registry: PluginRegistry) -> None:
    pair = Pair()
    e = EventNotifier(registry=registry)
    try:
        ctx = AioContext(backend=backend, registry=registry)
        ctx.set_fd_handler(pair.a, _noop)
        ctx.set_event_notifier(e, _noop)
        ctx.close()
        pair.send_to_a(b"still open")
        assert pair.read_a() == b"still open"
        e.set()
        assert e.test_and_clear() is True
    finally:
        e.close()
        pair.close()


def test_context_manager(backend: str, registry: PluginRegistry, no_fd_leak: None) -> None:
    with AioContext(backend=backend, registry=registry) as ctx:
        assert isinstance(ctx, AioContext)
        assert not ctx.closed
        ctx.bh_schedule_oneshot(_noop)
        assert ctx.poll(False) is True
    assert ctx.closed
    with pytest.raises(RuntimeError):
        ctx.poll(False)


def test_context_manager_closes_on_exception(
    backend: str, registry: PluginRegistry, no_fd_leak: None
) -> None:
    with (
        pytest.raises(LookupError, match="inside"),
        AioContext(backend=backend, registry=registry) as ctx,
    ):
        raise LookupError("inside")
    assert ctx.closed


def _methods(pair: Pair, e: EventNotifier) -> dict[str, Callable[[AioContext], Any]]:
    return {
        "poll(False)": lambda c: c.poll(False),
        "poll(True)": lambda c: c.poll(True),
        "notify": lambda c: c.notify(),
        "set_fd_handler": lambda c: c.set_fd_handler(pair.a, _noop),
        "set_fd_handler(remove)": lambda c: c.set_fd_handler(pair.a, None),
        "set_fd_poll": lambda c: c.set_fd_poll(pair.a, _noop, _noop),
        "set_event_notifier": lambda c: c.set_event_notifier(e, _noop),
        "set_event_notifier_poll": lambda c: c.set_event_notifier_poll(e, _noop, _noop),
        "bh_new": lambda c: c.bh_new(_noop),
        "bh_schedule_oneshot": lambda c: c.bh_schedule_oneshot(_noop),
        "timer_new": lambda c: c.timer_new(Clock.REALTIME, SCALE_MS, _noop),
        "timer_new_ns": lambda c: c.timer_new_ns(Clock.REALTIME, _noop),
        "timer_new_us": lambda c: c.timer_new_us(Clock.REALTIME, _noop),
        "timer_new_ms": lambda c: c.timer_new_ms(Clock.REALTIME, _noop),
        "set_poll_params": lambda c: c.set_poll_params(1000, 2, 2),
        "disable_external": lambda c: c.disable_external(),
        "enable_external": lambda c: c.enable_external(),
        "acquire": lambda c: c.acquire(),
        "release": lambda c: c.release(),
        "set_exception_handler": lambda c: c.set_exception_handler(None),
        "in_home_thread": lambda c: c.in_home_thread(),
        "handler_fds": lambda c: c.handler_fds(),
        "backend_statistics": lambda c: c.backend_statistics(),
        "backend_name": lambda c: c.backend_name,
        "__enter__": lambda c: c.__enter__(),
    }


METHOD_NAMES = list(_methods(None, None).keys())  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_raises_after_close(
    backend: str, registry: PluginRegistry, method: str
) -> None:
    pair = Pair()
    e = EventNotifier(registry=registry)
    try:
        ctx = AioContext(backend=backend, registry=registry)
        ctx.set_fd_handler(pair.a, _noop)
        ctx.close()
        with pytest.raises(RuntimeError):
            _methods(pair, e)[method](ctx)
    finally:
        e.close()
        pair.close()


def test_method_table_covers_the_public_api() -> None:
    public = {
        name
        for name in dir(AioContext)
        if not name.startswith("_") and callable(getattr(AioContext, name))
    }
    covered = {name.split("(")[0] for name in METHOD_NAMES}
    assert public - covered - {"close"} == set()


def test_bh_after_close(backend: str, registry: PluginRegistry) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    scheduled = ctx.bh_new(_noop)
    scheduled.schedule()
    idle = ctx.bh_new(_noop)
    ctx.close()
    for bh in (scheduled, idle):
        with pytest.raises(RuntimeError):
            bh.schedule()
        with pytest.raises(RuntimeError):
            bh.schedule_idle()
        bh.cancel()
        bh.delete()
        bh.cancel()


def test_timer_after_close(backend: str, registry: PluginRegistry) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    armed = ctx.timer_new_ms(Clock.REALTIME, _noop)
    armed.mod(10**9)
    idle = ctx.timer_new_ns(Clock.VIRTUAL, _noop)
    ctx.close()
    for timer in (armed, idle):
        with pytest.raises(RuntimeError):
            timer.mod(1)
        with pytest.raises(RuntimeError):
            timer.mod_ns(1)
        with pytest.raises(RuntimeError):
            timer.mod_anticipate(1)
        timer.delete()
        timer.delete()


def test_clock_changes_do_not_reach_a_closed_context(
    backend: str, registry: PluginRegistry
) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    ctx.close()
    virtual_clock_step(10)
    clock_enable(Clock.VIRTUAL, True)
    clock_enable(Clock.VIRTUAL, False)


def test_close_with_a_pending_oneshot_and_external_disabled(
    backend: str, registry: PluginRegistry, no_fd_leak: None
) -> None:
    r, w = make_pipe()
    try:
        ctx = AioContext(backend=backend, registry=registry)
        ctx.set_fd_handler(r, _noop, is_external=True)
        ctx.disable_external()
        ctx.bh_schedule_oneshot(_noop)
        ctx.close()
        assert ctx.closed
    finally:
        os.close(r)
        os.close(w)
