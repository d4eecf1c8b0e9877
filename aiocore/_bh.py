"""Bottom halves: callbacks scheduled to run at the next ``poll()``.

The queue of scheduled BHs is a ``dict`` used as an ordered set: insertion
keeps scheduling order (SPEC 7 runs BHs FIFO, a deliberate deviation from
QEMU's LIFO), a second ``schedule()`` of a queued BH is a no-op, and
``cancel()`` removes in O(1), so a cancelled and re-scheduled BH takes its
place at the end, by its latest scheduling.

A pass swaps the queue out into a *batch* (a list) and runs it.  The batch and
the position in it live on the queue object, not in the pass's frame, so that
a nested ``poll()`` from inside a BH callback first finishes the parent's
remaining batch (SPEC 7) and so that a pass interrupted by an exception is
resumed by the next ``poll()``.  A BH scheduled during a pass lands in the
fresh queue, so it runs in the next pass and a self-rescheduling BH never
starves fds and timers.

Scheduling is safe from any thread: one lock guards the queue, each BH's
flags and the two counters the timeout computation reads (``count``: BHs
queued or waiting in an unfinished batch; ``busy``: those of them that are not
idle).  Callbacks run without the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._errors import check_callback

__all__ = ["BH", "BHQueue"]


class BH:
    """A bottom half (QEMU's ``QEMUBH``), made by :meth:`AioContext.bh_new`.

    Its callback runs as ``cb(opaque)`` in the context's home thread during a
    later ``poll()``.
    """

    __slots__ = ("_cb", "_deleted", "_idle", "_opaque", "_queue", "_queued")

    def __init__(self, queue: BHQueue, cb: Callable[[Any], object], opaque: object) -> None:
        self._queue = queue
        self._cb = cb
        self._opaque = opaque
        self._queued = False
        self._idle = False
        self._deleted = False

    def __repr__(self) -> str:
        state = "deleted" if self._deleted else "scheduled" if self._queued else "idle"
        return f"<BH {state} cb={self._cb!r}>"

    @property
    def scheduled(self) -> bool:
        """True from ``schedule()`` until its callback starts (or ``cancel()``)."""
        return self._queued

    @property
    def deleted(self) -> bool:
        """True once :meth:`delete` was called."""
        return self._deleted

    def schedule(self) -> None:
        """Run the callback at the next BH pass; notify the context.  Any thread."""
        self._queue.schedule(self, False)

    def schedule_idle(self) -> None:
        """Schedule without counting as progress; caps a blocking wait at 10 ms."""
        self._queue.schedule(self, True)

    def cancel(self) -> None:
        """Unschedule (no notify).  A no-op if not scheduled, deleted or closed."""
        self._queue.cancel(self, False)

    def delete(self) -> None:
        """Unschedule and retire for good; safe from the BH's own callback."""
        self._queue.cancel(self, True)


class BHQueue:
    """The scheduled bottom halves of one context."""

    __slots__ = (
        "_batch",
        "_live",
        "_lock",
        "_notify",
        "_on_error",
        "_pos",
        "busy",
        "closed",
        "count",
    )

    def __init__(
        self,
        notify: Callable[[], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._lock = threading.Lock()
        self._live: dict[BH, None] = {}
        self._batch: list[BH] | None = None
        self._pos = 0
        self._notify = notify
        self._on_error = on_error
        self.count = 0
        self.busy = 0
        self.closed = False

    def new(self, cb: object, opaque: object) -> BH:
        """Validate *cb* and make an unscheduled BH."""
        return BH(self, check_callback(cb, "cb"), opaque)

    def schedule(self, bh: BH, idle: bool) -> None:
        """Queue *bh*; see :meth:`BH.schedule`."""
        with self._lock:
            if bh._deleted:
                raise RuntimeError(f"cannot schedule a deleted BH: {bh!r}")
            if self.closed:
                raise RuntimeError("cannot schedule a BH: its AioContext is closed")
            if not bh._queued:
                bh._queued = True
                bh._idle = idle
                self._live[bh] = None
                self.count += 1
                if not idle:
                    self.busy += 1
            elif bh._idle and not idle:
                bh._idle = False
                self.busy += 1
            else:
                return
        self._notify()

    def schedule_oneshot(self, cb: Callable[[Any], object], opaque: object) -> None:
        """Run ``cb(opaque)`` once at the next pass, then forget it."""
        bh = BH(self, cb, opaque)
        self.schedule(bh, False)
        # Retired now: it cannot be rescheduled, and cancel() through the
        # queue is impossible since nobody else holds it.
        bh._deleted = True

    def cancel(self, bh: BH, delete: bool) -> None:
        """Unqueue *bh* and, if *delete*, retire it."""
        with self._lock:
            if delete:
                bh._deleted = True
            if bh._queued:
                bh._queued = False
                # Absent when the BH already sits in a batch: the pass
                # skips entries whose _queued flag is clear.
                self._live.pop(bh, None)
                self.count -= 1
                if not bh._idle:
                    self.busy -= 1

    def run(self) -> bool:
        """Run one pass (finishing an interrupted or parent pass first).

        Returns true if a non-idle BH ran.
        """
        progress = False
        lock = self._lock
        while True:
            batch = self._batch
            fresh = batch is None
            if batch is None:
                if not self._live:
                    return progress
                with lock:
                    batch = list(self._live)
                    self._live.clear()
                self._batch = batch
                self._pos = 0
            n = len(batch)
            while self._batch is batch:
                pos = self._pos
                if pos >= n:
                    self._batch = None
                    break
                self._pos = pos + 1
                bh = batch[pos]
                lock.acquire()
                if not bh._queued:
                    lock.release()
                    continue
                bh._queued = False
                self.count -= 1
                if not bh._idle:
                    self.busy -= 1
                    progress = True
                lock.release()
                try:
                    bh._cb(bh._opaque)
                except Exception as exc:
                    self._on_error(exc)
            if fresh:
                return progress

    def close(self) -> None:
        """Unschedule everything; later ``schedule()`` raises ``RuntimeError``."""
        with self._lock:
            self.closed = True
            for bh in self._live:
                bh._queued = False
            if self._batch is not None:
                for bh in self._batch:
                    bh._queued = False
            self._live.clear()
            self._batch = None
            self.count = 0
            self.busy = 0
