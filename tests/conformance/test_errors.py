"""SPEC section 12 (errors): exceptions in callbacks, and bad arguments.

A callback raising in every position (fd read, fd write, ``io_poll``,
``io_poll_ready``, ``io_poll_begin``, ``io_poll_end``, BH, oneshot BH, timer)
goes to the exception handler: the default logs it with its traceback on the
``aiocore`` logger; a custom handler gets ``(ctx, exc)``; a re-raising handler
makes ``poll()`` raise and the next ``poll()`` handles what was not yet
dispatched (BHs, timers, fd readiness) without blocking; a ``BaseException``
propagates at once, is never given to the handler, and leaves the context
usable.  Bad arguments raise ``TypeError``/``ValueError`` naming the argument
and change nothing.  (Bad poll parameters are in ``test_poll_mode.py``, bad
notifiers in ``test_notifier.py``.)
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

import aiocore
from aiocore import (
    SCALE_MS,
    AioContext,
    Clock,
    PluginRegistry,
    Timer,
    clock_enable,
    clock_enabled,
    clock_get_ns,
    virtual_clock_step,
)

from ._support import ExcLog, Guard, Pair, Recorder, make_pipe

POSITIONS = [
    "io_read",
    "io_write",
    "io_poll",
    "io_poll_ready",
    "io_poll_begin",
    "io_poll_end",
    "bh",
    "oneshot",
    "timer",
]


@dataclass
class Boom:
    """A callback that raises *exc* on its first call and records every call."""

    exc: BaseException
    calls: int = 0
    result: bool = False

    def __call__(self, _opaque: object) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise self.exc
        return self.result


@dataclass
class Scenario:
    """A context set up so that one poll runs the raising callback."""

    ctx: AioContext
    boom: Boom
    trigger: Callable[[], object]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def setup_position(ctx: AioContext, position: str, exc: BaseException) -> Scenario:
    boom = Boom(exc)
    cleanup: list[Callable[[], None]] = []

    def poll_false() -> object:
        return ctx.poll(False)

    if position == "bh":
        ctx.bh_new(boom).schedule()
        return Scenario(ctx, boom, poll_false)
    if position == "oneshot":
        ctx.bh_schedule_oneshot(boom)
        return Scenario(ctx, boom, poll_false)
    if position == "timer":
        ctx.timer_new_ns(Clock.REALTIME, boom).mod_ns(0)
        return Scenario(ctx, boom, poll_false)
    if position in ("io_read", "io_write"):
        pair = Pair()

        def close_pair() -> None:
            if not ctx.closed:
                ctx.set_fd_handler(pair.a, None)
            pair.close()

        cleanup.append(close_pair)
        if position == "io_read":
            ctx.set_fd_handler(pair.a, boom)
            pair.send_to_a()
        else:
            ctx.set_fd_handler(pair.a, None, boom)
        return Scenario(ctx, boom, poll_false, cleanup)
    r, w = make_pipe()

    def close_pipe() -> None:
        if not ctx.closed:
            ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)

    cleanup.append(close_pipe)
    if position == "io_poll":
        ctx.set_fd_handler(r, lambda _o: None, None, boom)
        return Scenario(ctx, boom, poll_false, cleanup)
    if position == "io_poll_ready":
        ctx.set_fd_handler(r, lambda _o: None, None, lambda _o: True, io_poll_ready=boom)
        return Scenario(ctx, boom, poll_false, cleanup)
    # io_poll_begin / io_poll_end: poll mode with a hitting io_poll.
    state = {"hit": False}
    ctx.set_fd_handler(r, lambda _o: None, None, lambda _o: state["hit"])
    if position == "io_poll_begin":
        ctx.set_fd_poll(r, boom, None)
    else:
        ctx.set_fd_poll(r, None, boom)
    ctx.set_poll_params(10**9, 0, 0)
    clock_enable(Clock.VIRTUAL, True)
    ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(
        clock_get_ns(Clock.VIRTUAL) + 50 * SCALE_MS
    )
    ctx.poll(False)  # grows poll_ns from 0
    assert ctx.poll_ns > 0
    state["hit"] = True
    if position == "io_poll_begin":
        return Scenario(ctx, boom, lambda: ctx.poll(True), cleanup)
    ctx.poll(True)  # poll mode started (a hit)
    return Scenario(ctx, boom, poll_false, cleanup)  # a zero window ends it


@pytest.fixture(params=POSITIONS)
def position(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scenario_factory(
    ctx: AioContext, position: str
) -> Iterator[Callable[[BaseException], Scenario]]:
    made: list[Scenario] = []

    def make(exc: BaseException) -> Scenario:
        s = setup_position(ctx, position, exc)
        made.append(s)
        return s

    yield make
    for s in made:
        for fn in s.cleanup:
            fn()


def assert_usable(ctx: AioContext) -> None:
    """The context still runs BHs, and a blocking poll still sleeps and wakes."""
    ran: list[int] = []
    ctx.bh_schedule_oneshot(lambda _o: ran.append(1))
    ctx.poll(False)
    assert ran == [1]
    guard = Guard(ctx, 2000)
    ctx.poll(False)
    ctx.notify()
    ctx.poll(True)
    assert not guard.fired
    guard.cancel()


# -- every position ---------------------------------------------------------------------


def test_default_handler_logs_with_traceback(
    ctx: AioContext,
    scenario_factory: Callable[[BaseException], Scenario],
    caplog: pytest.LogCaptureFixture,
    position: str,
) -> None:
    exc = ValueError(f"boom in {position}")
    s = scenario_factory(exc)
    caplog.set_level(logging.ERROR, logger="aiocore")
    s.trigger()
    assert s.boom.calls >= 1
    records = [r for r in caplog.records if r.exc_info and r.exc_info[1] is exc]
    assert len(records) == 1
    assert records[0].name.split(".")[0] == "aiocore"
    assert records[0].levelno >= logging.ERROR
    assert "Traceback" in caplog.text
    assert f"boom in {position}" in caplog.text
    assert_usable(ctx)


def test_custom_handler_gets_ctx_and_exception(
    ctx: AioContext, scenario_factory: Callable[[BaseException], Scenario], position: str
) -> None:
    log = ExcLog()
    ctx.set_exception_handler(log)
    exc = ValueError(position)
    s = scenario_factory(exc)
    s.trigger()
    assert log.seen == [exc]
    assert log.contexts == [ctx]
    assert_usable(ctx)


def test_reraising_handler_makes_poll_raise(
    ctx: AioContext, scenario_factory: Callable[[BaseException], Scenario], position: str
) -> None:
    log = ExcLog(reraise=True)
    ctx.set_exception_handler(log)
    exc = ValueError(position)
    s = scenario_factory(exc)
    with pytest.raises(ValueError, match=position) as info:
        s.trigger()
    assert info.value is exc
    assert log.seen == [exc]
    assert_usable(ctx)


def test_base_exception_propagates_and_skips_the_handler(
    ctx: AioContext, scenario_factory: Callable[[BaseException], Scenario], position: str
) -> None:
    log = ExcLog()
    ctx.set_exception_handler(log)
    exc = KeyboardInterrupt(position)
    s = scenario_factory(exc)
    with pytest.raises(KeyboardInterrupt) as info:
        s.trigger()
    assert info.value is exc
    assert log.seen == []
    assert_usable(ctx)


def test_system_exit_propagates(
    ctx: AioContext, scenario_factory: Callable[[BaseException], Scenario]
) -> None:
    log = ExcLog()
    ctx.set_exception_handler(log)
    s = scenario_factory(SystemExit(3))
    with pytest.raises(SystemExit):
        s.trigger()
    assert log.seen == []
    assert_usable(ctx)


def test_set_exception_handler_none_restores_the_default(
    ctx: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    log = ExcLog()
    ctx.set_exception_handler(log)
    ctx.set_exception_handler(None)
    caplog.set_level(logging.ERROR, logger="aiocore")
    exc = ValueError("restored")
    ctx.bh_schedule_oneshot(Boom(exc))
    ctx.poll(False)
    assert log.seen == []
    assert any(r.exc_info and r.exc_info[1] is exc for r in caplog.records)


def test_set_exception_handler_rejects_non_callable(ctx: AioContext) -> None:
    log = ExcLog()
    ctx.set_exception_handler(log)
    with pytest.raises(TypeError, match="handler"):
        ctx.set_exception_handler(42)  # type: ignore[arg-type]
    exc = ValueError("still custom")
    ctx.bh_schedule_oneshot(Boom(exc))
    ctx.poll(False)
    assert log.seen == [exc]


# -- what a re-raising handler leaves for the next poll ---------------------------------------


def test_remaining_bhs_run_at_the_next_poll(ctx: AioContext) -> None:
    ctx.set_exception_handler(ExcLog(reraise=True))
    rec = Recorder()
    ctx.bh_new(rec.cb("a")).schedule()
    boom = Boom(ValueError("b"))
    ctx.bh_new(boom).schedule()
    ctx.bh_new(rec.cb("c")).schedule()
    ctx.bh_new(rec.cb("d")).schedule()
    with pytest.raises(ValueError, match="b"):
        ctx.poll(False)
    assert rec.names() == ["a"]
    guard = Guard(ctx, 2000)
    # A blocking poll must not block: BHs are pending.
    assert ctx.poll(True) is True
    assert rec.names() == ["a", "c", "d"]
    assert boom.calls == 1
    assert not guard.fired
    assert ctx.poll(False) is False


def test_remaining_timers_run_at_the_next_poll(ctx: AioContext) -> None:
    clock_enable(Clock.VIRTUAL, True)
    ctx.set_exception_handler(ExcLog(reraise=True))
    rec = Recorder()
    now = clock_get_ns(Clock.VIRTUAL)
    boom = Boom(ValueError("t2"))
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t1")).mod_ns(now)
    ctx.timer_new_ns(Clock.VIRTUAL, boom).mod_ns(now)
    ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("t3")).mod_ns(now)
    with pytest.raises(ValueError, match="t2"):
        ctx.poll(False)
    assert rec.names() == ["t1"]
    guard = Guard(ctx, 2000)
    assert ctx.poll(True) is True
    assert rec.names() == ["t1", "t3"]
    assert boom.calls == 1
    assert not guard.fired


def test_remaining_fd_readiness_is_dispatched_at_the_next_poll(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    # Both fds are reported ready.  The first handler dispatched drains both
    # sockets and raises: the other's readiness, reported but not dispatched,
    # must be dispatched by the next poll (no new report will come: the fd
    # is no longer readable), and that poll must not block.
    ctx.set_exception_handler(ExcLog(reraise=True))
    p1, p2 = pairs(), pairs()
    calls: list[int] = []

    def make(me: Pair) -> Callable[[object], None]:
        def cb(_opaque: object) -> None:
            calls.append(me.a)
            p1.read_a()
            p2.read_a()
            if len(calls) == 1:
                raise ValueError("first")

        return cb

    ctx.set_fd_handler(p1.a, make(p1))
    ctx.set_fd_handler(p2.a, make(p2))
    ctx.poll(False)
    p1.send_to_a()
    p2.send_to_a()
    with pytest.raises(ValueError, match="first"):
        ctx.poll(False)
    assert len(calls) == 1
    guard = Guard(ctx, 2000)
    assert ctx.poll(True) is True
    assert sorted(calls) == sorted([p1.a, p2.a])
    assert not guard.fired
    assert ctx.poll(False) is False
    assert len(calls) == 2


def test_fd_readiness_and_timers_survive_a_raising_bh(ctx: AioContext, pair: Pair) -> None:
    # The wait reported the fd, then a BH (run before fd dispatch) drains the
    # fd and raises: the fd's reported readiness and the due timer were not
    # dispatched yet, so the next poll handles them.
    ctx.set_exception_handler(ExcLog(reraise=True))
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("fd"))
    ctx.poll(False)

    def bh(_opaque: object) -> None:
        pair.read_a()
        raise ValueError("bh")

    ctx.bh_schedule_oneshot(bh)
    ctx.timer_new_ns(Clock.REALTIME, rec.cb("timer")).mod_ns(0)
    pair.send_to_a()
    with pytest.raises(ValueError, match="bh"):
        ctx.poll(False)
    assert rec.calls == []
    guard = Guard(ctx, 2000)
    assert ctx.poll(True) is True
    assert rec.names() == ["fd", "timer"]
    assert not guard.fired


def test_base_exception_stops_the_pass_at_once(ctx: AioContext) -> None:
    rec = Recorder()
    ctx.bh_new(rec.cb("a")).schedule()
    ctx.bh_new(Boom(KeyboardInterrupt())).schedule()
    ctx.bh_new(rec.cb("c")).schedule()
    ctx.timer_new_ns(Clock.REALTIME, rec.cb("timer")).mod_ns(0)
    with pytest.raises(KeyboardInterrupt):
        ctx.poll(False)
    assert rec.names() == ["a"]
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "c", "timer"]


def test_base_exception_in_a_blocking_poll_leaves_it_usable(ctx: AioContext) -> None:
    # After the exception the next blocking poll still sleeps until its
    # deadline (not a busy loop) and still wakes for it.
    ctx.bh_schedule_oneshot(Boom(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ctx.poll(True)
    fired: list[int] = []
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // SCALE_MS + 20
    )
    ctx.poll(False)
    returns = 0
    for _ in range(20):
        ctx.poll(True)
        returns += 1
        if fired:
            break
    assert fired == [1]
    assert returns <= 2


# -- bad arguments ------------------------------------------------------------------------


def _noop(_opaque: object) -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"fd": "3"}, TypeError, "fd"),
        ({"fd": 3.0}, TypeError, "fd"),
        ({"fd": None}, TypeError, "fd"),
        ({"fd": -1}, ValueError, "fd"),
        ({"io_read": 5}, TypeError, "io_read"),
        ({"io_write": "x"}, TypeError, "io_write"),
        ({"io_poll": 1}, TypeError, "io_poll"),
        ({"io_poll": lambda _o: True, "io_poll_ready": 1}, TypeError, "io_poll_ready"),
        ({"is_external": "yes"}, TypeError, "is_external"),
    ],
    ids=["fd-str", "fd-float", "fd-None", "fd-negative", "io_read", "io_write", "io_poll",
         "io_poll_ready", "is_external"],
)
def test_bad_set_fd_handler_arguments_change_nothing(
    ctx: AioContext, pair: Pair, kwargs: dict[str, object], exc: type[Exception], name: str
) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("orig"))
    before = sorted(ctx.handler_fds())
    args: dict[str, object] = {"fd": pair.a, "io_read": _noop, **kwargs}
    fd = args.pop("fd")
    with pytest.raises(exc, match=rf"\b{name}\b"):
        ctx.set_fd_handler(fd, **args)  # type: ignore[arg-type]
    assert sorted(ctx.handler_fds()) == before
    pair.send_to_a()
    assert ctx.poll(False) is True
    assert rec.names() == ["orig"]


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        (("x", None, None), TypeError, "fd"),
        ((-2, None, None), ValueError, "fd"),
        ((None, 3, None), TypeError, "io_poll_begin"),
        ((None, None, 3), TypeError, "io_poll_end"),
    ],
)
def test_bad_set_fd_poll_arguments(
    ctx: AioContext, pair: Pair, args: tuple[object, object, object], exc: type[Exception],
    name: str,
) -> None:
    ctx.set_fd_handler(pair.a, _noop)
    fd = pair.a if args[0] is None else args[0]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        ctx.set_fd_poll(fd, args[1], args[2])  # type: ignore[arg-type]
    assert ctx.handler_fds() == [pair.a]


def test_bad_event_notifier_callbacks_change_nothing(
    ctx: AioContext, registry: PluginRegistry
) -> None:
    e = aiocore.EventNotifier(registry=registry)
    try:
        rec = Recorder()
        ctx.set_event_notifier(e, rec.cb("orig"))
        with pytest.raises(TypeError, match=r"\bio_read\b"):
            ctx.set_event_notifier(e, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"\bio_poll\b"):
            ctx.set_event_notifier(e, _noop, "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"\bio_poll_begin\b"):
            ctx.set_event_notifier_poll(e, 1, None)  # type: ignore[arg-type]
        e.set()
        assert ctx.poll(False) is True
        assert rec.calls == [("orig", e)]
        ctx.set_event_notifier(e, None)
    finally:
        e.close()


def test_bad_bh_arguments_change_nothing(ctx: AioContext) -> None:
    with pytest.raises(TypeError, match=r"\bcb\b"):
        ctx.bh_new(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\bcb\b"):
        ctx.bh_schedule_oneshot("nope")  # type: ignore[arg-type]
    assert ctx.poll(False) is False


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        (("REALTIME", SCALE_MS, _noop), TypeError, "clock"),
        ((7, SCALE_MS, _noop), ValueError, "clock"),
        ((None, SCALE_MS, _noop), TypeError, "clock"),
        ((Clock.REALTIME, 0, _noop), ValueError, "scale"),
        ((Clock.REALTIME, "1", _noop), TypeError, "scale"),
        ((Clock.REALTIME, SCALE_MS, None), TypeError, "cb"),
        ((Clock.REALTIME, SCALE_MS, 5), TypeError, "cb"),
    ],
)
def test_bad_timer_new_arguments(
    ctx: AioContext, args: tuple[object, object, object], exc: type[Exception], name: str
) -> None:
    with pytest.raises(exc, match=rf"\b{name}\b"):
        ctx.timer_new(*args)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        ctx.timer_new_ms("x", _noop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "value", "name"),
    [
        ("mod", "5", "expire"),
        ("mod", 1.5, "expire"),
        ("mod_ns", None, "expire_ns"),
        ("mod_anticipate", "1", "expire"),
    ],
)
def test_bad_timer_expiry_changes_nothing(
    ctx: AioContext, method: str, value: object, name: str
) -> None:
    timer: Timer = ctx.timer_new_ms(Clock.VIRTUAL, _noop)
    timer.mod(40)
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        getattr(timer, method)(value)
    assert timer.pending
    assert timer.expire_time_ns == 40 * SCALE_MS
    idle = ctx.timer_new_ms(Clock.VIRTUAL, _noop)
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        getattr(idle, method)(value)
    assert not idle.pending


def test_bad_clock_arguments_change_nothing() -> None:
    with pytest.raises(TypeError, match=r"\bclock\b"):
        clock_get_ns("HOST")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\bclock\b"):
        clock_enable(9, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\benabled\b"):
        clock_enable(Clock.VIRTUAL, "yes")  # type: ignore[arg-type]
    assert not clock_enabled(Clock.VIRTUAL)
    now = clock_get_ns(Clock.VIRTUAL)
    with pytest.raises(ValueError, match=r"\bns\b"):
        virtual_clock_step(-1)
    with pytest.raises(TypeError, match=r"\bns\b"):
        virtual_clock_step(1.5)  # type: ignore[arg-type]
    assert clock_get_ns(Clock.VIRTUAL) == now


def test_unknown_backend_lists_the_known_ones(
    registry: PluginRegistry, no_fd_leak: None
) -> None:
    with pytest.raises(ValueError, match="no-such-backend") as info:
        AioContext(backend="no-such-backend", registry=registry)
    assert isinstance(info.value, aiocore.UnknownBackendError)
    for known in ("poll", "epoll"):
        if known in registry.backends:
            assert known in str(info.value)


@pytest.mark.parametrize("bad", [5, [1, 2], b"poll"])
def test_non_str_backend_is_a_type_error(
    registry: PluginRegistry, no_fd_leak: None, bad: object
) -> None:
    with pytest.raises(TypeError, match="backend"):
        AioContext(backend=bad, registry=registry)  # type: ignore[arg-type]


# -- fd errors met while changing handlers ----------------------------------------


class _NoReentry:
    """The handler lock, failing instead of deadlocking if its holder re-enters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self) -> None:
        if self.owner == threading.get_ident():
            raise AssertionError("the handler lock was re-entered: a deadlock")
        self.lock.acquire()
        self.owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self.lock.release()


@pytest.mark.parametrize("change", ["remove", "disable_external", "enable_external"])
def test_the_exception_handler_may_change_handlers_after_an_fd_error(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # A backend refusing an fd during a handler change (epoll learns only
    # then that a registered fd was closed) is reported to the exception
    # handler, and an ordinary handler reacts by changing handlers: it must
    # run after the change, outside the handler lock (not reentrant).
    a, b = Pair(), Pair()
    try:
        ctx.set_fd_handler(a.a, lambda _o: None, is_external=change != "remove")
        ctx.set_fd_handler(b.a, lambda _o: None)
        if change == "enable_external":
            ctx.disable_external()
        monkeypatch.setattr(ctx, "_hlock", _NoReentry())
        real_update = ctx._backend.update

        def update(fd: int, old_mask: int, new_mask: int) -> None:
            if fd == a.a:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            real_update(fd, old_mask, new_mask)

        monkeypatch.setattr(ctx._backend, "update", update)
        seen: list[BaseException] = []

        def handler(c: AioContext, exc: BaseException) -> None:
            seen.append(exc)
            c.set_fd_handler(b.a, None)

        ctx.set_exception_handler(handler)
        if change == "remove":
            ctx.set_fd_handler(a.a, None)
            assert a.a not in ctx.handler_fds()
        elif change == "disable_external":
            ctx.disable_external()
            assert ctx.external_disabled == 1
        else:
            ctx.enable_external()
            assert ctx.external_disabled == 0
        assert [type(e) for e in seen] == [OSError]
        assert f"fd {a.a}" in str(seen[0])
        assert b.a not in ctx.handler_fds()  # the handler's own change took effect
        monkeypatch.undo()
        ctx.poll(False)
    finally:
        for fd in list(ctx.handler_fds()):
            ctx.set_fd_handler(fd, None)
        a.close()
        b.close()


@pytest.mark.parametrize("outer", ["timer", "bh", "io_read"])
@pytest.mark.parametrize("inner", ["timer", "bh"])
def test_a_reraised_exception_reaches_the_handler_once_through_nested_polls(
    ctx: AioContext, outer: str, inner: str
) -> None:
    """What the handler raises in a nested poll() passes the outer callback.

    The outer callback (a timer, BH or fd handler) runs poll() nested; a
    callback there raises, the handler re-raises, and the exception escapes
    the nested poll() into the outer callback's frame, whose pass caught it
    and handed the same exception to the handler a second time.
    """
    seen: list[BaseException] = []

    def handler(c: AioContext, exc: BaseException) -> None:
        seen.append(exc)
        raise exc

    def bad(_o: object) -> None:
        raise ValueError("boom")

    def nested(_o: object) -> None:
        if outer == "io_read":
            pair.sa.recv(16)  # level-triggered: the nested poll() would call it again
        if inner == "bh":
            ctx.bh_schedule_oneshot(bad)  # for the nested poll() to run
        ctx.poll(False)

    pair = Pair()
    timers: list[Timer] = []
    try:
        ctx.set_exception_handler(handler)
        if outer == "timer":
            timers.append(ctx.timer_new_ns(Clock.REALTIME, nested))
            timers[-1].mod_ns(0)
        elif outer == "bh":
            ctx.bh_schedule_oneshot(nested)
        else:
            os.write(pair.b, b"x")
            ctx.set_fd_handler(pair.a, nested)
        if inner == "timer":
            timers.append(ctx.timer_new_ns(Clock.REALTIME, bad))
            timers[-1].mod_ns(1)
        with pytest.raises(ValueError, match="boom"):
            for _ in range(5):
                ctx.poll(False)
        assert len(seen) == 1
    finally:
        ctx.set_exception_handler(None)
        for t in timers:
            t.delete()
        ctx.set_fd_handler(pair.a, None)
        pair.close()


def test_an_exception_the_handler_raised_outside_poll_is_not_remembered(ctx: AioContext) -> None:
    """Only a nested poll() passes an exception through callbacks.

    A coroutine entered outside poll() whose error the handler re-raised was
    remembered as "passing through"; when Coroutine.result() raised the same
    object from a BH later, it skipped the (by then swallowing) handler and
    escaped poll().
    """

    async def failing() -> None:
        raise ValueError("coroutine failed")

    co = aiocore.Coroutine(failing())

    def reraise(c: AioContext, exc: BaseException) -> None:
        raise exc

    ctx.set_exception_handler(reraise)
    with pytest.raises(ValueError, match="coroutine failed"):
        aiocore.co_enter(ctx, co)
    handled: list[BaseException] = []
    ctx.set_exception_handler(lambda c, exc: handled.append(exc))
    try:
        ctx.bh_schedule_oneshot(lambda _o: co.result())
        ctx.poll(False)  # the handler swallows it: poll() does not raise
        assert [str(e) for e in handled] == ["coroutine failed"]
    finally:
        ctx.set_exception_handler(None)
