"""The ``timer`` source: kernel timers (``timerfd``) that count what the loop missed.

``ctx.sources.timer`` makes one-shot and periodic timers on three clocks::

    tick = ctx.sources.timer.periodic(interval_ns=10_000_000, callback=on_tick)
    once = ctx.sources.timer.after(delay_ns=5_000_000, callback=on_fire)
    noon = ctx.sources.timer.at(deadline_ns=t, callback=on_noon, clock="realtime")

Every callback is called as ``callback(overrun)``: ``overrun`` is how many
expirations were missed since the previous call (0 when the loop was on
time).  A periodic timer keeps its phase: after a loop that blocked for 55 ms,
a 10 ms timer fires once with ``overrun=4`` or ``5``, and its next expiry is
still on the original 10 ms grid, never drifted by the delay.

Every time argument (``delay_ns``, ``deadline_ns``, ``interval_ns``,
``first_ns``) is an ``int`` number of nanoseconds from 0 (1 for the
``interval_ns`` of :meth:`TimerSource.periodic`) to :data:`MAX_NS`,
``2**63 - 1`` (about 292 years), on both mechanisms.  That is the kernel's
range: a timerfd keeps its times as signed 64-bit nanoseconds, and
``os.timerfd_settime_ns`` takes no more.  Anything else is a ``TypeError`` or
a ``ValueError`` naming the argument and the range, raised before anything is
made.  A relative time near the bound never expires in practice; the kernel
saturates ``now + delay`` at ``2**63 - 1`` nanoseconds of its clock, so
:meth:`~TimerHandle.remaining_ns` of such a timer reads a little less on
timerfd than on the timer lists.

Why a kernel timer rather than the core's timer lists (``ctx.timer_new``)?
The kernel keeps counting while the process is busy, blocked, stopped or (with
``CLOCK_BOOTTIME``) suspended, and keeps the period exact: nothing in user space
re-arms the timer, so nothing drifts.  A core timer only runs when the loop
looks, and each re-arm is computed by the loop.

Kernel facts it relies on (``timerfd_create(2)``):

* ``timerfd_create(clockid, TFD_NONBLOCK | TFD_CLOEXEC)`` makes an fd that is
  readable once the timer expired.  ``read`` returns an 8-byte native-endian
  count of expirations since the last read (>= 1) and resets it; **the overrun
  is that count minus one**.  A non-blocking read of an unexpired timer fails
  with ``EAGAIN`` (a spurious wake-up, ignored).
* ``timerfd_settime(fd, flags, new, old)`` arms with ``it_value`` (the first
  expiry: relative, or absolute on the clock with ``TFD_TIMER_ABSTIME``) and
  ``it_interval`` (the period; 0 = one-shot).  **An ``it_value`` of zero
  disarms**, so "expire now" is armed as 1 ns, and an absolute deadline already
  in the past expires at once (with the periods since then counted as
  overruns).
* Clocks: ``CLOCK_MONOTONIC`` (does not jump, stops during suspend),
  ``CLOCK_REALTIME`` (the wall clock: an absolute deadline follows changes of
  the system time), ``CLOCK_BOOTTIME`` (monotonic and counts suspend).
* Python 3.13 has ``os.timerfd_create`` / ``os.timerfd_settime_ns`` /
  ``os.timerfd_gettime_ns``; before, this module calls libc's
  ``timerfd_create``, ``timerfd_settime`` and ``timerfd_gettime`` through
  :mod:`ctypes` with ``struct itimerspec`` (two ``struct timespec`` of
  ``time_t`` and ``long``, both C ``long`` on Linux's native ABIs).

Fallback (documented, never silent): where there is no timerfd (not Linux,
or the ``timerfd`` probe fails) the same API runs on the core's timer lists:
monotonic and boottime deadlines on ``Clock.REALTIME`` (monotonic), realtime
ones on ``Clock.HOST`` (the wall clock).  The overrun is computed from the
clock when the core timer runs (``(now - deadline) // interval``), the next
expiry is put back on the grid, so the callback sees the same numbers as with
timerfd.  What the fallback cannot do: count time while the process is
suspended under ``CLOCK_BOOTTIME`` before the loop wakes, or follow a wall
clock change before its next look.  :attr:`TimerSource.mechanism` says which
one a context uses; ``mechanism="timer-list"`` (or ``"timerfd"``) on any call
picks one explicitly, which is how both are tested on Linux.
"""

from __future__ import annotations

import abc
import ctypes
import ctypes.util
import errno
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from aiocore import (
    AioContext,
    BackendUnavailable,
    Clock,
    Timer,
    check_home_thread,
    clock_get_ns,
    close_newest_first,
    hookimpl,
)

__all__ = [
    "CLOCKS",
    "MAX_NS",
    "MECHANISMS",
    "TimerHandle",
    "TimerSource",
    "timerfd_unavailable_reason",
]

TimerCallback: TypeAlias = Callable[[int], object]

#: The clocks a timer can run on, by name, with their ``time.CLOCK_*`` ids
#: where this platform has them.
CLOCKS: Final[dict[str, int | None]] = {
    "monotonic": getattr(time, "CLOCK_MONOTONIC", None),
    "realtime": getattr(time, "CLOCK_REALTIME", None),
    "boottime": getattr(time, "CLOCK_BOOTTIME", None),
}
#: The two ways a timer runs: the kernel's timerfd, or the core's timer lists.
MECHANISMS: Final = ("timerfd", "timer-list")

#: The largest nanosecond count any argument takes: ``2**63 - 1``, about 292
#: years.  It is the range of the kernel's time (``ktime_t``) and of
#: ``os.timerfd_settime_ns``; the same bound holds on the timer-list
#: mechanism, so a value is accepted or refused the same way on both.
MAX_NS: Final = 2**63 - 1

_TFD_TIMER_ABSTIME: Final = 1
_NS: Final = 1_000_000_000


# ---------------------------------------------------------------------------
# timerfd binding: os.timerfd_* on 3.13+, ctypes to libc before.
# ---------------------------------------------------------------------------


_C_LONG_MAX: Final = 2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) - 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class _Timerfd:
    """The three timerfd calls, in nanoseconds, whichever way this Python offers them."""

    def __init__(self) -> None:
        self.flags = os.O_NONBLOCK | os.O_CLOEXEC
        if hasattr(os, "timerfd_create"):
            self.via = "os.timerfd_create"
            self.create = self._os_create
            self.settime = self._os_settime
            self.gettime = self._os_gettime
            return
        path = ctypes.util.find_library("c")
        libc = ctypes.CDLL(path, use_errno=True)
        try:
            create = libc.timerfd_create
            settime = libc.timerfd_settime
            gettime = libc.timerfd_gettime
        except AttributeError as exc:
            raise OSError(errno.ENOSYS, f"libc ({path}) has no timerfd functions") from exc
        create.argtypes = (ctypes.c_int, ctypes.c_int)
        create.restype = ctypes.c_int
        settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        )
        settime.restype = ctypes.c_int
        gettime.argtypes = (ctypes.c_int, ctypes.POINTER(_Itimerspec))
        gettime.restype = ctypes.c_int
        self._c_create, self._c_settime, self._c_gettime = create, settime, gettime
        self.via = f"ctypes ({path or 'libc'})"
        self.create = self._c_create_fd
        self.settime = self._c_set
        self.gettime = self._c_get

    # -- Python 3.13+ -------------------------------------------------------

    def _os_create(self, clockid: int) -> int:
        fd: int = os.timerfd_create(clockid, flags=self.flags)  # type: ignore[attr-defined,unused-ignore]
        return fd

    def _os_settime(self, fd: int, flags: int, initial_ns: int, interval_ns: int) -> None:
        os.timerfd_settime_ns(  # type: ignore[attr-defined,unused-ignore]
            fd, flags=flags, initial=initial_ns, interval=interval_ns
        )

    def _os_gettime(self, fd: int) -> tuple[int, int]:
        value: tuple[int, int] = os.timerfd_gettime_ns(fd)  # type: ignore[attr-defined,unused-ignore]
        return value

    # -- ctypes -------------------------------------------------------------

    @staticmethod
    def _raise() -> None:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))

    def _c_create_fd(self, clockid: int) -> int:
        fd: int = self._c_create(clockid, self.flags)
        if fd < 0:
            self._raise()
        return fd

    def _c_set(self, fd: int, flags: int, initial_ns: int, interval_ns: int) -> None:
        # ctypes stores an int too big for a C long modulo 2**bits, silently:
        # refuse it here rather than arm the timer at a truncated time.
        # (TimerSource never passes more than MAX_NS, which fits a 64-bit long.)
        for name, ns in (("initial_ns", initial_ns), ("interval_ns", interval_ns)):
            if not 0 <= ns // _NS <= _C_LONG_MAX:
                raise OverflowError(
                    f"timerfd_settime: {name} {ns} does not fit a struct timespec here "
                    f"(0 to {_C_LONG_MAX} seconds)"
                )
        spec = _Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(initial_ns, _NS)
        spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(interval_ns, _NS)
        if self._c_settime(fd, flags, ctypes.byref(spec), None) < 0:
            self._raise()

    def _c_get(self, fd: int) -> tuple[int, int]:
        spec = _Itimerspec()
        if self._c_gettime(fd, ctypes.byref(spec)) < 0:
            self._raise()
        value = spec.it_value.tv_sec * _NS + spec.it_value.tv_nsec
        interval = spec.it_interval.tv_sec * _NS + spec.it_interval.tv_nsec
        return value, interval


_TIMERFD: _Timerfd | None = None
_TIMERFD_REASON: str | None = None
_probed = False


def _timerfd() -> _Timerfd | None:
    """The binding, probed once per process (a real timer made and closed)."""
    global _TIMERFD, _TIMERFD_REASON, _probed
    if not _probed:
        reason = None
        binding = None
        if not sys.platform.startswith("linux"):
            reason = f"timerfd is Linux-only; this is {sys.platform}"
        else:
            try:
                binding = _Timerfd()
                clockid = CLOCKS["monotonic"]
                assert clockid is not None
                fd = binding.create(clockid)
                os.close(fd)
            except (OSError, AttributeError) as exc:
                binding = None
                reason = f"timerfd_create() failed: {exc}"
        _TIMERFD, _TIMERFD_REASON, _probed = binding, reason, True
    return _TIMERFD


def timerfd_unavailable_reason() -> str | None:
    """``None`` if timerfd works here, else why the source falls back to timer lists."""
    _timerfd()
    return _TIMERFD_REASON


# ---------------------------------------------------------------------------
# Timer handles
# ---------------------------------------------------------------------------


def _clock_now(clockid: int) -> int:
    return time.clock_gettime_ns(clockid)


class TimerHandle(abc.ABC):
    """A timer made by :class:`TimerSource`; cancel it with :meth:`cancel`.

    Read-only attributes: :attr:`clock` (name), :attr:`interval_ns` (0 for a
    one-shot), :attr:`mechanism` (``"timerfd"`` or ``"timer-list"``),
    :attr:`expirations` (total, missed ones included) and :attr:`overruns`
    (total missed), :attr:`calls` (callback calls), :attr:`active`.
    """

    __slots__ = (
        "_callback",
        "_clockid",
        "_source",
        "active",
        "calls",
        "clock",
        "expirations",
        "interval_ns",
        "overruns",
    )

    mechanism: str = "?"

    def __init__(
        self,
        source: TimerSource,
        clock: str,
        clockid: int,
        interval_ns: int,
        callback: TimerCallback,
    ) -> None:
        self._source = source
        self.clock = clock
        self._clockid = clockid
        self.interval_ns = interval_ns
        self._callback = callback
        self.expirations = 0
        self.overruns = 0
        self.calls = 0
        self.active = True

    def __repr__(self) -> str:
        kind = f"periodic {self.interval_ns} ns" if self.interval_ns else "one-shot"
        state = "active" if self.active else "inactive"
        return (
            f"<TimerHandle {kind} on {self.clock} via {self.mechanism} {state} "
            f"calls={self.calls} overruns={self.overruns}>"
        )

    def _expired(self, count: int) -> None:
        # count >= 1 expirations since the last call.
        self.expirations += count
        self.overruns += count - 1
        self.calls += 1
        if not self.interval_ns:
            self._stop()
        self._callback(count - 1)

    @abc.abstractmethod
    def remaining_ns(self) -> int | None:
        """Nanoseconds until the next expiry (0 if due now), ``None`` if inactive."""

    def cancel(self) -> None:
        """Stop the timer and release what it holds; the callback never runs again.

        Idempotent, and safe from inside its own callback.  From a thread
        other than the home thread (without ``ctx.acquire()``) it raises
        ``RuntimeError`` and the timer goes on, whichever the mechanism.
        """
        check_home_thread(self._source._ctx, "cancel")
        self._stop()

    @abc.abstractmethod
    def _stop(self) -> None:
        """Release the mechanism's resources (timerfd handler, core timer)."""


class _TimerfdHandle(TimerHandle):
    __slots__ = ("_fd",)
    mechanism = "timerfd"

    def __init__(
        self,
        source: TimerSource,
        clock: str,
        clockid: int,
        interval_ns: int,
        callback: TimerCallback,
        first_ns: int,
        absolute: bool,
    ) -> None:
        super().__init__(source, clock, clockid, interval_ns, callback)
        binding = source._binding
        assert binding is not None
        fd = self._fd = binding.create(clockid)
        try:
            # it_value 0 would disarm: "now" is 1 ns.
            binding.settime(
                fd, _TFD_TIMER_ABSTIME if absolute else 0, max(first_ns, 1), interval_ns
            )
            source._ctx.set_fd_handler(fd, self._on_readable)
        except BaseException:
            self._fd = -1
            os.close(fd)
            raise

    def _on_readable(self, _opaque: object) -> None:
        try:
            data = os.read(self._fd, 8)
        except BlockingIOError:
            return  # not expired after all (re-armed, or drained by a nested poll)
        self._expired(int.from_bytes(data, sys.byteorder))

    def remaining_ns(self) -> int | None:
        if not self.active:
            return None
        binding = self._source._binding
        assert binding is not None
        value, _interval = binding.gettime(self._fd)
        return value

    def fileno(self) -> int:
        """The timerfd (for inspection; do not read it)."""
        return self._fd

    def _stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self._source._made.pop(self, None)
        fd, self._fd = self._fd, -1
        try:
            ctx = self._source._ctx
            if not ctx.closed:
                ctx.set_fd_handler(fd, None)
        finally:
            os.close(fd)


class _ListHandle(TimerHandle):
    __slots__ = ("_core_clock", "_deadline", "_timer")
    mechanism = "timer-list"

    def __init__(
        self,
        source: TimerSource,
        clock: str,
        clockid: int,
        interval_ns: int,
        callback: TimerCallback,
        first_ns: int,
        absolute: bool,
    ) -> None:
        super().__init__(source, clock, clockid, interval_ns, callback)
        # Deadlines are kept on the timer's own clock; the core timer is
        # armed on the core clock that runs alongside it (wall clock for
        # realtime, monotonic otherwise) and re-checked when it fires.
        self._core_clock = Clock.HOST if clock == "realtime" else Clock.REALTIME
        self._deadline = first_ns if absolute else _clock_now(clockid) + first_ns
        self._timer: Timer = source._ctx.timer_new_ns(self._core_clock, self._on_timer)
        self._arm()

    def _arm(self) -> None:
        if self._core_clock == Clock.HOST:
            self._timer.mod_ns(self._deadline)
        else:
            delta = self._deadline - _clock_now(self._clockid)
            self._timer.mod_ns(clock_get_ns(self._core_clock) + max(delta, 0))

    def _on_timer(self, _opaque: object) -> None:
        now = _clock_now(self._clockid)
        deadline = self._deadline
        if now < deadline:
            self._arm()  # the two clocks drifted apart; not due yet
            return
        interval = self.interval_ns
        if interval:
            count = 1 + (now - deadline) // interval
            self._deadline = deadline + count * interval
            self._arm()
        else:
            count = 1
        self._expired(count)

    def remaining_ns(self) -> int | None:
        if not self.active:
            return None
        return max(self._deadline - _clock_now(self._clockid), 0)

    def _stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self._source._made.pop(self, None)
        self._timer.delete()


# ---------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------


def _check_ns(value: object, argname: str, *, positive: bool) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{argname} must be an int number of nanoseconds, got "
                f"{type(value).__name__} {value!r}"
            )
        value = int(value)
    if not (1 if positive else 0) <= value <= MAX_NS:
        raise ValueError(
            f"{argname} must be {'> 0' if positive else '>= 0'} and <= 2**63 - 1 "
            f"({MAX_NS}, about 292 years) nanoseconds, got {value}"
        )
    return value


class TimerSource:
    """``ctx.sources.timer``: kernel timers for one context.

    :attr:`mechanism` is ``"timerfd"`` where the kernel has it, else
    ``"timer-list"`` (the core's timers; see the module docstring).  Every
    method takes ``mechanism=`` to choose per timer, and ``clock=`` one of
    ``"monotonic"`` (default), ``"realtime"``, ``"boottime"``.  Times are
    ``int`` nanoseconds from 0 to :data:`MAX_NS` (``2**63 - 1``); a value
    outside is a ``ValueError`` naming the argument, and nothing is made.

    Methods belong to the home thread (or a thread holding ``ctx.acquire()``).
    From another, :meth:`after`, :meth:`at`, :meth:`periodic` and
    :meth:`TimerHandle.cancel` raise ``RuntimeError`` naming the method and
    make or change nothing (no timerfd is opened), on both mechanisms: the
    timer lists would allow it, but a program must not work on one platform
    and fail on the next.
    """

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._binding = _timerfd()
        #: The mechanism timers use unless told otherwise.
        self.mechanism = "timerfd" if self._binding is not None else "timer-list"
        self._made: dict[TimerHandle, None] = {}

    def __repr__(self) -> str:
        return f"<TimerSource {self.mechanism} timers={len(self._made)}>"

    # -- public API ----------------------------------------------------------

    def after(
        self,
        delay_ns: int,
        callback: TimerCallback,
        *,
        clock: str = "monotonic",
        mechanism: str | None = None,
    ) -> TimerHandle:
        """A one-shot timer that calls ``callback(0)`` *delay_ns* from now."""
        delay = _check_ns(delay_ns, "delay_ns", positive=False)
        return self._make("after", callback, clock, mechanism, 0, delay, False)

    def at(
        self,
        deadline_ns: int,
        callback: TimerCallback,
        *,
        clock: str = "monotonic",
        interval_ns: int = 0,
        mechanism: str | None = None,
    ) -> TimerHandle:
        """A timer that first expires at the absolute time *deadline_ns* of *clock*.

        With *interval_ns* > 0 it then repeats on that grid.  A deadline in
        the past expires at once, with the missed periods as the overrun.
        For ``clock="realtime"`` the deadline is nanoseconds since the epoch
        (``time.time_ns()``); for the others, ``time.clock_gettime_ns`` of
        that clock.
        """
        deadline = _check_ns(deadline_ns, "deadline_ns", positive=False)
        interval = _check_ns(interval_ns, "interval_ns", positive=False)
        return self._make("at", callback, clock, mechanism, interval, deadline, True)

    def periodic(
        self,
        interval_ns: int,
        callback: TimerCallback,
        *,
        first_ns: int | None = None,
        clock: str = "monotonic",
        mechanism: str | None = None,
    ) -> TimerHandle:
        """A timer that calls ``callback(overrun)`` every *interval_ns*.

        The first expiry is *first_ns* from now (default: one interval).
        ``overrun`` is the number of periods missed since the previous call.
        """
        interval = _check_ns(interval_ns, "interval_ns", positive=True)
        first = interval if first_ns is None else _check_ns(first_ns, "first_ns", positive=False)
        return self._make("periodic", callback, clock, mechanism, interval, first, False)

    @property
    def timers(self) -> list[TimerHandle]:
        """The active timers of this source, oldest first."""
        return list(self._made)

    def close(self) -> None:
        """Cancel every timer (the context is closing), newest first.

        Every timer is cancelled even if cancelling one raised (a timer that
        raised has still closed its timerfd); the first error is raised at
        the end (:func:`aiocore.close_newest_first`).
        """
        close_newest_first(self._made, TimerHandle.cancel)

    # -- internals -----------------------------------------------------------

    def _make(
        self,
        what: str,
        callback: TimerCallback,
        clock: str,
        mechanism: str | None,
        interval: int,
        first: int,
        absolute: bool,
    ) -> TimerHandle:
        if not callable(callback):
            raise TypeError(
                f"callback must be a callable, got {type(callback).__name__} {callback!r}"
            )
        if not isinstance(clock, str):
            raise TypeError(
                f"clock must be a str, one of {', '.join(map(repr, CLOCKS))}; "
                f"got {type(clock).__name__} {clock!r}"
            )
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(map(repr, CLOCKS))}; got {clock!r}")
        clockid = CLOCKS[clock]
        if clockid is None:
            raise ValueError(f"clock {clock!r} does not exist on {sys.platform}")
        if mechanism is None:
            mechanism = self.mechanism
        elif not isinstance(mechanism, str) or mechanism not in MECHANISMS:
            raise ValueError(
                f"mechanism must be None or one of {', '.join(map(repr, MECHANISMS))}; "
                f"got {mechanism!r}"
            )
        if mechanism == "timerfd" and self._binding is None:
            reason = _TIMERFD_REASON or "unknown"
            raise BackendUnavailable(
                f"mechanism 'timerfd' is not available here: {reason}", {"timerfd": reason}
            )
        if self._ctx.closed:
            raise RuntimeError("this AioContext is closed")
        # Before the timerfd is made: a refused call leaves nothing behind.
        check_home_thread(self._ctx, what)
        cls = _TimerfdHandle if mechanism == "timerfd" else _ListHandle
        handle = cls(self, clock, clockid, interval, callback, first, absolute)
        self._made[handle] = None
        return handle


def _factory(ctx: Any) -> TimerSource:
    return TimerSource(ctx)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("timer", _factory)
