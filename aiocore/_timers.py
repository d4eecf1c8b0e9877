"""Timers: one ordered list per clock per context.

Each clock's list is a binary heap of ``[expire_ns, seq, timer]`` entries.
``seq`` grows with every arming, so equal expiries fire in the order they were
set and ``heapq`` never has to compare two timers.  Re-arming or deleting a
timer does not search the heap: it blanks the timer's current entry (O(1)) and
pushes a new one; blank entries are dropped when they reach the head, and the
heap is compacted when blanks outnumber live entries.  200,000 timers at
random deadlines therefore cost O(log n) each, not O(n).

``seq`` also implements the rule that a timer armed while timers run waits for
the next ``poll()`` (SPEC 8, a deliberate deviation from QEMU, which can
livelock on a timer re-armed into the past): entries whose ``seq`` is at least
the value read when the run began are set aside and pushed back afterwards.

Arming, deleting and reading are safe from any thread: one lock per context
guards the heaps; callbacks run without it.

A callback's exception goes to the context's exception handler (SPEC 12).
One the handler itself raised, escaping a nested ``poll()`` or the coroutine
driver, is recognised there and passed on, not reported twice.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from . import _clocks
from ._bh import DropHook, call_drop_hooks
from ._clocks import CLOCK_READERS, Clock, check_clock
from ._errors import check_callback, check_int

__all__ = ["Timer", "TimerGroup"]

TimerCallback: TypeAlias = Callable[[Any], object]
# [expire_ns, seq, timer or None when blanked]
_Entry: TypeAlias = list[Any]

_NCLOCKS: Final = len(Clock)
_COMPACT_SLACK: Final = 64


class Timer:
    """A timer on one clock of one context (QEMU's ``QEMUTimer``).

    Created by :meth:`AioContext.timer_new`.  Its expiry is given in units of
    its *scale* (``SCALE_NS``, ``SCALE_US``, ``SCALE_MS``); :meth:`mod_ns`
    takes nanoseconds whatever the scale.
    """

    __slots__ = ("_cb", "_clock", "_entry", "_group", "_on_drop", "_opaque", "_scale")

    def __init__(
        self,
        group: TimerGroup,
        clock: Clock,
        scale: int,
        cb: TimerCallback,
        opaque: object,
    ) -> None:
        self._group = group
        self._clock = clock
        self._scale = scale
        self._cb = cb
        self._opaque = opaque
        self._entry: _Entry | None = None
        #: Set by internal callers only: when a context closes, called with
        #: the opaques of its armed timers that name it (see _bh.DropHook).
        self._on_drop: DropHook | None = None

    def __repr__(self) -> str:
        state = f"expires at {self.expire_time_ns} ns" if self.pending else "idle"
        return f"<Timer {self._clock.name} scale={self._scale} {state} cb={self._cb!r}>"

    @property
    def clock(self) -> Clock:
        """The clock this timer runs on."""
        return self._clock

    @property
    def scale(self) -> int:
        """Nanoseconds per unit of :meth:`mod`'s argument."""
        return self._scale

    @property
    def pending(self) -> bool:
        """True while the timer is armed (QEMU's ``timer_pending``)."""
        return self._entry is not None

    @property
    def expire_time_ns(self) -> int:
        """The expiry in nanoseconds, or -1 if the timer is not armed."""
        entry = self._entry
        return -1 if entry is None else int(entry[0])

    def mod(self, expire: int) -> None:
        """Arm the timer to expire at *expire* (in units of its scale).

        Re-arming an armed timer moves it.  If it becomes the earliest timer
        of its clock, the context is notified so a blocked ``poll()`` re-computes
        its timeout.  Safe from any thread.
        """
        self._group.arm(self, check_int(expire, "expire") * self._scale, False)

    def mod_ns(self, expire_ns: int) -> None:
        """Like :meth:`mod`, with the expiry in nanoseconds."""
        self._group.arm(self, check_int(expire_ns, "expire_ns"), False)

    def mod_anticipate(self, expire: int) -> None:
        """Move the expiry to *expire* only if that is earlier (arm it if idle)."""
        self._group.arm(self, check_int(expire, "expire") * self._scale, True)

    def mod_anticipate_ns(self, expire_ns: int) -> None:
        """Like :meth:`mod_anticipate`, with the expiry in nanoseconds."""
        self._group.arm(self, check_int(expire_ns, "expire_ns"), True)

    def delete(self) -> None:
        """Disarm the timer; it can be armed again.  Safe from any thread."""
        self._group.disarm(self)


class TimerGroup:
    """The timer lists of one context (QEMU's ``QEMUTimerListGroup``)."""

    __slots__ = (
        "_active",
        "_deferred",
        "_heaps",
        "_live",
        "_lock",
        "_notify",
        "_on_error",
        "_seq",
        "armed",
        "closed",
    )

    def __init__(
        self,
        notify: Callable[[], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._lock = threading.Lock()
        self._heaps: list[list[_Entry]] = [[] for _ in range(_NCLOCKS)]
        self._live = [0] * _NCLOCKS
        #: The clocks with a live timer, in clock order: what deadline_ns()
        #: and run(), called around every poll() while a timer is armed,
        #: look at.  Replaced (never mutated) under the lock when a count
        #: goes to or from 0, so a reader without the lock sees a whole one.
        self._active: tuple[int, ...] = ()
        #: Per clock: due entries a run set aside because they were armed
        #: during it.  Shared by nested runs, which put them back first.
        self._deferred: list[list[_Entry]] = [[] for _ in range(_NCLOCKS)]
        self._seq = 0
        self._notify = notify
        self._on_error = on_error
        #: Number of armed timers over all clocks; 0 lets ``poll()`` skip timers.
        self.armed = 0
        self.closed = False

    def new(self, clock: object, scale: object, cb: object, opaque: object) -> Timer:
        """Validate the arguments and make a timer (not armed)."""
        c = check_clock(clock)
        s = check_int(scale, "scale")
        if s <= 0:
            raise ValueError(f"scale must be > 0 (SCALE_NS, SCALE_US, SCALE_MS), got {s}")
        return Timer(self, c, s, check_callback(cb, "cb"), opaque)

    def arm(self, timer: Timer, expire_ns: int, anticipate: bool) -> None:
        """Arm *timer* at *expire_ns* (clamped at 0); see :meth:`Timer.mod`."""
        if expire_ns < 0:
            expire_ns = 0
        clock = timer._clock
        with self._lock:
            if self.closed:
                raise RuntimeError("the timer's AioContext is closed")
            old = timer._entry
            if old is not None:
                if anticipate and old[0] <= expire_ns:
                    return
                old[2] = None
                self._live[clock] -= 1
                self.armed -= 1
            entry = [expire_ns, self._seq, timer]
            self._seq += 1
            timer._entry = entry
            heap = self._heaps[clock]
            heapq.heappush(heap, entry)
            self._live[clock] += 1
            self.armed += 1
            if old is None and self._live[clock] == 1:
                self._refresh_active()
            # Blank entries (deleted or moved timers) at the head do not
            # count: drop them, so "earliest" means no live timer precedes.
            while heap[0][2] is None:
                heapq.heappop(heap)
            earliest = heap[0] is entry
            if len(heap) > 2 * self._live[clock] + _COMPACT_SLACK:
                heap[:] = [e for e in heap if e[2] is not None]
                heapq.heapify(heap)
        if earliest:
            self._notify()

    def disarm(self, timer: Timer) -> None:
        """Disarm *timer*; a no-op if it is not armed or the context is closed."""
        with self._lock:
            old = timer._entry
            if old is not None:
                old[2] = None
                timer._entry = None
                self._live[timer._clock] -= 1
                self.armed -= 1
                if not self._live[timer._clock]:
                    self._refresh_active()

    def _refresh_active(self) -> None:
        # Under the lock, when a clock's live count went to or from 0.
        live = self._live
        self._active = tuple(c for c in range(_NCLOCKS) if live[c])

    def deadline_ns(self) -> int:
        """Nanoseconds until the nearest expiry over the enabled clocks, or -1.

        ``poll()`` asks this before every blocking wait while a timer is
        armed, so the usual case takes no lock: only the clocks with a
        live timer are looked at, and a live head entry is read as it is.
        Without the lock a concurrent :meth:`arm` may push an earlier entry
        just after the read; it notifies the context when it does (its entry
        is then the earliest), and ``poll()`` tests that notification after
        announcing its wait, so it does not sleep (SPEC 6).  A concurrent disarm
        merely makes the answer early.  Blank entries at a head are dropped
        under the lock, as in :meth:`arm`.
        """
        best = -1
        enabled = _clocks._enabled
        for clock in self._active:
            if not enabled[clock]:
                continue
            # Due entries an outer run set aside (they count as live): the
            # next run (a nested poll's) runs them, so a nested poll must
            # not sleep.
            deferred = self._deferred[clock]
            if deferred and any(e[2] is not None for e in deferred):
                return 0
            heap = self._heaps[clock]
            entry = heap[0] if heap else None
            if entry is None or entry[2] is None:
                with self._lock:
                    while heap and heap[0][2] is None:
                        heapq.heappop(heap)
                    if not heap:
                        continue
                    entry = heap[0]
            delta = entry[0] - CLOCK_READERS[clock]()
            if delta < 0:
                delta = 0
            if best < 0 or delta < best:
                best = delta
        return best

    def run(self) -> bool:
        """Run every due timer of every enabled clock; return true if any ran.

        "Now" is read once per clock.  A timer armed during this run (by its
        own callback or another) waits for the next run even if it is due; a
        nested ``poll()`` from a timer callback is such a next run, so it
        first puts back what the outer run set aside.
        """
        progress = False
        seq_limit = self._seq
        lock = self._lock
        enabled = _clocks._enabled
        # Only clocks with a live timer: entries set aside by an outer run
        # are live, so their clock is here.  A snapshot: a clock a callback
        # arms first waits for the next run, as its timer would anyway.
        for clock in self._active:
            heap = self._heaps[clock]
            deferred = self._deferred[clock]
            if deferred:
                self._restore(heap, deferred)
            if not enabled[clock]:
                continue
            now = CLOCK_READERS[clock]()
            # The usual end of every poll(): the head is live and not due.
            # Read without the lock, as deadline_ns() reads it: a timer
            # armed earlier meanwhile notifies, and the next poll() runs it.
            if heap:
                entry = heap[0]
                if entry[0] > now and entry[2] is not None:
                    continue
            try:
                while True:
                    with lock:
                        timer = None
                        while heap:
                            entry = heap[0]
                            timer = entry[2]
                            if timer is None:
                                heapq.heappop(heap)
                                continue
                            if entry[0] > now:
                                timer = None
                                break
                            heapq.heappop(heap)
                            if entry[1] >= seq_limit:
                                deferred.append(entry)
                                timer = None
                                continue
                            timer._entry = None
                            entry[2] = None
                            self._live[clock] -= 1
                            self.armed -= 1
                            if not self._live[clock]:
                                self._refresh_active()
                            break
                    if timer is None:
                        break
                    progress = True
                    cb = timer._cb  # see _context.poll() on calling a slot's callable
                    try:
                        cb(timer._opaque)
                    except Exception as exc:
                        self._on_error(exc)
            finally:
                if deferred:
                    self._restore(heap, deferred)
        return progress

    def _restore(self, heap: list[_Entry], deferred: list[_Entry]) -> None:
        with self._lock:
            for entry in deferred:
                if entry[2] is not None:
                    heapq.heappush(heap, entry)
            deferred.clear()

    def close(self) -> None:
        """Disarm every timer; later arming raises ``RuntimeError``.

        Then calls the ``_on_drop`` hooks of the armed timers that have one
        (a sleeping coroutine's: it will never be woken by its timer).
        """
        dropped: list[Timer] = []
        with self._lock:
            self.closed = True
            for heap in self._heaps:
                for entry in heap:
                    timer = entry[2]
                    if timer is not None:
                        timer._entry = None
                        if timer._on_drop is not None:
                            dropped.append(timer)
                heap.clear()
            for deferred in self._deferred:
                deferred.clear()
            self._live = [0] * _NCLOCKS
            self._active = ()
            self.armed = 0
        if dropped:
            call_drop_hooks(dropped, "a context's timers")
