"""The fd handler table: which callbacks own which file descriptor.

A handler record (:class:`AioHandler`, QEMU's ``AioHandler``) is never
mutated into a different handler: every change makes a new record that takes
over the old one's pending readiness (QEMU copies ``pfd``), and the old record
is marked ``deleted``.  Code that holds a record (a dispatch in progress, a
nested ``poll()``, poll mode) checks ``deleted`` before each call, so a removed
handler is never called again, while the replacement is found by fd for the
readiness it inherited.  Python's garbage collector frees the old record once
no walker holds it, which is what QEMU's walker count does by hand.

The table also keeps the two facts poll mode needs without a scan:
``poll_disable_cnt`` (handlers without ``io_poll``; one of them forbids busy
polling) and ``poll_nodes`` (an immutable snapshot of the handlers that have
``io_poll``, which a walker may iterate while another thread swaps in a new
snapshot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["AioHandler", "FdTable"]

Callback = Callable[[Any], object]
PollCallback = Callable[[Any], bool]


class AioHandler:
    """One registration of callbacks for one fd."""

    __slots__ = (
        "deleted",
        "fd",
        "io_poll",
        "io_poll_begin",
        "io_poll_end",
        "io_poll_ready",
        "io_read",
        "io_write",
        "is_external",
        "mask",
        "opaque",
        "poll_began",
        "revents",
    )

    def __init__(
        self,
        fd: int,
        io_read: Callback | None,
        io_write: Callback | None,
        io_poll: PollCallback | None,
        io_poll_ready: Callback | None,
        opaque: object,
        is_external: bool,
        mask: int,
    ) -> None:
        self.fd = fd
        self.io_read = io_read
        self.io_write = io_write
        self.io_poll = io_poll
        self.io_poll_ready = io_poll_ready
        self.io_poll_begin: Callback | None = None
        self.io_poll_end: Callback | None = None
        self.opaque = opaque
        self.is_external = is_external
        #: The interest the callbacks ask for (EVENT_IN and/or EVENT_OUT).
        self.mask = mask
        #: Readiness reported by the backend and not yet dispatched.
        self.revents = 0
        self.deleted = False
        #: Got io_poll_begin (or was counted as begun) and not yet io_poll_end:
        #: the end goes to exactly the records the begin went to.
        self.poll_began = False

    def __repr__(self) -> str:
        parts = [f"fd={self.fd}"]
        parts += [n for n in ("io_read", "io_write", "io_poll") if getattr(self, n) is not None]
        if self.is_external:
            parts.append("external")
        if self.deleted:
            parts.append("deleted")
        return f"<AioHandler {' '.join(parts)}>"


class FdTable:
    """fd -> live :class:`AioHandler`, plus the counts poll mode reads."""

    __slots__ = ("nodes", "poll_disable_cnt", "poll_nodes", "special")

    def __init__(self) -> None:
        self.nodes: dict[int, AioHandler] = {}
        self.poll_nodes: tuple[AioHandler, ...] = ()
        self.poll_disable_cnt = 0
        #: A record that counts as pollable without an io_poll of its own and
        #: is kept out of ``poll_nodes`` (the context's internal notifier,
        #: whose io_poll the context evaluates inline).
        self.special: AioHandler | None = None

    def replace(self, fd: int, new: AioHandler | None) -> AioHandler | None:
        """Install *new* for *fd* (``None`` removes) and return the old record.

        The old record is marked deleted and its pending readiness moves to
        *new*.  The caller has already told the backend.
        """
        nodes = self.nodes
        old = nodes.get(fd)
        rebuild = False
        if old is not None:
            old.deleted = True
            if old.io_poll is None and old is not self.special:
                self.poll_disable_cnt -= 1
            else:
                rebuild = True
        if new is None:
            if old is not None:
                old.revents = 0
                del nodes[fd]
        else:
            if old is not None:
                new.revents = old.revents
                old.revents = 0
            nodes[fd] = new
            if new.io_poll is None and new is not self.special:
                self.poll_disable_cnt += 1
            else:
                rebuild = True
        if rebuild:
            self._rebuild()
        return old

    def restore(self, fd: int, old: AioHandler | None, new: AioHandler) -> None:
        """Undo ``replace(fd, new)`` that displaced *old* (the backend refused)."""
        revents = new.revents
        self.replace(fd, None)
        if old is not None:
            old.deleted = False
            old.revents = revents
            self.nodes[fd] = old
            if old.io_poll is None and old is not self.special:
                self.poll_disable_cnt += 1
            else:
                self._rebuild()

    def _rebuild(self) -> None:
        special = self.special
        self.poll_nodes = tuple(
            n for n in self.nodes.values() if n.io_poll is not None and n is not special
        )
