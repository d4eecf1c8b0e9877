"""IOThread: lifecycle, arguments, poll parameters while running, no leaks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import aiocore
from aiocore import IOThread, run_in_context
from tests.conftest import open_fds

from ._support import join_all

Make = Callable[..., IOThread]


def test_start_gives_a_context_whose_home_is_the_thread(iothreads: Make, backend: str) -> None:
    io = iothreads(name="io-a", backend=backend)
    assert io.name == "io-a"
    assert io.is_alive()
    assert io.thread is not None and io.thread.name == "io-a"
    ctx = io.ctx
    assert not ctx.in_home_thread()
    assert run_in_context(ctx, ctx.in_home_thread, timeout=5) is True
    assert run_in_context(ctx, threading.current_thread, timeout=5) is io.thread
    # The requested backend, or what auto picked (poll or epoll).
    assert ctx.backend_name == backend or backend == "auto"
    assert ctx.poll_max_ns == 32768  # the IOThread default (SPEC 5)


def test_stop_closes_the_context_joins_and_is_idempotent(backend: str, registry: object) -> None:
    io = IOThread(backend=backend, registry=registry)  # type: ignore[arg-type]
    io.start()
    ctx = io.ctx
    io.stop(timeout=10)
    assert not io.is_alive()
    assert ctx.closed
    assert io.ctx is ctx  # still there, closed
    io.stop(timeout=10)  # idempotent
    io.stop()
    with pytest.raises(RuntimeError, match="closed"):
        ctx.bh_schedule_oneshot(lambda _: None)
    with pytest.raises(RuntimeError, match="only be started once"):
        io.start()


def test_context_manager(registry: aiocore.PluginRegistry) -> None:
    with IOThread(name="cm", registry=registry) as io:
        assert io.is_alive()
        ctx = io.ctx
        assert run_in_context(ctx, lambda: 42, timeout=5) == 42
    assert not io.is_alive()
    assert ctx.closed


def test_ctx_before_start_and_stop_before_start(registry: aiocore.PluginRegistry) -> None:
    io = IOThread(registry=registry)
    with pytest.raises(RuntimeError, match="call start"):
        io.ctx  # noqa: B018
    io.stop()  # a no-op that retires it
    with pytest.raises(RuntimeError, match="only be started once"):
        io.start()
    assert io.thread is None


def test_bhs_scheduled_before_stop_run_first(iothreads: Make) -> None:
    io = iothreads()
    ran: list[int] = []
    gate = threading.Event()
    # Hold the loop inside a BH so that everything below queues behind it.
    io.ctx.bh_schedule_oneshot(lambda _: gate.wait(5))
    for i in range(100):
        io.ctx.bh_schedule_oneshot(ran.append, i)
    stopper = threading.Thread(target=io.stop, kwargs={"timeout": 10})
    stopper.start()
    gate.set()
    join_all([stopper], 10)
    assert ran == list(range(100))
    assert io.ctx.closed


def test_stop_from_inside_the_iothread(iothreads: Make) -> None:
    io = iothreads()
    ctx = io.ctx
    ctx.bh_schedule_oneshot(lambda _: io.stop())
    io.thread.join(10)  # type: ignore[union-attr]
    assert not io.is_alive()
    assert ctx.closed
    io.stop(timeout=5)


def test_concurrent_stops(iothreads: Make) -> None:
    io = iothreads()
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            io.stop(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    stoppers = [threading.Thread(target=stop) for _ in range(8)]
    for t in stoppers:
        t.start()
    join_all(stoppers, 15)
    assert not errors
    assert not io.is_alive()


def test_stop_timeout_while_a_callback_runs(iothreads: Make) -> None:
    io = iothreads()
    release = threading.Event()
    io.ctx.bh_schedule_oneshot(lambda _: release.wait(10))
    with pytest.raises(TimeoutError, match="did not stop within"):
        io.stop(timeout=0.05)
    assert io.is_alive()
    release.set()
    io.stop(timeout=10)
    assert not io.is_alive()


def test_a_loop_that_dies_is_reported_by_stop(iothreads: Make) -> None:
    io = iothreads()

    def reraise(_ctx: aiocore.AioContext, exc: BaseException) -> None:
        raise exc

    run_in_context(io.ctx, io.ctx.set_exception_handler, reraise, timeout=5)
    io.ctx.bh_schedule_oneshot(lambda _: 1 / 0)
    io.thread.join(10)  # type: ignore[union-attr]
    assert not io.is_alive()
    assert io.ctx.closed  # no fd left behind even so
    with pytest.raises(RuntimeError, match="its loop died") as info:
        io.stop(timeout=5)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    io.stop(timeout=5)  # reported once


def test_failed_start_raises_in_caller_and_leaves_no_thread(
    registry: aiocore.PluginRegistry, no_fd_leak: None
) -> None:
    before = set(threading.enumerate())
    io = IOThread(backend="no-such-backend", registry=registry)
    with pytest.raises(aiocore.UnknownBackendError, match="no-such-backend"):
        io.start()
    assert set(threading.enumerate()) == before
    assert not io.is_alive()
    io.stop()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"name": 3}, TypeError, "name must be a str"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"backend": 5}, TypeError, "backend must be a backend name"),
        ({"backend": ["epoll", 1]}, TypeError, "backend must be a backend name"),
        ({"poll_max_ns": -1}, ValueError, "poll_max_ns must be >= 0"),
        ({"poll_max_ns": 1.5}, TypeError, "poll_max_ns must be an int"),
        ({"poll_grow": True}, TypeError, "poll_grow must be an int"),
        ({"poll_shrink": -2}, ValueError, "poll_shrink must be >= 0"),
        ({"registry": "default"}, TypeError, "registry must be a PluginRegistry"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    before = set(threading.enumerate())
    with pytest.raises(exc, match=match):
        IOThread(**kwargs)  # type: ignore[arg-type]
    assert set(threading.enumerate()) == before


def test_stop_bad_timeout(iothreads: Make) -> None:
    io = iothreads()
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="timeout must be None or a number >= 0"):
            io.stop(timeout=bad)
    for wrong in ("1", True):
        with pytest.raises(TypeError, match="timeout must be None or a number of seconds"):
            io.stop(timeout=wrong)  # type: ignore[arg-type]
    assert io.is_alive()  # nothing changed


def test_poll_params_change_while_running(iothreads: Make, backend: str) -> None:
    """set_poll_params() from another thread while the loop polls and adapts."""
    io = iothreads(backend=backend, poll_max_ns=32768)
    ctx = io.ctx
    notifier = aiocore.EventNotifier()
    hits = [0]

    def io_read(e: aiocore.EventNotifier) -> None:
        e.test_and_clear()
        hits[0] += 1

    def io_poll(e: aiocore.EventNotifier) -> bool:
        return False

    # A handler with io_poll keeps poll mode allowed, so the window adapts.
    run_in_context(ctx, ctx.set_event_notifier, notifier, io_read, io_poll, timeout=5)
    try:
        deadline = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < deadline:
            n += 1
            notifier.set()  # wake-ups of a few us: the window grows
            if n % 50 == 0:
                ctx.set_poll_params(0, 0, 0)
                ctx.set_poll_params(32768, 2, 2)
            time.sleep(0.0001)
        ctx.set_poll_params(0, 0, 0)
        # With polling off, the window must be 0 and stay 0: no stale window
        # stored by a racing adjustment (it would busy-poll forever).
        for _ in range(20):
            notifier.set()
            time.sleep(0.001)
        assert run_in_context(ctx, lambda: (ctx.poll_max_ns, ctx.poll_ns), timeout=5) == (0, 0)
        assert hits[0] > 0
        with pytest.raises(ValueError, match="max_ns must be >= 0"):
            ctx.set_poll_params(-1, 0, 0)
        assert ctx.poll_max_ns == 0
    finally:
        run_in_context(ctx, ctx.set_event_notifier, notifier, None, timeout=5)
        notifier.close()


def test_200_iothreads_leave_no_thread_and_no_fd(
    registry: aiocore.PluginRegistry, no_fd_leak: None
) -> None:
    before_threads = set(threading.enumerate())
    before_fds = open_fds()
    deadline = time.monotonic() + 60
    for i in range(200):
        io = IOThread(name=f"leak-{i}", registry=registry)
        io.start()
        if i % 2:
            assert run_in_context(io.ctx, lambda: 1, timeout=5) == 1
        io.stop(timeout=10)
        assert time.monotonic() < deadline
    # Also many at once: 20 alive together, 5 rounds.
    for _round in range(5):
        group = [IOThread(registry=registry).start() for _ in range(20)]
        assert len(open_fds()) > len(before_fds)
        for io in group:
            io.stop(timeout=10)
    assert set(threading.enumerate()) == before_threads
    assert open_fds() == before_fds
