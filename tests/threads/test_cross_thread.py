"""The cross-thread API: run_in_context, wrong-thread poll, acquire(), timers, notify.

Each wake-up test blocks the home thread in ``poll(True)`` with nothing else
due, so only the cross-thread action can wake it; a :class:`Watchdog` turns a
lost wake-up into a failure instead of a hang.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import aiocore
from aiocore import SCALE_MS, AioContext, Clock, IOThread, clock_get_ns, run_in_context
from aiocore._pollmode import PollMode

from ..conftest import skip_or_fail_unavailable
from ._support import Watchdog, join_all

Make = Callable[..., IOThread]


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, to widen race windows."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _in_thread(fn: Callable[[], object], delay: float = 0.02) -> threading.Thread:
    """Run *fn* in a new thread after *delay* s (so the home thread is blocked by then)."""

    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run, name="waker")
    t.start()
    return t


# -- run_in_context (QEMU's aio_wait_bh_oneshot) -------------------------------


def test_run_in_context_returns_the_result(iothreads: Make, backend: str) -> None:
    io = iothreads(backend=backend)
    assert run_in_context(io.ctx, pow, 2, 10) == 1024
    assert run_in_context(io.ctx, threading.current_thread, timeout=5) is io.thread
    assert run_in_context(io.ctx, lambda: None) is None


def test_run_in_context_reraises_the_exception(iothreads: Make) -> None:
    io = iothreads()

    def fails(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError) as info:
        run_in_context(io.ctx, fails, 7, timeout=5)
    assert info.value.args == (7,)
    assert "fails" in "".join(__import__("traceback").format_tb(info.value.__traceback__))
    # The loop went on.
    assert run_in_context(io.ctx, lambda: "alive", timeout=5) == "alive"


def test_run_in_context_from_the_home_thread_just_calls(ctx: AioContext) -> None:
    seen: list[int] = []

    # No poll() is running: a BH would never run; a direct call does.
    def direct() -> str:
        seen.append(1)
        return "direct"

    assert run_in_context(ctx, direct) == "direct"
    assert seen == [1]
    with pytest.raises(ZeroDivisionError):
        run_in_context(ctx, lambda: 1 / 0)


def test_run_in_context_nested_from_inside_the_context(iothreads: Make) -> None:
    io = iothreads()
    ctx = io.ctx
    assert run_in_context(ctx, lambda: run_in_context(ctx, lambda: 5) + 1, timeout=5) == 6


def test_run_in_context_timeout_before_start_never_runs(ctx: AioContext) -> None:
    # The home thread (this one) is not polling, so fn cannot start.
    ran: list[int] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            run_in_context(ctx, ran.append, 1, timeout=0.1)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    join_all([t], 10)
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    assert "did not start" in str(errors[0]) and "will not run" in str(errors[0])
    ctx.poll(False)  # the BH pass now skips the abandoned call
    assert ran == []


def test_run_in_context_timeout_while_running(iothreads: Make) -> None:
    io = iothreads()
    release = threading.Event()
    with pytest.raises(TimeoutError, match="still running"):
        run_in_context(io.ctx, release.wait, 10, timeout=0.1)
    release.set()
    assert run_in_context(io.ctx, lambda: 1, timeout=5) == 1


def test_run_in_context_context_closed_while_waiting(registry: aiocore.PluginRegistry) -> None:
    io = IOThread(registry=registry).start()
    gate = threading.Event()
    io.ctx.bh_schedule_oneshot(lambda _: gate.wait(10))  # hold the loop
    io.ctx.bh_schedule_oneshot(lambda _: io.stop())  # stop from inside: no join
    results: list[BaseException] = []

    def caller() -> None:
        try:
            run_in_context(io.ctx, lambda: None)  # queued behind the stop
        except BaseException as exc:
            results.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    time.sleep(0.05)
    gate.set()
    join_all([t], 10)
    io.stop(timeout=10)
    # Either it was queued in time and ran (the pass that ran the stop runs
    # it too), or it was refused / dropped: never a hang.
    assert results == [] or isinstance(results[0], RuntimeError), results


def test_run_in_context_closed_context(ctx: AioContext) -> None:
    ctx.close()
    with pytest.raises(RuntimeError, match="closed"):
        run_in_context(ctx, lambda: None)


def test_run_in_context_base_exception_stops_the_loop_and_tells_the_caller(
    iothreads: Make,
) -> None:
    io = iothreads()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(RuntimeError, match="interrupted by KeyboardInterrupt") as info:
        run_in_context(io.ctx, interrupt, timeout=5)
    assert isinstance(info.value.__cause__, KeyboardInterrupt)
    io.thread.join(10)  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="its loop died"):
        io.stop(timeout=5)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("ctx", print), {}, TypeError, "ctx must be an AioContext"),
        ((None, 3), {}, TypeError, "fn must be a callable"),
        ((None, print), {"timeout": "1"}, TypeError, "timeout must be None or a number"),
        ((None, print), {"timeout": -1}, ValueError, "or a number >= 0"),
        ((None, print), {"timeout": float("nan")}, ValueError, "or a number >= 0"),
    ],
)
def test_run_in_context_bad_arguments(
    ctx: AioContext,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    exc: type[Exception],
    match: str,
) -> None:
    real = tuple(ctx if a is None else a for a in args)
    with pytest.raises(exc, match=match):
        run_in_context(*real, **kwargs)  # type: ignore[arg-type]
    assert not ctx._bhs.pending  # nothing was scheduled


# -- home thread ---------------------------------------------------------------


def test_poll_from_another_thread_raises(ctx: AioContext) -> None:
    errors: list[BaseException] = []

    def other() -> None:
        for blocking in (True, False):
            try:
                ctx.poll(blocking)
            except BaseException as exc:
                errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    join_all([t], 10)
    assert len(errors) == 2
    assert all(isinstance(e, RuntimeError) and "home thread" in str(e) for e in errors)
    ctx.poll(False)  # the home thread still may


def test_poll_from_another_thread_than_an_iothreads(iothreads: Make) -> None:
    io = iothreads()
    with pytest.raises(RuntimeError, match="home thread"):
        io.ctx.poll(False)


# -- wake-ups from another thread (SPEC 6, 11) --------------------------------


def _block_until(ctx: AioContext, cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    """poll(True) until cond(); return whether the watchdog had to rescue us."""
    with Watchdog(ctx, seconds) as dog:
        for _ in range(1000):
            if cond():
                break
            ctx.poll(True)
    return dog.fired


def test_bh_schedule_from_another_thread_wakes(ctx: AioContext) -> None:
    ctx.poll(False)
    ran: list[str] = []
    bh = ctx.bh_new(ran.append, "bh")
    t = _in_thread(bh.schedule)
    assert not _block_until(ctx, lambda: bool(ran))
    join_all([t], 5)
    assert ran == ["bh"]


def test_oneshot_from_another_thread_wakes(ctx: AioContext) -> None:
    ctx.poll(False)
    ran: list[str] = []
    t = _in_thread(lambda: ctx.bh_schedule_oneshot(ran.append, "once"))
    assert not _block_until(ctx, lambda: bool(ran))
    join_all([t], 5)
    assert ran == ["once"]


def test_notify_from_another_thread_wakes(ctx: AioContext) -> None:
    ctx.poll(False)
    flag: list[bool] = []

    def wake() -> None:
        flag.append(True)  # publish, then notify (SPEC 6)
        ctx.notify()

    t = _in_thread(wake)
    assert not _block_until(ctx, lambda: bool(flag))
    join_all([t], 5)


def test_timer_moved_earlier_from_another_thread_wakes(ctx: AioContext) -> None:
    fired: list[int] = []
    timer = ctx.timer_new_ms(Clock.REALTIME, fired.append, 1)
    far = clock_get_ns(Clock.REALTIME) // SCALE_MS + 3_600_000
    timer.mod(far)  # an hour away: the loop computes a long timeout
    ctx.poll(False)
    start = time.monotonic()
    t = _in_thread(lambda: timer.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + 5))
    assert not _block_until(ctx, lambda: bool(fired))
    join_all([t], 5)
    assert fired == [1]
    assert time.monotonic() - start < 2.0


def test_timer_anticipated_from_another_thread_wakes(ctx: AioContext) -> None:
    fired: list[int] = []
    timer = ctx.timer_new_ns(Clock.REALTIME, fired.append, 1)
    timer.mod_ns(clock_get_ns(Clock.REALTIME) + 3600 * 10**9)
    ctx.poll(False)
    t = _in_thread(lambda: timer.mod_anticipate_ns(clock_get_ns(Clock.REALTIME)))
    assert not _block_until(ctx, lambda: bool(fired))
    join_all([t], 5)


def test_acquire_lets_another_thread_add_a_handler(ctx: AioContext) -> None:
    """A handler added under acquire() while the home thread is blocked wakes it and runs."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.send(b"x")  # readable from the start: the new handler must run at once
    got: list[bytes] = []
    ctx.poll(False)

    def add() -> None:
        ctx.acquire()
        try:
            ctx.set_fd_handler(a, lambda s: got.append(s.recv(1)), opaque=a)
        finally:
            ctx.release()

    t = _in_thread(add)
    try:
        assert not _block_until(ctx, lambda: bool(got))
        join_all([t], 5)
        assert got == [b"x"]
    finally:
        ctx.set_fd_handler(a, None)
        a.close()
        b.close()


def test_acquire_lets_another_thread_remove_and_replace_handlers(ctx: AioContext) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    calls: list[str] = []
    ctx.set_fd_handler(a, lambda s: calls.append("old"), opaque=a)
    ctx.poll(False)

    def replace() -> None:
        def new(s: socket.socket) -> None:
            calls.append("new")
            s.recv(1)

        with _held(ctx):
            ctx.set_fd_handler(a, new, opaque=a)
        b.send(b"y")

    t = _in_thread(replace)
    try:
        assert not _block_until(ctx, lambda: bool(calls))
        join_all([t], 5)
        assert calls == ["new"]
        # Removal from another thread: the handler is never called afterwards.
        t = _in_thread(lambda: _remove(ctx, a), delay=0)
        join_all([t], 5)
        b.send(b"z")
        for _ in range(3):
            ctx.poll(False)
        assert calls == ["new"]
        assert a.fileno() not in ctx.handler_fds()
    finally:
        if a.fileno() in ctx.handler_fds():
            ctx.set_fd_handler(a, None)
        a.close()
        b.close()


class _held:
    def __init__(self, ctx: AioContext) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        self.ctx.acquire()

    def __exit__(self, *exc: object) -> None:
        self.ctx.release()


def _remove(ctx: AioContext, fd: socket.socket) -> None:
    with _held(ctx):
        ctx.set_fd_handler(fd, None)


def test_set_fd_handler_from_another_thread_needs_acquire(ctx: AioContext) -> None:
    errors: list[BaseException] = []
    r, w = os.pipe()

    def other() -> None:
        try:
            ctx.set_fd_handler(r, print)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    join_all([t], 5)
    try:
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        assert "acquire()" in str(errors[0])
        assert ctx.handler_fds() == []
    finally:
        os.close(r)
        os.close(w)


def test_acquire_is_recursive_and_release_checks_the_owner(ctx: AioContext) -> None:
    ctx.acquire()
    ctx.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            ctx.release()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    join_all([t], 5)
    assert len(errors) == 1 and "does not hold" in str(errors[0])
    ctx.release()
    ctx.release()
    got: list[bool] = []

    def take() -> None:
        with _held(ctx):
            got.append(True)

    t = threading.Thread(target=take)
    t.start()
    join_all([t], 5)
    assert got == [True]


# -- races fixed in the core (each test failed before its fix) ----------------


class _PausingNotifier:
    """Stands in for a context's internal notifier; set() pauses like a preempted thread."""

    def __init__(self, real: aiocore.EventNotifier) -> None:
        self.real = real
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.wrote_to_closed: bool | None = None

    def set(self) -> None:
        self.paused.set()
        self.resume.wait(0.5)
        self.wrote_to_closed = self.real.closed
        if not self.real.closed:
            self.real.set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_notify_kick_racing_close_never_writes_a_closed_notifier(
    registry: aiocore.PluginRegistry,
) -> None:
    """A notify() preempted just before its kick must not write after close().

    Before the fix the kick was unsynchronised: close() completed while the
    waker was paused, and the kick then wrote to the closed notifier (or to
    an unrelated file that had reused its fd number).
    """
    # The context's home thread ("closer") makes it and, when told, closes
    # it (close() belongs to the home thread), while this thread steers.
    made: list[AioContext] = []
    ready, go = threading.Event(), threading.Event()

    def home() -> None:
        made.append(AioContext(registry=registry))
        ready.set()
        if go.wait(10):
            made[0].close()

    closer = threading.Thread(target=home)
    closer.start()
    assert ready.wait(5)
    ctx = made[0]
    proxy = _PausingNotifier(ctx._event)
    ctx._event = proxy  # type: ignore[assignment]
    ctx._notify_me = 2  # as if a blocking poll() were announced
    waker = threading.Thread(target=ctx.notify)
    waker.start()
    assert proxy.paused.wait(5)
    ctx._notify_me = 0  # that poll() returned
    go.set()
    closer.join(0.2)
    proxy.resume.set()
    join_all([waker, closer], 10)
    assert ctx.closed
    assert proxy.wrote_to_closed is False


def test_set_params_is_not_undone_by_a_racing_adjust(fast_switching: None) -> None:
    """PollMode as poll() drives it, against set_poll_params() from another thread.

    Before the fix, an adjust() that had read the old parameters stored its
    window after set_params(0, 0, 0): polling off (so never adjusted again)
    with a non-zero window, i.e. busy-polling for good.
    """
    pm = PollMode(32768, 0, 0)
    stop = threading.Event()

    def home_thread() -> None:
        for _ in range(10_000_000):
            if stop.is_set():
                return
            if pm.max_ns:  # as poll() does
                pm.adjust(5000 if pm.ns == 0 else 100_000)  # grow, shrink, grow...

    t = threading.Thread(target=home_thread)
    t.start()
    stale = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            pm.set_params(0, 0, 0)
            time.sleep(0.00005)
            if pm.ns:
                stale += 1
            pm.set_params(32768, 0, 0)
            time.sleep(0.00005)
    finally:
        stop.set()
        join_all([t], 10)
    assert stale == 0


def test_handlers_added_from_another_thread_during_auto_upgrade(
    registry: aiocore.PluginRegistry, tmp_path: Path, fast_switching: None
) -> None:
    """auto's poll->epoll upgrade must not race a set_fd_handler() under acquire().

    Before the fix, poll() ran the upgrade without the handler lock: it raised
    'dictionary changed size during iteration', or an fd added between the
    migration and the switch was never watched by epoll (its handler never ran).
    """
    reason = registry.probe("epoll")
    if reason is not None:
        skip_or_fail_unavailable("epoll", reason)
    (tmp_path / "aiocore.toml").write_text(
        '[backends.auto]\nepoll_threshold = 8\nio_uring = "never"\n'
    )
    deadline = time.monotonic() + 20
    for _trial in range(40):
        assert time.monotonic() < deadline
        ctx = AioContext("auto", registry=registry)
        pairs = [socket.socketpair() for _ in range(24)]
        fired: set[int] = set()
        done = threading.Event()

        def adder(
            ctx: AioContext,
            pairs: list[tuple[socket.socket, socket.socket]],
            fired: set[int],
            done: threading.Event,
        ) -> None:
            for i, (a, _b) in enumerate(pairs):
                with _held(ctx):
                    ctx.set_fd_handler(a, fired.add, opaque=i)
            done.set()
            ctx.notify()

        t = threading.Thread(target=adder, args=(ctx, pairs, fired, done))
        t.start()
        try:
            with Watchdog(ctx, 5) as dog:
                for _ in range(10_000):
                    if done.is_set():
                        break
                    ctx.poll(True)
            assert not dog.fired
            join_all([t], 5)
            for _a, b in pairs:
                b.send(b"x")
            for _ in range(100):
                if len(fired) == len(pairs):
                    break
                ctx.poll(False)
            assert fired == set(range(len(pairs)))
            assert ctx.backend_name == "epoll"
        finally:
            join_all([t], 5)
            for a, b in pairs:
                if a.fileno() in ctx.handler_fds():
                    ctx.set_fd_handler(a, None)
                a.close()
                b.close()
            ctx.close()
