"""Bottom halves: callbacks scheduled to run at the next ``poll()``.

The queue of scheduled BHs is a ``dict`` used as an ordered set: insertion
keeps scheduling order (SPEC 7 runs BHs FIFO, a deliberate deviation from
QEMU's LIFO), a second ``schedule()`` of a queued BH is a no-op, and
``cancel()`` removes in O(1), so a cancelled and re-scheduled BH takes its
place at the end, by its latest scheduling.

A pass swaps the queue out for a fresh dict, under the lock, and iterates the
old one (the *batch*), which nobody else mutates any more.  Each BH records
which dict holds it (``_where``) and which batch's pass took it (``_taken``);
it is queued while ``_where`` is set and is not the batch that took it.
``schedule()`` is a no-op while it is queued (scheduling twice before it runs
runs it once); ``cancel()`` clears ``_where``, so the pass skips it; the pass
marks it taken just before the call, so a ``schedule()`` from the callback
(or from anyone after that point) lands in the fresh queue and runs in the
*next* pass.  A self-rescheduling BH therefore never starves fds and timers.

The pass takes no lock per BH (a lock per BH was a sixth of a BH chain's
time): ``schedule()`` and ``cancel()`` write ``_where`` under the lock, and
the pass never writes it, only ``_taken``, which nothing else writes.  So a
``cancel()`` and ``schedule()`` from another thread between the pass's check
and its mark cannot be undone by the mark: the BH runs in this pass (the
cancel came too late, which SPEC 7 allows) and again in the next (the
schedule came after the check).  A pass that finishes its batch empties it,
so the BHs that ran, which keep pointing at it, hold no cycle through it.

The batch iterator lives on the queue, not in the pass's frame: a nested
``poll()`` from inside a BH callback pulls the parent's remaining BHs from the
same iterator first (SPEC 7), and a pass interrupted by an exception is
resumed by the next ``poll()``.  Such a pass takes its own batch *before*
finishing the old one and keeps it on the queue (``_slices``, QEMU's BH
slices) until its turn: what was scheduled before it began runs in it, and
what the rest of the old batch schedules waits for the next ``poll()``, as in
any pass.

The lock guards the live queue, each BH's ``_where`` and ``_idle`` while
queued, and ``nonidle`` (non-idle BHs in the live queue), which
``compute_timeout()`` reads without locking.

Two options of internal one-shots (:meth:`BHQueue.schedule_oneshot`), for
the coroutine driver, which rides on one-shot BHs:

* ``on_drop``: ``close()`` drops every queued BH.  For most BHs that is the
  whole story, but a one-shot can stand for a promise made to someone else
  (a coroutine marked "scheduled" until its BH runs).  ``close()`` calls
  ``on_drop(opaques)`` once per hook with the opaques of the dropped
  one-shots that named it, after the queue is closed, so the owner can undo
  the promise.  A hook that raises is logged: ``close()`` must go on
  releasing resources.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import check_callback

__all__ = ["BH", "BHQueue"]

log = logging.getLogger("aiocore")

#: ``on_drop`` of :meth:`BHQueue.schedule_oneshot` (and of an internal
#: timer, see :mod:`._timers`): gets the dropped opaques.
DropHook = Callable[[list[Any]], object]


def call_drop_hooks(dropped: list[Any], what: str) -> None:
    """Call the ``_on_drop`` hooks of *dropped* (BHs or timers), once per hook.

    Each hook gets the opaques of the dropped objects that named it.  A hook
    that raises is logged: the closing that dropped them must go on.
    """
    by_hook: dict[DropHook, list[Any]] = {}
    for obj in dropped:
        by_hook.setdefault(obj._on_drop, []).append(obj._opaque)
    for hook, opaques in by_hook.items():
        try:
            hook(opaques)
        except Exception:
            log.exception("on_drop hook %r raised while %s closed", hook, what)


class BH:
    """A bottom half (QEMU's ``QEMUBH``), made by :meth:`AioContext.bh_new`.

    Its callback runs as ``cb(opaque)`` in the context's home thread during a
    later ``poll()``.
    """

    __slots__ = (
        "_cb",
        "_deleted",
        "_idle",
        "_on_drop",
        "_opaque",
        "_queue",
        "_taken",
        "_where",
    )

    def __init__(self, queue: BHQueue, cb: Callable[[Any], object], opaque: object) -> None:
        self._queue = queue
        self._cb = cb
        self._opaque = opaque
        #: The dict (live queue or batch) holding this BH, or None.
        self._where: dict[BH, None] | None = None
        #: The batch whose pass took this BH (written by the pass only).
        self._taken: dict[BH, None] | None = None
        self._idle = False
        self._deleted = False
        #: See the module docstring; set only on internal one-shots.
        self._on_drop: DropHook | None = None

    def __repr__(self) -> str:
        state = "deleted" if self._deleted else "scheduled" if self.scheduled else "idle"
        return f"<BH {state} cb={self._cb!r}>"

    @property
    def scheduled(self) -> bool:
        """True from ``schedule()`` until its callback starts (or ``cancel()``)."""
        where = self._where
        return where is not None and where is not self._taken

    @property
    def deleted(self) -> bool:
        """True once :meth:`delete` was called."""
        return self._deleted

    def schedule(self) -> None:
        """Run the callback at the next BH pass; notify the context.  Any thread."""
        # The body of BHQueue.schedule, inlined: this is the hot path of a
        # BH chain, and a Python call costs as much as the work.
        queue = self._queue
        with queue._lock:
            where = self._where
            if where is None or where is self._taken:  # not queued
                if self._deleted or queue.closed:
                    raise queue._refusal(self)
                self._idle = False
                live = queue._live
                live[self] = None
                self._where = live
                queue.nonidle += 1
            elif self._idle:
                self._idle = False
                if where is queue._live:
                    queue.nonidle += 1
            else:
                return
        queue._notify()

    def schedule_idle(self) -> None:
        """Schedule without counting as progress; caps a blocking wait at 10 ms."""
        self._queue.schedule_idle(self)

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
        "_batch_dict",
        "_live",
        "_lock",
        "_notify",
        "_on_error",
        "_slices",
        "closed",
        "nonidle",
    )

    def __init__(
        self,
        notify: Callable[[], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._lock = threading.Lock()
        self._live: dict[BH, None] = {}
        #: Iterator over an unfinished pass's batch, or None.
        self._batch: Iterator[BH] | None = None
        self._batch_dict: dict[BH, None] = {}
        #: Batches taken by a pass that had to finish an older one first.
        self._slices: list[dict[BH, None]] = []
        self._notify = notify
        self._on_error = on_error
        self.nonidle = 0
        self.closed = False

    def new(self, cb: object, opaque: object) -> BH:
        """Validate *cb* and make an unscheduled BH."""
        return BH(self, check_callback(cb, "cb"), opaque)

    def _refusal(self, bh: BH) -> RuntimeError:
        if bh._deleted:
            return RuntimeError(f"cannot schedule a deleted BH: {bh!r}")
        return RuntimeError("cannot schedule a BH: its AioContext is closed")

    @property
    def pending(self) -> bool:
        """True if a BH is queued or an interrupted/parent pass has BHs left."""
        return bool(self._live) or self._batch is not None  # _slices: only with a _batch

    def schedule_idle(self, bh: BH) -> None:
        """Queue *bh* as idle; see :meth:`BH.schedule_idle`."""
        with self._lock:
            where = bh._where
            if where is not None and where is not bh._taken:
                return  # queued already
            if bh._deleted or self.closed:
                raise self._refusal(bh)
            bh._idle = True
            self._live[bh] = None
            bh._where = self._live
        self._notify()

    def schedule_oneshot(
        self,
        cb: Callable[[Any], object],
        opaque: object,
        *,
        on_drop: DropHook | None = None,
    ) -> None:
        """Run ``cb(opaque)`` once at the next pass, then forget it.

        *on_drop* is for internal callers; see the module docstring.
        """
        bh = BH(self, cb, opaque)
        bh._on_drop = on_drop
        bh.schedule()
        # Retired now: nobody else holds it, so it can never be rescheduled.
        bh._deleted = True

    def cancel(self, bh: BH, delete: bool) -> None:
        """Unqueue *bh* and, if *delete*, retire it."""
        with self._lock:
            if delete:
                bh._deleted = True
            where = bh._where
            if where is None or where is bh._taken:
                return  # not queued
            bh._where = None
            if where is self._live:
                del self._live[bh]
                if not bh._idle:
                    self.nonidle -= 1
            # else: it sits in a batch, which skips BHs whose _where is not it.

    def run(self) -> bool:
        """Run one pass (finishing an interrupted or parent pass first).

        Returns true if a non-idle BH ran.
        """
        progress = False
        batch_iter = self._batch
        if batch_iter is not None and self._live:
            # Finishing an older batch first (interrupted, or a parent
            # pass): this pass's own batch is what is scheduled *now*.
            self._slices.append(self._take_live())
        while True:
            if batch_iter is None:
                if self._slices:
                    batch = self._slices.pop(0)
                elif self._live:
                    # _take_live(), inlined: a BH chain runs one pass per
                    # poll(), and the call would be a tenth of its cost.
                    lock = self._lock
                    lock.acquire()
                    batch = self._live
                    self._live = {}
                    self.nonidle = 0
                    lock.release()
                else:
                    return progress
                self._batch_dict = batch
                batch_iter = self._batch = iter(batch)
            else:
                batch = self._batch_dict
            for bh in batch_iter:
                if bh._where is not batch:
                    continue  # cancelled (or cancelled and scheduled again)
                bh._taken = batch
                if not bh._idle:
                    progress = True
                cb = bh._cb  # see _context.poll() on calling a slot's callable
                try:
                    cb(bh._opaque)
                except Exception as exc:
                    # What the handler raised (from a nested poll(), or a
                    # coroutine's driver) is passed on by _on_error itself.
                    self._on_error(exc)
            if self._batch is batch_iter:
                self._batch = None
                batch.clear()  # done: see the module docstring
            if not self._slices:
                return progress
            batch_iter = self._batch

    def _take_live(self) -> dict[BH, None]:
        """Swap the live queue out for an empty one; return it (a new batch)."""
        with self._lock:
            batch = self._live
            self._live = {}
            self.nonidle = 0
        return batch

    def close(self) -> None:
        """Unschedule everything; later ``schedule()`` raises ``RuntimeError``.

        Then calls the ``on_drop`` hooks of the dropped one-shots that have one.
        """
        dropped: list[BH] = []
        with self._lock:
            self.closed = True
            for bh in self._live:
                bh._where = None
                if bh._on_drop is not None:
                    dropped.append(bh)
            self._live.clear()
            if self._batch is not None:
                batch = self._batch_dict
                for bh in self._batch:  # the rest: none of them was taken
                    if bh._where is batch and bh._on_drop is not None:
                        dropped.append(bh)
                    bh._where = None
            for batch in self._slices:
                for bh in batch:
                    if bh._where is batch and bh._on_drop is not None:
                        dropped.append(bh)
                    bh._where = None
            self._slices.clear()
            self._batch = None
            self.nonidle = 0
        if dropped:
            call_drop_hooks(dropped, "a BH queue")
