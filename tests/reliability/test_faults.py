"""Fault injection: the loop survives what the world and its users do to it.

Each fault is injected on every backend where it applies, and each test checks
the same three things: the fault is reported the way SPEC says (once, through
the exception handler, or as a clear exception), the context's invariants
hold afterwards (a later ``poll()`` works, a blocking one still sleeps and
wakes, ``close()`` succeeds and leaks nothing), and nothing else is lost (other
handlers' readiness, scheduled BHs, armed timers).

What ``tests/conformance`` already covers is not repeated: a lone fd closed
while registered (``test_fd_handlers``), callbacks raising in every position
of one ``poll()`` (``test_errors``), a registration hook raising in an
installed distribution and ``aiocore_context_created`` raising
(``tests/unit/test_plugin_loading``), EMFILE at creation
(``tests/unit/test_leaks``).  Here: closed fds among live handlers and
notifiers, epoll refusing a regular file, EMFILE during auto's upgrade and
around plugin hooks, signals during every kind of blocking wait, callbacks
raising inside nested polls, plugins raising in every hook, backends raising
in every method, and io_uring's rings overflowing at context level.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins.poll import PollBackend

import aiocore
from aiocore import (
    AioContext,
    Clock,
    EventNotifier,
    PluginError,
    PluginRegistry,
    PluginWarning,
    _clocks,
    clock_enable,
    clock_get_ns,
)
from tests.conformance._support import ExcLog, Pair, WaitSpy, drain
from tests.conftest import _extra_plugins, open_fds, skip_or_fail_unavailable

from .harness import bounded

MS = 1_000_000


def _noop(_opaque: object) -> None:
    return None


def _realtime_timer(ctx: AioContext, ms: int) -> list[int]:
    """Arm a REALTIME timer *ms* from now; the returned list fills when it fires."""
    fired: list[int] = []
    t = ctx.timer_new_ns(Clock.REALTIME, lambda _o: fired.append(1))
    # In ns: a millisecond deadline would truncate "now" and fire up to 1 ms early.
    t.mod_ns(clock_get_ns(Clock.REALTIME) + ms * MS)
    return fired


def assert_sleeps_and_wakes(ctx: AioContext) -> None:
    """A blocking poll sleeps until a 30 ms timer, in at most two polls."""
    start = time.monotonic()  # before arming: the timer is due 30 ms after this
    fired = _realtime_timer(ctx, 30)
    ctx.poll(False)
    polls = 0
    with bounded(2.0, "poll(True) until a 30 ms timer"):
        while not fired and polls < 10:
            ctx.poll(True)
            polls += 1
    assert fired
    assert time.monotonic() - start >= 0.029
    assert polls <= 2, f"{polls} blocking polls for one 30 ms timer: a busy loop"


def assert_woken_from_another_thread(ctx: AioContext) -> None:
    """A blocking poll is woken by a BH another thread schedules 50 ms later."""
    ran: list[int] = []
    bh = ctx.bh_new(lambda _o: ran.append(1))
    timer = threading.Timer(0.05, bh.schedule)
    timer.start()
    try:
        with bounded(3.0, "poll(True) woken by another thread"):
            assert ctx.poll(True) is True
        assert ran == [1]
    finally:
        timer.join(3.0)
        bh.delete()


# -- fds closed while registered -------------------------------------------------------


@pytest.mark.parametrize("interest", ["read", "write", "notifier"])
def test_closed_fd_among_live_handlers(
    ctx: AioContext, registry: PluginRegistry, interest: str
) -> None:
    """The closed fd is reported once; the live handlers are dispatched every
    time; a blocking poll sleeps (few waits); removing it is the end of it."""
    exc = ExcLog()
    ctx.set_exception_handler(exc)
    live, doomed = Pair(), Pair()
    notifier = EventNotifier(registry=registry)
    got: list[bytes] = []
    try:
        ctx.set_fd_handler(live.a, lambda _o: got.append(drain(live.a)))
        if interest == "notifier":
            ctx.set_event_notifier(notifier, lambda e: e.test_and_clear())
            fd = notifier.fileno()
        else:
            fd = doomed.a
            if interest == "read":
                ctx.set_fd_handler(fd, _noop)
            else:
                ctx.set_fd_handler(fd, None, _noop)
        ctx.poll(False)
        ctx.poll(False)
        # Closed behind the context's back.  No fd is opened until the handler
        # is removed, so the number is not reused meanwhile.
        if interest == "notifier":
            notifier.close()
        else:
            doomed.sa.close()
        for i in range(5):
            live.send_to_a(bytes([65 + i]))
            assert ctx.poll(False) is True
        assert got == [b"A", b"B", b"C", b"D", b"E"]
        spy = WaitSpy(ctx)
        try:
            assert_sleeps_and_wakes(ctx)
            assert spy.calls <= 4, f"{spy.calls} waits for one 30 ms timer"
        finally:
            spy.restore()
        assert fd in ctx.handler_fds()  # stays registered until removed
        if interest == "notifier":
            ctx.set_event_notifier(notifier, None)  # through the notifier, closed or not
        else:
            ctx.set_fd_handler(fd, None)
        ctx.poll(False)
        assert len(exc.seen) == 1, exc.seen
        assert isinstance(exc.seen[0], OSError)
        assert f"fd {fd}" in str(exc.seen[0])
        live.send_to_a(b"Z")
        assert ctx.poll(False) is True
        assert got[-1] == b"Z"
        assert len(exc.seen) == 1
    finally:
        if live.a in ctx.handler_fds():
            ctx.set_fd_handler(live.a, None)
        live.close()
        doomed.close()
        notifier.close()


# -- epoll refusing a regular file -------------------------------------------------------


def _write_config(text: str) -> None:
    # The autouse fixture made the test's own temporary directory the cwd.
    Path("aiocore.toml").write_text(text)


@pytest.fixture
def regular_file(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "regular.bin"
    path.write_bytes(b"data")
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def _require(registry: PluginRegistry, *names: str) -> None:
    for name in names:
        reason = registry.probe(name)
        if reason is not None:
            skip_or_fail_unavailable(name, reason)


@pytest.mark.parametrize("where", ["top level", "from a callback"])
def test_auto_falls_back_to_poll_for_good_when_epoll_refuses_a_regular_file(
    registry: PluginRegistry,
    regular_file: int,
    caplog: pytest.LogCaptureFixture,
    no_fd_leak: None,
    where: str,
) -> None:
    _require(registry, "auto", "epoll")
    _write_config('[backends.auto]\nepoll_threshold = 2\nio_uring = "never"\n')
    pairs = [Pair() for _ in range(4)]
    calls: list[str] = []
    ctx = AioContext(backend="auto", registry=registry)
    try:
        ctx.set_fd_handler(pairs[0].a, lambda _o: calls.append("p0") or drain(pairs[0].a))
        ctx.set_fd_handler(pairs[1].a, lambda _o: calls.append("p1") or drain(pairs[1].a))
        ctx.poll(False)
        assert ctx.backend_name == "epoll"
        caplog.clear()

        def add_file(_opaque: object = None) -> None:
            ctx.set_fd_handler(regular_file, lambda _o: calls.append("file"))

        with caplog.at_level(logging.WARNING, logger="aiocore"):
            if where == "top level":
                pairs[1].send_to_a()
                add_file()
                assert ctx.backend_name == "poll"
                assert ctx.poll(False) is True
                assert sorted(calls) == ["file", "p1"]
            else:
                # Both sockets reported by one epoll wait; p0's callback adds
                # the file, so auto falls back in the middle of the dispatch.
                ctx.set_fd_handler(
                    pairs[0].a,
                    lambda _o: (calls.append("p0"), drain(pairs[0].a), add_file()),
                )
                ctx.poll(False)
                pairs[0].send_to_a()
                pairs[1].send_to_a()
                assert ctx.poll(False) is True
                assert ctx.backend_name == "poll"
                assert sorted(calls) == ["p0", "p1"]  # p1 not lost
                calls.clear()
                assert ctx.poll(False) is True
                assert calls == ["file"]  # the file is always readable
        assert "fell back to poll for good" in caplog.text
        assert f"epoll refused fd {regular_file}" in caplog.text
        # For good: more fds than the threshold, and it stays on poll.
        ctx.set_fd_handler(regular_file, None)
        for p in pairs[2:]:
            ctx.set_fd_handler(p.a, _noop)
        for _ in range(3):
            ctx.poll(False)
        assert ctx.backend_name == "poll"
        stats = ctx.backend_statistics()
        assert stats["final"] is True
        assert stats["upgrades"] == 1
    finally:
        for p in pairs:
            if p.a in ctx.handler_fds():
                ctx.set_fd_handler(p.a, None)
        ctx.close()
        for p in pairs:
            p.close()


def test_epoll_refuses_a_regular_file_clearly_and_changes_nothing(
    registry: PluginRegistry, regular_file: int, no_fd_leak: None
) -> None:
    _require(registry, "epoll")
    pair = Pair()
    got: list[bytes] = []
    with AioContext(backend="epoll", registry=registry) as ctx:
        try:
            ctx.set_fd_handler(pair.a, lambda _o: got.append(drain(pair.a)))
            before = (ctx.handler_fds(), ctx.backend_statistics())
            with pytest.raises(PermissionError, match="regular file") as info:
                ctx.set_fd_handler(regular_file, _noop)
            assert info.value.errno == errno.EPERM
            assert f"fd {regular_file}" in str(info.value)
            assert (ctx.handler_fds(), ctx.backend_statistics()) == before
            ctx.poll(False)
            pair.send_to_a(b"ok")
            assert ctx.poll(False) is True
            assert got == [b"ok"]
            assert ctx.backend_name == "epoll"
        finally:
            ctx.set_fd_handler(pair.a, None)
            pair.close()


# -- EMFILE ---------------------------------------------------------------------------


class _NoFds:
    """Fill every free descriptor slot and lower RLIMIT_NOFILE to what is open."""

    def __init__(self, spare: int = 0) -> None:
        self.spare = spare
        self.fillers: list[int] = []
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)

    def __enter__(self) -> _NoFds:
        top = max(open_fds())
        while True:
            fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            if fd > top:
                os.close(fd)
                break
            self.fillers.append(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1 + self.spare, self.limits[1]))
        return self

    def release(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)
        for fd in self.fillers:
            os.close(fd)
        self.fillers.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_auto_upgrade_under_emfile_is_postponed_then_done(
    registry: PluginRegistry, caplog: pytest.LogCaptureFixture, no_fd_leak: None
) -> None:
    _require(registry, "auto", "epoll")
    _write_config('[backends.auto]\nepoll_threshold = 2\nio_uring = "never"\n')
    pairs = [Pair() for _ in range(3)]
    got: list[str] = []
    ctx = AioContext(backend="auto", registry=registry)
    try:
        ctx.set_fd_handler(pairs[0].a, lambda _o: got.append("p0") or drain(pairs[0].a))
        with caplog.at_level(logging.WARNING, logger="aiocore"), _NoFds():
            ctx.set_fd_handler(pairs[1].a, lambda _o: got.append("p1") or drain(pairs[1].a))
            pairs[1].send_to_a()
            assert ctx.poll(False) is True  # the upgrade fails; the poll does not
            assert got == ["p1"]
            assert ctx.backend_name == "poll"
        assert "upgrade to epoll postponed" in caplog.text
        assert "Too many open files" in caplog.text
        # Descriptors are back: the next change retries, and it succeeds.
        ctx.set_fd_handler(pairs[2].a, _noop)
        pairs[0].send_to_a()
        assert ctx.poll(False) is True
        assert ctx.backend_name == "epoll"
        assert got == ["p1", "p0"]
    finally:
        for p in pairs:
            ctx.set_fd_handler(p.a, None)
        ctx.close()
        for p in pairs:
            p.close()


def test_emfile_at_creation_calls_no_hook_and_registers_no_clock_waker(
    backend: str,
) -> None:
    """A context that could not be created is invisible: no lifecycle hook
    ran for it and no clock change will try to wake it."""
    seen: list[str] = []
    plugin = types.SimpleNamespace(
        aiocore_context_created=lambda ctx: seen.append("created"),
        aiocore_context_closing=lambda ctx: seen.append("closing"),
    )
    reg = PluginRegistry(autoload=False, env={}, plugins=[*_extra_plugins(), ("watcher", plugin)])
    wakers = len(_clocks._wakers)
    before = open_fds()
    with _NoFds(), pytest.raises(OSError) as info:
        AioContext(backend=backend, registry=reg)
    assert info.value.errno == errno.EMFILE
    assert "Too many open files" in str(info.value)
    assert seen == []
    assert len(_clocks._wakers) == wakers
    assert open_fds() == before
    with AioContext(backend=backend, registry=reg):
        pass
    assert seen == ["created", "closing"]


def test_emfile_during_the_first_probe_is_not_remembered(backend: str) -> None:
    """Running out of descriptors is a moment, not a property of the system.

    Found by this file: a fresh registry's first probe of epoll (and of
    io_uring) ran under EMFILE, returned a reason, and the registry cached
    it, so the backend stayed "not available here" for the registry's life
    (BackendUnavailable instead of EMFILE; auto stayed on poll for good).
    """
    reg = PluginRegistry(autoload=False, env={}, plugins=_extra_plugins())
    with _NoFds(), pytest.raises(OSError) as info:
        AioContext(backend=backend, registry=reg)
    assert info.value.errno == errno.EMFILE, info.value
    assert not isinstance(info.value, aiocore.BackendUnavailable)
    with AioContext(backend=backend, registry=reg) as ctx:
        assert ctx.poll(False) is False


def test_auto_upgrade_when_epoll_is_first_probed_under_emfile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same through auto: the upgrade is postponed, not given up."""
    _write_config('[backends.auto]\nepoll_threshold = 2\nio_uring = "never"\n')
    reg = PluginRegistry(autoload=False, env={})
    pairs = [Pair() for _ in range(3)]
    ctx = AioContext(backend="auto", registry=reg)
    try:
        ctx.set_fd_handler(pairs[0].a, _noop)
        with caplog.at_level(logging.WARNING, logger="aiocore"), _NoFds():
            ctx.set_fd_handler(pairs[1].a, _noop)
            ctx.poll(False)
        assert "for good" not in caplog.text
        ctx.set_fd_handler(pairs[2].a, _noop)
        ctx.poll(False)
        assert ctx.backend_name == "epoll"
    finally:
        for p in pairs:
            ctx.set_fd_handler(p.a, None)
        ctx.close()
        for p in pairs:
            p.close()


@pytest.mark.parametrize("kind", [None, "eventfd", "pipe"])
def test_emfile_creating_a_notifier_with_no_fd_left(
    registry: PluginRegistry, kind: str | None
) -> None:
    if kind is not None and registry.notifiers[kind].cls.probe() is not None:
        pytest.skip(f"notifier {kind} unavailable here")
    before = open_fds()
    with _NoFds(), pytest.raises(OSError) as info:
        EventNotifier(kind=kind, registry=registry)
    assert info.value.errno == errno.EMFILE
    assert open_fds() == before


# -- signals during blocking waits -------------------------------------------------------


@pytest.fixture
def signal_storm() -> Iterator[list[int]]:
    """SIGALRM every 2 ms, counted by a Python handler, for the test's duration."""
    ticks: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda _s, _f: ticks.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    try:
        yield ticks
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("with_fd", [False, True], ids=["no-fds", "with-fd"])
def test_signals_do_not_shorten_a_timed_wait(
    ctx: AioContext, signal_storm: list[int], with_fd: bool
) -> None:
    """A 200 ms timed wait under a signal every 2 ms: one poll, returning
    when the timer fires, in a handful of backend waits."""
    pair = Pair()
    try:
        if with_fd:
            ctx.set_fd_handler(pair.a, _noop)
        start = time.monotonic()  # before arming: due 200 ms after this
        fired = _realtime_timer(ctx, 200)
        ctx.poll(False)
        spy = WaitSpy(ctx)
        polls = 0
        try:
            while not fired and polls < 50 and time.monotonic() - start < 5:
                assert ctx.poll(True) is True or not fired
                polls += 1
        finally:
            spy.restore()
        elapsed = time.monotonic() - start
        assert fired
        assert elapsed >= 0.199, f"returned after {elapsed:.3f} s"
        assert polls == 1, f"{polls} polls: a signal shortened the wait"
        assert spy.calls <= 3, f"{spy.calls} backend waits: EINTR became a busy loop"
        assert len(signal_storm) >= 20, "the signals did not arrive during the wait"
    finally:
        if with_fd:
            ctx.set_fd_handler(pair.a, None)
        pair.close()


def test_signals_do_not_end_an_infinite_wait(ctx: AioContext, signal_storm: list[int]) -> None:
    """No timeout at all: only the BH scheduled by another thread ends it."""
    pair = Pair()
    ran: list[int] = []
    bh = ctx.bh_new(lambda _o: ran.append(1))
    ctx.set_fd_handler(pair.a, _noop)
    ctx.poll(False)
    # The waker thread must not take the signals (they go to any thread that
    # does not block them): block SIGALRM in it.
    def wake() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(0.2)
        bh.schedule()

    waker = threading.Thread(target=wake)
    spy = WaitSpy(ctx)
    start = time.monotonic()
    waker.start()
    try:
        assert ctx.poll(True) is True
    finally:
        spy.restore()
        waker.join(5)
        ctx.set_fd_handler(pair.a, None)
        pair.close()
    assert ran == [1]
    assert time.monotonic() - start >= 0.19
    assert spy.timeouts == [-1] or spy.calls <= 3, spy.timeouts
    assert len(signal_storm) >= 20


def test_a_raising_signal_handler_propagates_and_leaves_the_context_usable(
    ctx: AioContext,
) -> None:
    """PEP 475: an exception from a Python signal handler ends the wait."""

    class Stop(Exception):
        pass

    def raise_stop(_s: int, _f: object) -> None:
        raise Stop

    pair = Pair()
    ctx.set_fd_handler(pair.a, lambda _o: drain(pair.a))
    ctx.poll(False)
    # SIGUSR1 from another thread (SIGALRM is bounded()'s).
    old = signal.signal(signal.SIGUSR1, raise_stop)
    main = threading.get_ident()
    sender = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
    sender.start()
    try:
        with pytest.raises(Stop), bounded(3.0, "poll(True) interrupted by a raising handler"):
            ctx.poll(True)
    finally:
        sender.join(5)
        signal.signal(signal.SIGUSR1, old)
    try:
        pair.send_to_a()
        assert ctx.poll(False) is True
        assert_sleeps_and_wakes(ctx)
        # notify_me was withdrawn: a notify from another thread still wakes.
        assert_woken_from_another_thread(ctx)
    finally:
        ctx.set_fd_handler(pair.a, None)
        pair.close()


# -- callbacks raising inside nested polls -----------------------------------------------

NESTED_POSITIONS = ["io_read", "io_write", "io_poll", "bh", "timer"]


def _arm_raiser(ctx: AioContext, pair: Pair, position: str, boom: Callable[[object], Any]) -> None:
    if position == "io_read":
        ctx.set_fd_handler(pair.a, boom)
        pair.send_to_a()
    elif position == "io_write":
        ctx.set_fd_handler(pair.a, None, boom)
    elif position == "io_poll":
        ctx.set_fd_handler(pair.a, _noop, None, boom)
    elif position == "bh":
        ctx.bh_new(boom).schedule()
    else:
        clock_enable(Clock.VIRTUAL, True)
        ctx.timer_new_ns(Clock.VIRTUAL, boom).mod_ns(0)


@pytest.mark.parametrize("position", NESTED_POSITIONS)
@pytest.mark.parametrize("reraise", [False, True], ids=["default-handler", "reraising-handler"])
def test_callback_raising_inside_a_nested_poll(
    ctx: AioContext, position: str, reraise: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The exception goes to the handler at the nested level; a re-raising
    handler makes both polls raise, and the context is whole afterwards:
    nesting depth back to 0 (``close()`` works), the outer pass's remaining
    BHs run at the next poll, blocking polls sleep and wake."""
    pair = Pair()
    calls: list[str] = []

    def boom(_opaque: object) -> bool:
        calls.append("boom")
        if calls.count("boom") == 1:
            raise ValueError(f"boom in {position}")
        return False

    if reraise:
        ctx.set_exception_handler(ExcLog(reraise=True))
    try:
        ctx.poll(False)

        def outer(_opaque: object) -> None:
            calls.append("outer")
            _arm_raiser(ctx, pair, position, boom)
            ctx.poll(False)  # nested
            calls.append("outer done")

        ctx.bh_new(outer).schedule()
        ctx.bh_new(lambda _o: calls.append("second")).schedule()
        if reraise:
            with pytest.raises(ValueError, match=f"boom in {position}"):
                ctx.poll(False)
            # The nested poll finished the outer pass first (SPEC 7), then
            # the raise went through the outer BH: "outer done" never ran.
            assert calls[:1] == ["outer"] and "boom" in calls and "outer done" not in calls
            assert ctx._depth == 0
            # The next poll finishes what was left (io_poll raised before the
            # nested poll reached the outer pass's remaining BH).
            ctx.poll(False)
            assert calls.count("second") == 1 and "outer done" not in calls, calls
        else:
            with caplog.at_level(logging.ERROR, logger="aiocore"):
                assert ctx.poll(False) is True
            assert calls[0] == "outer" and calls[-1] == "outer done", calls
            assert sorted(calls) == ["boom", "outer", "outer done", "second"]
            assert f"boom in {position}" in caplog.text
        assert ctx._depth == 0
        ctx.set_fd_handler(pair.a, None)
        assert_sleeps_and_wakes(ctx)
    finally:
        if not ctx.closed and pair.a in ctx.handler_fds():
            ctx.set_fd_handler(pair.a, None)
        pair.close()
    ctx.close()  # refused while the context believes a poll() is running


# -- plugins raising in every hook ---------------------------------------------------------


class _Boom(Exception):
    pass


class _OwnPoll(PollBackend):
    name = "own-poll"


def _registering_plugin(raise_in: str, exc: BaseException) -> Any:
    """A plugin that registers a backend, a notifier and a source, and raises in one hook."""
    from aiocore_plugins.notifier import PipeNotifier

    class OwnPipe(PipeNotifier):
        name = "own-pipe"

    def hook(kind: str, register_one: Callable[[Any], None]) -> Callable[[Any], None]:
        def impl(register: Any) -> None:
            register_one(register)
            if kind == raise_in:
                raise exc

        return impl

    return types.SimpleNamespace(
        aiocore_register_backends=hook("backends", lambda r: r(_OwnPoll)),
        aiocore_register_notifiers=hook("notifiers", lambda r: r(OwnPipe)),
        aiocore_register_sources=hook("sources", lambda r: r("own", lambda ctx: object())),
    )


@pytest.mark.parametrize("raise_in", ["backends", "notifiers", "sources"])
def test_plugin_raising_in_a_registration_hook_leaves_nothing_behind(raise_in: str) -> None:
    plugin = _registering_plugin(raise_in, _Boom("registration failed"))
    with pytest.warns(PluginWarning, match=rf"'bad'.*aiocore_register_{raise_in}.*failed"):
        reg = PluginRegistry(autoload=False, env={}, plugins=[("bad", plugin)])
    assert reg.plugins["bad"].status == "failed"
    assert reg.plugins["bad"].provides == []
    assert "own-poll" not in reg.backends
    assert "own-pipe" not in reg.notifiers
    assert "own" not in reg.sources
    with AioContext(backend="poll", registry=reg) as ctx:  # the built-ins work
        assert ctx.poll(False) is False
    with pytest.raises(PluginError, match=rf"aiocore_register_{raise_in}"):
        PluginRegistry(autoload=False, env={}, strict=True, plugins=[("bad", plugin)])


def test_plugin_raising_base_exception_in_registration_propagates() -> None:
    plugin = _registering_plugin("notifiers", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        PluginRegistry(autoload=False, env={}, plugins=[("bad", plugin)])


LIFECYCLE = ["aiocore_context_created", "aiocore_context_closing"]


@pytest.mark.parametrize("hook", LIFECYCLE)
@pytest.mark.parametrize("mode", ["lenient", "strict", "base-exception"])
def test_plugin_raising_in_a_lifecycle_hook(
    backend: str, hook: str, mode: str, caplog: pytest.LogCaptureFixture, no_fd_leak: None
) -> None:
    """Lenient: logged with the plugin's name, and the context is created or
    closed regardless.  Strict: PluginError, and the context is closed all
    the same.  A BaseException propagates, and still leaks nothing."""
    exc: BaseException = KeyboardInterrupt() if mode == "base-exception" else _Boom("hook")
    calls: list[str] = []

    def impl(ctx: AioContext) -> None:
        calls.append(hook)
        raise exc

    plugin = types.SimpleNamespace(**{hook: impl})
    reg = PluginRegistry(
        autoload=False,
        env={},
        strict=mode == "strict",
        plugins=[*_extra_plugins(), ("flaky", plugin)],
    )
    expected: type[BaseException] | None = {
        "lenient": None,
        "strict": PluginError,
        "base-exception": KeyboardInterrupt,
    }[mode]
    wakers = len(_clocks._wakers)
    with caplog.at_level(logging.WARNING, logger="aiocore"):
        if hook == "aiocore_context_created":
            if expected is None:
                ctx = AioContext(backend=backend, registry=reg)
                assert not ctx.closed
                assert ctx.poll(False) is False
                ctx.close()
            else:
                with pytest.raises(expected):
                    AioContext(backend=backend, registry=reg)
        else:
            ctx = AioContext(backend=backend, registry=reg)
            ctx.bh_new(_noop).schedule()
            if expected is None:
                ctx.close()
            else:
                with pytest.raises(expected):
                    ctx.close()
            assert ctx.closed
            ctx.close()  # idempotent, and the hook is not called again
    assert calls == [hook]
    assert len(_clocks._wakers) == wakers
    if mode == "lenient":
        assert f"plugin 'flaky' raised in {hook}" in caplog.text


# -- backends raising ------------------------------------------------------------------


class FaultyBackend(PollBackend):
    """A poll backend whose methods raise while told to (a test double)."""

    name = "faulty"
    #: method name -> exception to raise on its next calls.
    faults: dict[str, BaseException] = {}  # noqa: RUF012 - reset per test

    def _maybe(self, method: str) -> None:
        exc = self.faults.get(method)
        if exc is not None:
            raise exc

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        self._maybe("update")
        super().update(fd, old_mask, new_mask)

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        self._maybe("wait")
        return super().wait(timeout_ns)

    def close(self) -> None:
        super().close()
        self._maybe("close")


@pytest.fixture
def faulty() -> Iterator[PluginRegistry]:
    FaultyBackend.faults = {}
    plugin = types.SimpleNamespace(
        aiocore_register_backends=lambda register: register(FaultyBackend)
    )
    yield PluginRegistry(autoload=False, env={}, plugins=[("faulty", plugin)])
    FaultyBackend.faults = {}


@pytest.mark.parametrize("blocking", [False, True])
@pytest.mark.parametrize(
    "fault", [OSError(errno.EIO, "injected"), RuntimeError("injected"), KeyboardInterrupt()]
)
def test_backend_wait_raising(
    faulty: PluginRegistry, blocking: bool, fault: BaseException, no_fd_leak: None
) -> None:
    """poll() raises what wait() raised; nothing is lost or left half-done, and
    polls work again once wait() does."""
    pair = Pair()
    calls: list[str] = []
    ctx = AioContext(backend="faulty", registry=faulty)
    try:
        ctx.set_fd_handler(pair.a, lambda _o: calls.append("read") or drain(pair.a))
        ctx.bh_new(lambda _o: calls.append("bh")).schedule()
        fired = _realtime_timer(ctx, 0)
        pair.send_to_a()
        FaultyBackend.faults["wait"] = fault
        for _ in range(3):
            with pytest.raises(type(fault)):
                ctx.poll(blocking)
        assert calls == []
        assert ctx._depth == 0 and ctx._notify_me == 0
        del FaultyBackend.faults["wait"]
        assert ctx.poll(False) is True
        assert sorted(calls) == ["bh", "read"]
        assert fired == [1]
        assert_sleeps_and_wakes(ctx)
        # A wake-up from another thread still works: notify_me is consistent.
        assert_woken_from_another_thread(ctx)
    finally:
        FaultyBackend.faults.clear()
        ctx.set_fd_handler(pair.a, None)
        ctx.close()
        pair.close()


def test_backend_wait_raising_in_a_nested_poll(faulty: PluginRegistry) -> None:
    calls: list[str] = []

    def outer(_opaque: object) -> None:
        calls.append("outer")
        FaultyBackend.faults["wait"] = OSError(errno.EIO, "injected")
        pair_holder.append(Pair())
        ctx.set_fd_handler(pair_holder[0].a, _noop)  # makes the nested poll wait
        ctx.poll(False)

    pair_holder: list[Pair] = []
    ctx = AioContext(backend="faulty", registry=faulty)
    ctx.set_exception_handler(ExcLog(reraise=True))
    try:
        ctx.bh_new(outer).schedule()
        ctx.bh_new(lambda _o: calls.append("second")).schedule()
        with pytest.raises(OSError, match="injected"):
            ctx.poll(False)
        assert ctx._depth == 0
        FaultyBackend.faults.clear()
        ctx.poll(False)
        assert calls == ["outer", "second"]
    finally:
        FaultyBackend.faults.clear()
        for p in pair_holder:
            ctx.set_fd_handler(p.a, None)
            p.close()
        ctx.close()


@pytest.mark.parametrize("fault", [OSError(errno.ENOMEM, "injected"), RuntimeError("injected")])
def test_backend_update_raising_changes_nothing(
    faulty: PluginRegistry, fault: BaseException
) -> None:
    pair, other = Pair(), Pair()
    got: list[str] = []
    with AioContext(backend="faulty", registry=faulty) as ctx:
        try:
            ctx.set_fd_handler(pair.a, lambda _o: got.append("old") or drain(pair.a))
            FaultyBackend.faults["update"] = fault
            with pytest.raises(type(fault), match="injected"):
                ctx.set_fd_handler(other.a, _noop)
            with pytest.raises(type(fault), match="injected"):  # a mask change
                ctx.set_fd_handler(pair.a, None, lambda _o: got.append("new"))
            FaultyBackend.faults.clear()
            assert ctx.handler_fds() == [pair.a]
            ctx.poll(False)
            pair.send_to_a()
            assert ctx.poll(False) is True
            assert got == ["old"]  # the old handler is still the one
        finally:
            FaultyBackend.faults.clear()
            ctx.set_fd_handler(pair.a, None)
            pair.close()
            other.close()


def test_backend_close_raising_still_releases_the_context(
    faulty: PluginRegistry, no_fd_leak: None
) -> None:
    ctx = AioContext(backend="faulty", registry=faulty)
    FaultyBackend.faults["close"] = OSError(errno.EIO, "injected")
    try:
        with pytest.raises(OSError, match="injected"):
            ctx.close()
    finally:
        FaultyBackend.faults.clear()
    assert ctx.closed
    ctx.close()
    with pytest.raises(RuntimeError, match="closed"):
        ctx.poll(False)


def test_backend_constructor_raising_leaks_nothing(no_fd_leak: None) -> None:
    class Refusing(PollBackend):
        name = "refusing"

        def __init__(self, setup: Any) -> None:
            super().__init__(setup)
            raise OSError(errno.ENOMEM, "injected")

    plugin = types.SimpleNamespace(aiocore_register_backends=lambda register: register(Refusing))
    reg = PluginRegistry(autoload=False, env={}, plugins=[("refusing", plugin)])
    wakers = len(_clocks._wakers)
    with pytest.raises(OSError, match="injected"):
        AioContext(backend="refusing", registry=reg)
    assert len(_clocks._wakers) == wakers


# -- io_uring: SQ full, CQ overflow, seen from a context ---------------------------------


@pytest.mark.parametrize("mode", ["off", "on"])
def test_io_uring_tiny_rings_lose_nothing(registry: PluginRegistry, mode: str) -> None:
    """With a 2-entry SQ (4-entry CQ), 48 always-ready fds and every handler
    changed from its callback: each poll dispatches each fd exactly once."""
    _require(registry, "io_uring")
    _write_config(f'[backends.io_uring]\nentries = 2\nmultishot = "{mode}"\n')
    n = 48
    pairs = [Pair() for _ in range(n)]
    counts = [0] * n
    try:
        ctx = AioContext(backend="io_uring", registry=registry)
    except (OSError, aiocore.BackendUnavailable) as exc:
        for p in pairs:
            p.close()
        pytest.skip(f"io_uring multishot={mode} unavailable: {exc}")
    try:

        def make(i: int, generation: int) -> Callable[[object], None]:
            def io_read(_opaque: object) -> None:
                counts[i] += 1
                # Change the handler (a POLL_REMOVE and a POLL_ADD) every time.
                ctx.set_fd_handler(pairs[i].a, make(i, generation + 1))

            return io_read

        for i, p in enumerate(pairs):
            ctx.set_fd_handler(p.a, make(i, 0))
            p.send_to_a()  # readable for the whole test
        ctx.poll(False)
        counts = [0] * n
        rounds = 6
        for _ in range(rounds):
            polls = 0
            target = [c + 1 for c in counts]
            with bounded(3.0, "polls of 48 ready fds"):
                while counts != target and polls < 10:
                    ctx.poll(True)
                    polls += 1
            assert counts == target, f"after {polls} polls: {counts}"
        stats = ctx.backend_statistics()
        assert stats["sq_entries"] == 2, stats
        assert stats["full_sq_submits"], stats  # the SQ filled up
        assert stats["overflow_flushes"], stats  # and the CQ overflowed
        for p in pairs:
            ctx.set_fd_handler(p.a, None)
        ctx.close()
    finally:
        for p in pairs:
            p.close()
