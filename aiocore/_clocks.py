"""Clocks: what "now" means for each timer list.

QEMU keeps several clocks because a guest's virtual time must be able to stop
(while the VM is paused) and to be stepped by hand (qtest).  aiocore keeps the
three that matter outside an emulator:

* ``Clock.REALTIME``: monotonic, never jumps; the clock for timeouts.
* ``Clock.VIRTUAL``: advanced only by :func:`virtual_clock_step`, disabled until
  :func:`clock_enable` turns it on.  Tests use it to run timer logic with no
  real sleeps and deterministic results.
* ``Clock.HOST``: the wall clock (it can jump when the system time is set).

Clock state is process-wide, as in QEMU: enabling a clock or stepping virtual
time concerns every context, so each live context is woken to re-evaluate its
deadlines.  Contexts register here weakly, so a forgotten context is not kept
alive by its clock.
"""

from __future__ import annotations

import enum
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final, Protocol

__all__ = [
    "SCALE_MS",
    "SCALE_NS",
    "SCALE_US",
    "Clock",
    "clock_enable",
    "clock_enabled",
    "clock_get_ns",
    "virtual_clock_step",
]

SCALE_NS: Final = 1
SCALE_US: Final = 1_000
SCALE_MS: Final = 1_000_000


class Clock(enum.IntEnum):
    """The clocks a timer can run on (QEMU's ``QEMUClockType``)."""

    REALTIME = 0
    VIRTUAL = 1
    HOST = 2


_lock = threading.Lock()
_virtual_ns = 0
# Indexed by Clock value; a list so the timer code can index without a lookup.
_enabled: list[bool] = [True, False, True]
_wakers: weakref.WeakSet[_Wakeable] = weakref.WeakSet()


class _Wakeable(Protocol):
    """Anything that can be told that clock state changed (an AioContext)."""

    def notify(self) -> None: ...

    @property
    def closed(self) -> bool: ...


def _virtual_now() -> int:
    return _virtual_ns


#: ``now`` readers indexed by clock value, for the timer code's hot path.
CLOCK_READERS: Final[tuple[Callable[[], int], ...]] = (
    time.monotonic_ns,
    _virtual_now,
    time.time_ns,
)


def check_clock(clock: object, argname: str = "clock") -> Clock:
    """Return *clock* as a :class:`Clock`, or raise naming the accepted values."""
    if isinstance(clock, Clock):
        return clock
    if isinstance(clock, int) and not isinstance(clock, bool):
        try:
            return Clock(clock)
        except ValueError:
            pass
        raise ValueError(
            f"{argname} must be one of {', '.join(f'Clock.{c.name}' for c in Clock)}, got {clock!r}"
        )
    raise TypeError(
        f"{argname} must be a Clock ({', '.join(f'Clock.{c.name}' for c in Clock)}), "
        f"got {type(clock).__name__} {clock!r}"
    )


def clock_get_ns(clock: Clock) -> int:
    """Return the current time of *clock* in nanoseconds."""
    return CLOCK_READERS[check_clock(clock)]()


def clock_enabled(clock: Clock) -> bool:
    """Return whether timers on *clock* run."""
    return _enabled[check_clock(clock)]


def clock_enable(clock: Clock, enabled: bool) -> None:
    """Enable or disable *clock* for every context in the process.

    A disabled clock neither runs timers nor contributes deadlines.  Every
    context is woken so that a blocked ``poll(True)`` recomputes its timeout.
    """
    clock = check_clock(clock)
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    with _lock:
        changed = _enabled[clock] != enabled
        _enabled[clock] = enabled
    if changed:
        _wake_all()


def virtual_clock_step(ns: int) -> int:
    """Advance ``Clock.VIRTUAL`` by *ns* nanoseconds and return the new time.

    Wakes every context, so one blocked in ``poll(True)`` runs the virtual
    timers that became due.
    """
    global _virtual_ns
    if not isinstance(ns, int) or isinstance(ns, bool):
        raise TypeError(f"ns must be an int, got {type(ns).__name__} {ns!r}")
    if ns < 0:
        raise ValueError(f"ns must be >= 0 (virtual time never goes back), got {ns}")
    with _lock:
        _virtual_ns += ns
        now = _virtual_ns
    _wake_all()
    return now


def register_context(ctx: _Wakeable) -> None:
    """Remember *ctx* (weakly) so clock changes wake it."""
    with _lock:
        _wakers.add(ctx)


def unregister_context(ctx: _Wakeable) -> None:
    """Forget *ctx*; called when it closes."""
    with _lock:
        _wakers.discard(ctx)


def _wake_all() -> None:
    # The snapshot is taken under the lock and the contexts are notified
    # outside it (notify() takes locks of its own), so another thread may
    # close one in between.  Its notify() then raises; that context no longer
    # needs waking, but every one after it still does: skip it, never stop.
    with _lock:
        targets = list(_wakers)
    for ctx in targets:
        try:
            ctx.notify()
        except RuntimeError:
            if not ctx.closed:
                raise


def _reset_for_tests() -> None:
    """Restore the initial clock state (virtual time 0, VIRTUAL disabled)."""
    global _virtual_ns
    with _lock:
        _virtual_ns = 0
        _enabled[:] = [True, False, True]
