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

from typing import Final

__all__ = ["PollMode"]

#: The first non-zero window, as in QEMU.
INITIAL_POLL_NS: Final = 4000


class PollMode:
    """The busy-poll window of one context and the rule that adapts it."""

    __slots__ = ("grow", "max_ns", "ns", "shrink", "started")

    def __init__(self, max_ns: int = 0, grow: int = 0, shrink: int = 0) -> None:
        self.max_ns = max_ns
        self.grow = grow
        self.shrink = shrink
        #: The current window; 0 until the first adjustment grows it.
        self.ns = 0
        #: True between io_poll_begin and io_poll_end calls.
        self.started = False

    def set_params(self, max_ns: int, grow: int, shrink: int) -> None:
        """Install new parameters and restart the window from 0."""
        self.max_ns = max_ns
        self.grow = grow
        self.shrink = shrink
        self.ns = 0

    def adjust(self, block_ns: int) -> None:
        """Adapt the window after a poll that took *block_ns* (polling included)."""
        ns = self.ns
        max_ns = self.max_ns
        if block_ns <= ns:
            return
        if block_ns > max_ns:
            self.ns = ns // self.shrink if self.shrink else 0
        elif ns < max_ns and block_ns < max_ns:
            ns = ns * (self.grow or 2) if ns else INITIAL_POLL_NS
            self.ns = min(ns, max_ns)
