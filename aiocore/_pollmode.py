"""Adaptive busy polling: how long ``poll()`` spins on ``io_poll`` before sleeping.

Sleeping in the kernel and being woken costs microseconds; spinning on a
shared-memory index costs CPU.  QEMU's answer, kept here, is a window that
adapts to how long the loop actually ended up blocking (SPEC 5):

* blocked no longer than the window: the window was right, keep it;
* blocked longer than ``max_ns``: polling would not have helped, shrink
  (divide by ``shrink``, or drop to 0);
* in between: a slightly longer window would have caught the event, grow
  (multiply by ``grow``, 2 by default, starting from 4 us), capped at ``max_ns``.

This module holds the numbers and the rule; the context runs the loop.
"""

from __future__ import annotations

import threading
from typing import Final

__all__ = ["PollMode"]

#: The first non-zero window, as in QEMU.
INITIAL_POLL_NS: Final = 4000


class PollMode:
    """The busy-poll window of one context and the rule that adapts it.

    :meth:`adjust` runs in the home thread (inside ``poll()``), while
    :meth:`set_params` may run in any thread (``ctx.set_poll_params()`` on an
    IOThread's context).  Without care, an ``adjust()`` that read the old
    parameters could store its window after ``set_params()`` reset it: with
    polling just switched off (``max_ns`` 0, so ``adjust()`` is never called
    again) the loop would busy-poll for that stale window forever.  So
    ``set_params()`` bumps a generation under a lock, and ``adjust()`` reads
    the generation first and stores a changed window under the same lock only
    if the generation is unchanged.  The hot path takes the lock only when the
    window actually changes; readers (``poll()`` reading ``ns``) need no lock,
    as a stale window merely polls once more or once less.
    """

    __slots__ = ("_gen", "_lock", "grow", "max_ns", "ns", "shrink", "started")

    def __init__(self, max_ns: int = 0, grow: int = 0, shrink: int = 0) -> None:
        self.max_ns = max_ns
        self.grow = grow
        self.shrink = shrink
        #: The current window; 0 until the first adjustment grows it.
        self.ns = 0
        #: True between io_poll_begin and io_poll_end calls.
        self.started = False
        self._lock = threading.Lock()
        self._gen = 0

    def set_params(self, max_ns: int, grow: int, shrink: int) -> None:
        """Install new parameters and restart the window from 0.  Any thread."""
        with self._lock:
            self.max_ns = max_ns
            self.grow = grow
            self.shrink = shrink
            self.ns = 0
            self._gen += 1

    def adjust(self, block_ns: int) -> None:
        """Adapt the window after a poll that took *block_ns* (polling included)."""
        gen = self._gen  # first: a set_params() after this read is detected below
        ns = self.ns
        max_ns = self.max_ns
        if block_ns <= ns:
            return
        if block_ns > max_ns:
            shrink = self.shrink
            new = ns // shrink if shrink else 0
        elif ns < max_ns and block_ns < max_ns:
            new = ns * (self.grow or 2) if ns else INITIAL_POLL_NS
            if new > max_ns:
                new = max_ns
        else:
            return
        if new != ns:
            with self._lock:
                if self._gen == gen:
                    self.ns = new
