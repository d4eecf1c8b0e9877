"""The ``timer`` source: timerfd timers and their timer-list fallback.

Every test runs on every backend and on both mechanisms (``timerfd`` where
the kernel has it, and ``timer-list``, the documented fallback), since the
API and the numbers a callback sees must be the same.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiocore_plugins.timer_source import MAX_NS, TimerHandle, timerfd_unavailable_reason

from aiocore import AioContext, BackendUnavailable

from ._helpers import poll_for, run_until

MS = 1_000_000


@pytest.fixture(params=["timerfd", "timer-list"])
def mechanism(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "timerfd":
        reason = timerfd_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    return name


def test_default_mechanism_is_timerfd_on_linux(ctx: AioContext) -> None:
    expected = "timerfd" if timerfd_unavailable_reason() is None else "timer-list"
    assert ctx.sources.timer.mechanism == expected


def test_periodic_ticks(no_fd_leak: None, ctx: AioContext, mechanism: str) -> None:
    seen: list[int] = []
    t = ctx.sources.timer.periodic(interval_ns=5 * MS, callback=seen.append, mechanism=mechanism)
    assert isinstance(t, TimerHandle)
    assert t.mechanism == mechanism
    start = time.monotonic()
    run_until(ctx, lambda: len(seen) >= 5, timeout=5)
    assert time.monotonic() - start >= 0.020  # 5 ticks of 5 ms, never early
    assert t.expirations == sum(seen) + len(seen)
    t.cancel()
    assert not t.active
    n = len(seen)
    poll_for(ctx, 0.03)
    assert len(seen) == n  # no tick after cancel
    t.cancel()  # idempotent


def test_blocked_loop_reports_overrun_and_keeps_phase(
    no_fd_leak: None, ctx: AioContext, mechanism: str
) -> None:
    """A callback that sleeps 55 ms blocks the loop across more than 5 periods of 10 ms.

    The next call reports them as the overrun (the 8-byte count minus one),
    and they are counted once: the total never exceeds what the clock allows.
    (Bounds, not exact numbers: a loaded machine may be later still.)
    """
    seen: list[int] = []

    def on_tick(overrun: int) -> None:
        seen.append(overrun)
        if len(seen) == 1:
            time.sleep(0.055)

    start = time.monotonic_ns()
    t = ctx.sources.timer.periodic(interval_ns=10 * MS, callback=on_tick, mechanism=mechanism)
    run_until(ctx, lambda: len(seen) >= 4, timeout=5)
    t.cancel()
    elapsed = time.monotonic_ns() - start
    # The 55 ms sleep spans at least 5 grid points after the first read.
    assert seen[1] >= 4, seen
    assert t.overruns == sum(seen)
    assert t.expirations == t.overruns + t.calls
    # No expiration invented or counted twice: at most one per elapsed period.
    assert t.expirations <= elapsed // (10 * MS), (seen, elapsed)


def test_one_shot_after_delay(no_fd_leak: None, ctx: AioContext, mechanism: str) -> None:
    seen: list[int] = []
    start = time.monotonic()
    t = ctx.sources.timer.after(20 * MS, seen.append, mechanism=mechanism)
    assert t.interval_ns == 0
    rem = t.remaining_ns()
    assert rem is not None and 0 < rem <= 20 * MS
    run_until(ctx, lambda: bool(seen), timeout=5)
    assert time.monotonic() - start >= 0.019
    assert seen == [0]
    assert not t.active  # a one-shot retires itself (and its fd)
    assert t.remaining_ns() is None
    poll_for(ctx, 0.03)
    assert seen == [0]


def test_zero_delay_fires_at_once(ctx: AioContext, mechanism: str) -> None:
    seen: list[int] = []
    ctx.sources.timer.after(0, seen.append, mechanism=mechanism)
    run_until(ctx, lambda: bool(seen), timeout=1)
    assert seen == [0]


@pytest.mark.parametrize("clock", ["monotonic", "realtime", "boottime"])
def test_absolute_deadline_on_each_clock(
    no_fd_leak: None, ctx: AioContext, mechanism: str, clock: str
) -> None:
    clockid = {
        "monotonic": time.CLOCK_MONOTONIC,
        "realtime": time.CLOCK_REALTIME,
        "boottime": getattr(time, "CLOCK_BOOTTIME", None),
    }[clock]
    if clockid is None:
        pytest.skip(f"no {clock} clock here")
    seen: list[int] = []
    deadline = time.clock_gettime_ns(clockid) + 20 * MS
    t = ctx.sources.timer.at(deadline, seen.append, clock=clock, mechanism=mechanism)
    assert t.clock == clock
    run_until(ctx, lambda: bool(seen), timeout=5)
    assert time.clock_gettime_ns(clockid) >= deadline
    assert seen == [0]


def test_absolute_periodic_in_the_past_counts_missed_periods(
    ctx: AioContext, mechanism: str
) -> None:
    seen: list[int] = []
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    # First expiry 95 ms ago, every 10 ms: 10 expirations are due at once.
    t = ctx.sources.timer.at(now - 95 * MS, seen.append, interval_ns=10 * MS, mechanism=mechanism)
    run_until(ctx, lambda: bool(seen), timeout=5)
    late = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - now
    t.cancel()
    assert seen[0] >= 9, seen
    assert seen[0] + 1 <= (95 * MS + late) // (10 * MS) + 1, (seen, late)


def test_relative_timers_on_realtime_and_boottime(ctx: AioContext, mechanism: str) -> None:
    seen: list[str] = []
    ctx.sources.timer.after(
        5 * MS, lambda _o: seen.append("rt"), clock="realtime", mechanism=mechanism
    )
    if hasattr(time, "CLOCK_BOOTTIME"):
        ctx.sources.timer.after(
            5 * MS, lambda _o: seen.append("bt"), clock="boottime", mechanism=mechanism
        )
    run_until(ctx, lambda: len(seen) == (2 if hasattr(time, "CLOCK_BOOTTIME") else 1))


def test_cancel_from_own_callback(no_fd_leak: None, ctx: AioContext, mechanism: str) -> None:
    seen: list[int] = []
    handle: list[TimerHandle] = []

    def cb(overrun: int) -> None:
        seen.append(overrun)
        handle[0].cancel()

    handle.append(ctx.sources.timer.periodic(2 * MS, cb, mechanism=mechanism))
    run_until(ctx, lambda: bool(seen))
    poll_for(ctx, 0.02)
    assert len(seen) == 1  # (its overrun depends on how loaded the machine is)


def test_timers_are_cancelled_with_the_context(
    no_fd_leak: None, backend: str, registry: Any, mechanism: str
) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    t1 = ctx.sources.timer.periodic(MS, lambda _o: None, mechanism=mechanism)
    t2 = ctx.sources.timer.after(10 * MS, lambda _o: None, mechanism=mechanism)
    assert ctx.sources.timer.timers == [t1, t2]
    ctx.close()
    assert not t1.active
    assert not t2.active


def test_timerfd_is_a_registered_fd(ctx: AioContext) -> None:
    if timerfd_unavailable_reason() is not None:
        pytest.skip("no timerfd")
    t: Any = ctx.sources.timer.periodic(MS, lambda _o: None, mechanism="timerfd")
    fd = t.fileno()
    assert fd in ctx.handler_fds()
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[timerfd]"
    t.cancel()
    assert fd not in ctx.handler_fds()


def test_callback_exception_is_reported_and_the_timer_keeps_running(
    ctx: AioContext, mechanism: str
) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    seen: list[int] = []

    def cb(overrun: int) -> None:
        seen.append(overrun)
        if len(seen) == 1:
            raise RuntimeError("tick failed")

    t = ctx.sources.timer.periodic(2 * MS, cb, mechanism=mechanism)
    run_until(ctx, lambda: len(seen) >= 3)
    t.cancel()
    assert [type(e) for e in errors] == [RuntimeError]


# -- bad inputs: clear errors, nothing changed ----------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (
            lambda s: s.periodic(-1, print),
            ValueError,
            f"interval_ns must be > 0 and <= 2**63 - 1 ({MAX_NS}, about 292 years) "
            "nanoseconds, got -1",
        ),
        (lambda s: s.periodic(0, print), ValueError, "interval_ns must be > 0 and <= 2**63 - 1"),
        (lambda s: s.periodic(1.5, print), TypeError, "interval_ns must be an int number"),
        (lambda s: s.periodic(True, print), TypeError, "interval_ns must be an int number"),
        (lambda s: s.periodic(MS, "cb"), TypeError, "callback must be a callable, got str"),
        (lambda s: s.periodic(MS, print, first_ns=-5), ValueError, "first_ns must be >= 0"),
        (lambda s: s.after(-1, print), ValueError, "delay_ns must be >= 0 and <= 2**63 - 1"),
        (lambda s: s.after(MS, None), TypeError, "callback must be a callable, got NoneType"),
        (lambda s: s.at(-3, print), ValueError, "deadline_ns must be >= 0"),
        (lambda s: s.at(MS, print, interval_ns=-1), ValueError, "interval_ns must be >= 0"),
        (
            lambda s: s.after(MS, print, clock="tai"),
            ValueError,
            "clock must be one of 'monotonic', 'realtime', 'boottime'; got 'tai'",
        ),
        (lambda s: s.after(MS, print, clock=1), TypeError, "clock must be a str"),
        (
            lambda s: s.after(MS, print, mechanism="hrtimer"),
            ValueError,
            "mechanism must be None or one of 'timerfd', 'timer-list'; got 'hrtimer'",
        ),
    ],
)
def test_bad_inputs(
    no_fd_leak: None, ctx: AioContext, call: Any, exc: type[Exception], message: str
) -> None:
    source = ctx.sources.timer
    with pytest.raises(exc, match=re.escape(message)):
        call(source)
    assert source.timers == []
    assert ctx.handler_fds() == []


# Times past MAX_NS: each is refused, by name, on both mechanisms.  Through
# ctypes the first two used to arm a timer ~1 s away and disarm one that still
# said active; the periods fired every millisecond.
_TOO_BIG = [
    (lambda s, m: s.after(MAX_NS + 1, print, mechanism=m), "delay_ns", ">= 0"),
    (lambda s, m: s.after(2**64 * 10**9 + 10**9, print, mechanism=m), "delay_ns", ">= 0"),
    (lambda s, m: s.after(2**70 * 10**9, print, mechanism=m), "delay_ns", ">= 0"),
    (lambda s, m: s.at(MAX_NS + 1, print, mechanism=m), "deadline_ns", ">= 0"),
    (lambda s, m: s.at(0, print, interval_ns=MAX_NS + 1, mechanism=m), "interval_ns", ">= 0"),
    (lambda s, m: s.periodic(2**64 * 10**9 + MS, print, mechanism=m), "interval_ns", "> 0"),
    (lambda s, m: s.periodic(MS, print, first_ns=MAX_NS + 1, mechanism=m), "first_ns", ">= 0"),
]


@pytest.fixture
def poll_ctx(registry: Any) -> Iterator[AioContext]:
    """A context on poll: where the backend plays no part, one is enough."""
    with AioContext(backend="poll", registry=registry) as ctx:
        yield ctx


@pytest.mark.parametrize(("call", "argname", "low"), _TOO_BIG)
def test_times_past_max_ns_are_refused_and_change_nothing(
    no_fd_leak: None, poll_ctx: AioContext, mechanism: str, call: Any, argname: str, low: str
) -> None:
    ctx = poll_ctx
    source = ctx.sources.timer
    fds = ctx.handler_fds()
    message = f"{argname} must be {low} and <= 2**63 - 1 ({MAX_NS}, about 292 years) nanoseconds"
    with pytest.raises(ValueError, match=re.escape(message)):
        call(source, mechanism)
    assert source.timers == []
    assert ctx.handler_fds() == fds


def test_max_ns_is_accepted_and_is_far_away(
    no_fd_leak: None, poll_ctx: AioContext, mechanism: str
) -> None:
    """At the bound a timer is armed (never truncated, never disarmed) on both mechanisms."""
    ctx = poll_ctx
    seen: list[str] = []
    source = ctx.sources.timer
    far = [
        source.after(MAX_NS, lambda _o: seen.append("after"), mechanism=mechanism),
        source.at(MAX_NS, lambda _o: seen.append("at"), clock="realtime", mechanism=mechanism),
    ]
    tick = source.periodic(MAX_NS, lambda _o: seen.append("tick"), first_ns=MS, mechanism=mechanism)
    run_until(ctx, lambda: bool(seen), timeout=5)
    poll_for(ctx, 0.03)
    assert seen == ["tick"]  # once: the next period is 292 years away
    for t in [*far, tick]:
        assert t.active
        remaining = t.remaining_ns()
        assert remaining is not None and remaining > 2**62, (t, remaining)
        t.cancel()


def test_ctypes_binding_refuses_what_a_c_long_cannot_hold() -> None:
    """ctypes cut an int too big for a C long to its low bits; the binding now refuses it."""
    if timerfd_unavailable_reason() is not None:
        pytest.skip("no timerfd")
    from aiocore_plugins import timer_source

    binding = _ctypes_binding(timer_source)
    fd = binding.create(time.CLOCK_MONOTONIC)
    try:
        for initial, interval in ((2**64 * 10**9 + 10**9, 0), (10**9, 2**64 * 10**9 + MS)):
            with pytest.raises(OverflowError, match="does not fit a struct timespec"):
                binding.settime(fd, 0, initial, interval)
            assert binding.gettime(fd) == (0, 0)  # left disarmed, as it was
        binding.settime(fd, 0, MAX_NS, MAX_NS)  # the bound itself fits a 64-bit long
        value, interval = binding.gettime(fd)
        assert value > 2**62 and interval == MAX_NS
    finally:
        os.close(fd)


def _ctypes_binding(timer_source: Any) -> Any:
    """A binding forced onto the ctypes path (the one Python < 3.13 uses)."""
    saved = getattr(os, "timerfd_create", None)
    try:
        if saved is not None:
            del os.timerfd_create  # type: ignore[attr-defined]
        binding = timer_source._Timerfd()
    finally:
        if saved is not None:
            os.timerfd_create = saved  # type: ignore[attr-defined]
    assert binding.via.startswith("ctypes")
    return binding


def test_timerfd_asked_for_where_missing_raises_with_reason(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiocore_plugins import timer_source

    source = ctx.sources.timer
    monkeypatch.setattr(source, "_binding", None)
    monkeypatch.setattr(timer_source, "_TIMERFD_REASON", "timerfd is Linux-only; this is plan9")
    with pytest.raises(BackendUnavailable, match=r"'timerfd' is not available here: .*plan9"):
        source.after(MS, print, mechanism="timerfd")
    # The fallback still works with the same API.
    t = source.after(MS, print, mechanism="timer-list")
    assert t.mechanism == "timer-list"
    t.cancel()


def test_ctypes_binding_agrees_with_the_kernel() -> None:
    """The ctypes path (used before 3.13) arms, reads back and disarms a timer."""
    if timerfd_unavailable_reason() is not None:
        pytest.skip("no timerfd")
    from aiocore_plugins import timer_source

    binding = _ctypes_binding(timer_source)
    fd = binding.create(time.CLOCK_MONOTONIC)
    try:
        binding.settime(fd, 0, 3_000_000_123, 1_500_000_000)
        value, interval = binding.gettime(fd)
        assert 2_000_000_000 < value <= 3_000_000_123
        assert interval == 1_500_000_000
        binding.settime(fd, 0, 0, 0)
        assert binding.gettime(fd) == (0, 0)
        with pytest.raises(OSError):
            binding.settime(-1, 0, 1, 0)
    finally:
        os.close(fd)


def test_close_cancels_every_timer_when_one_removal_raises(
    no_fd_leak: None, poll_ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal that raises (e.g. set_fd_handler's thread check) stops no other cancel.

    close() used to stop at the first timer that raised, and the older
    timers' timerfds (plain ints, no finalizer) stayed open for good.  Now
    every timer is cancelled, each closes its fd, and the first error (the
    newest timer's: close goes newest first) is raised at the end.
    """
    if timerfd_unavailable_reason() is not None:
        pytest.skip("no timerfd")
    from aiocore.testing import open_fds

    ctx = poll_ctx
    before = open_fds()
    source = ctx.sources.timer
    timers: list[Any] = [
        source.periodic(10**9, lambda _o: None, mechanism="timerfd") for _ in range(3)
    ]
    timers.append(source.after(10**9, lambda _o: None, mechanism="timer-list"))
    fds = {t.fileno() for t in timers[:3]}
    assert fds <= open_fds() - before
    real = ctx.set_fd_handler

    def removal_fails(fd: Any, io_read: Any = None, *args: Any, **kw: Any) -> None:
        if io_read is None and fd in fds:
            raise RuntimeError(f"cannot remove fd {fd}")
        real(fd, io_read, *args, **kw)

    monkeypatch.setattr(ctx, "set_fd_handler", removal_fails)
    newest_timerfd = timers[2].fileno()
    with pytest.raises(RuntimeError, match=f"cannot remove fd {newest_timerfd}$"):
        source.close()
    # Checked at once, with every handle still referenced: nothing is left.
    assert [t.active for t in timers] == [False] * 4
    assert source.timers == []
    assert not (open_fds() - before), "a timerfd stayed open"
