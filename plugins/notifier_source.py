"""The ``notifier`` source: wake a context from another thread or another process.

``ctx.sources.notifier.new(callback)`` makes a :class:`Wakeup`: an
:class:`~aiocore.EventNotifier` registered on the context, whose ``callback()``
runs in the context's home thread after someone set it.  Setting is the only
thing another thread or process ever does; everything else stays in the home
thread, so the waker needs no lock and no reference to the context.

Kernel facts it relies on:

* **eventfd** (Linux) is one fd holding a 64-bit counter.  A write of an
  8-byte native-endian integer adds it to the counter; the fd is readable
  while the counter is non-zero; a read returns and zeroes it.  A write of
  anything but 8 bytes fails with ``EINVAL``.
* **A pipe** (everywhere else, or ``kind="pipe"``) is readable while it holds
  a byte.  A write of up to ``PIPE_BUF`` (at least 512) bytes is atomic, so
  the same 8 bytes an eventfd wants set a pipe too.  That is why :func:`wake`
  writes 8 bytes: the waker need not know which kind it was handed.
* Both survive ``fork()`` (the child shares the open file) and
  ``subprocess.Popen(pass_fds=[...])`` (which clears close-on-exec for the
  listed fds in the child only).  A wake-up from a child is therefore a plain
  ``os.write`` on an inherited fd, with no IPC machinery.
* A full pipe, or an eventfd counter at its maximum, makes ``write`` fail with
  ``EAGAIN``: the notifier is already set, so the waker ignores it.  Wake-ups
  coalesce: ``callback()`` runs once for any number of sets between two
  dispatches, which is what a "something happened, go look" channel wants.

Which kind: the preferred available implementation (eventfd on Linux, a pipe
elsewhere), or the one named by *kind* (``"eventfd"``, ``"pipe"``, or a
third-party notifier), so both are selectable and testable on Linux.

Closing: a :class:`Wakeup` removes its handler before closing its fds, and
the source closes every wake-up it made when the context closes.  Close a
wake-up only once no other thread may still ``set()`` it: a set racing the
close could write to a reused fd number.  A child process holding the write
side keeps the *file* open, never the parent's fd number, so it may outlive
the wake-up harmlessly (its writes go nowhere once the read side is closed; a
pipe writer then gets ``EPIPE``, which :func:`wake` reports).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Final

from aiocore import AioContext, EventNotifier, check_home_thread, close_newest_first, hookimpl

__all__ = ["WAKE_BYTES", "NotifierSource", "Wakeup", "wake"]

#: What :func:`wake` writes: an 8-byte native-endian 1, which adds 1 to an
#: eventfd's counter and is one atomic write on a pipe.
WAKE_BYTES: Final = (1).to_bytes(8, sys.byteorder)


def wake(fd: int) -> None:
    """Set the notifier whose write side is *fd*; from any thread or process.

    *fd* is :meth:`Wakeup.write_fileno` (or an inherited copy of it).  An
    already-set notifier stays set (``EAGAIN`` is swallowed).  Any other
    ``OSError`` (``EBADF``, ``EPIPE`` once the reader is gone) propagates.
    """
    if type(fd) is not int:
        raise TypeError(f"fd must be an int file descriptor, got {type(fd).__name__} {fd!r}")
    try:
        os.write(fd, WAKE_BYTES)
    except BlockingIOError:
        pass


class Wakeup:
    """A notifier attached to a context: ``set()`` anywhere, ``callback()`` at home.

    Made by :meth:`NotifierSource.new`.  ``callback()`` is called with no
    arguments, once per dispatch in which the notifier was found set
    (wake-ups coalesce).  :attr:`wakeups` counts those calls.
    """

    __slots__ = ("_callback", "_ctx", "_notifier", "_source", "wakeups")

    def __init__(
        self, source: NotifierSource, notifier: EventNotifier, callback: Callable[[], object]
    ) -> None:
        self._source = source
        self._ctx = source._ctx
        self._notifier: EventNotifier | None = notifier
        self._callback = callback
        #: How many times ``callback()`` was called.
        self.wakeups = 0

    def __repr__(self) -> str:
        n = self._notifier
        state = "closed" if n is None else f"{n.name} fd={n.fileno()}"
        return f"<Wakeup {state} wakeups={self.wakeups}>"

    def _on_readable(self, notifier: EventNotifier) -> None:
        # io_read, opaque is the notifier.  A spurious wake-up (drained by a
        # nested poll, or a racing reader) finds nothing and calls nothing.
        if notifier.test_and_clear():
            self.wakeups += 1
            self._callback()

    def _live(self) -> EventNotifier:
        n = self._notifier
        if n is None:
            raise RuntimeError("this Wakeup is closed")
        return n

    def set(self) -> None:
        """Wake the context: ``callback()`` runs at its next dispatch.  Any thread."""
        self._live().set()

    @property
    def kind(self) -> str:
        """The notifier implementation: ``"eventfd"``, ``"pipe"``, ..."""
        return self._live().name

    @property
    def notifier(self) -> EventNotifier:
        """The underlying :class:`~aiocore.EventNotifier` (owned by this wake-up)."""
        return self._live()

    def fileno(self) -> int:
        """The fd the context watches (the read side)."""
        return self._live().fileno()

    def write_fileno(self) -> int:
        """The fd that wakes the context: give it to a child, which calls :func:`wake`.

        For an eventfd this is the same fd as :meth:`fileno`; for a pipe, its
        write end.  ``subprocess.Popen(..., pass_fds=[w.write_fileno()])``
        makes it inheritable in the child only; after ``os.fork()`` the child
        has it already.
        """
        n = self._live()
        write_fileno = getattr(n, "write_fileno", None)
        if write_fileno is None:
            raise TypeError(
                f"notifier kind {n.name!r} ({type(n).__name__}) has no write_fileno(): it "
                "cannot be set from another process; use kind='eventfd' or kind='pipe'"
            )
        fd: int = write_fileno()
        return fd

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (or after the context closed)."""
        return self._notifier is None

    def close(self) -> None:
        """Remove the handler, then close the notifier's fds.  Idempotent.

        From a thread other than the home thread (without ``ctx.acquire()``)
        it raises ``RuntimeError`` and the wake-up stays open and registered.
        """
        check_home_thread(self._ctx, "close")
        n = self._notifier
        if n is None:
            return
        self._notifier = None
        self._source._made.pop(self, None)
        try:
            if not self._ctx.closed:
                self._ctx.set_event_notifier(n, None)
        finally:
            n.close()


class NotifierSource:
    """``ctx.sources.notifier``: make :class:`Wakeup` channels for one context.

    All methods belong to the context's home thread (or a thread holding
    ``ctx.acquire()``); only :meth:`Wakeup.set` and :func:`wake` are for
    other threads and processes.  From another thread, :meth:`new` and
    :meth:`Wakeup.close` raise ``RuntimeError`` naming the method and make
    or change nothing.
    """

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        # Insertion-ordered set of live wake-ups (dict keys).
        self._made: dict[Wakeup, None] = {}

    def new(self, callback: Callable[[], object], *, kind: str | None = None) -> Wakeup:
        """Make a notifier that runs ``callback()`` in the home thread when set.

        :param callback: called with no arguments, once per dispatch that
            found the notifier set.
        :param kind: the notifier implementation (``"eventfd"``, ``"pipe"``,
            or a plugin's); default: the preferred available one, as for
            :class:`~aiocore.EventNotifier`.
        :raises TypeError: *callback* is not callable, *kind* not a str.
        :raises ValueError: *kind* names no registered notifier.
        :raises RuntimeError: the context is closed, or this is not its home
            thread and it does not hold ``ctx.acquire()``; no fd is opened.
        """
        if not callable(callback):
            raise TypeError(
                f"callback must be a callable, got {type(callback).__name__} {callback!r}"
            )
        ctx = self._ctx
        if ctx.closed:
            raise RuntimeError("this AioContext is closed")
        check_home_thread(ctx, "new")  # before the notifier's fds are made
        notifier = EventNotifier(kind=kind, registry=ctx.registry)
        try:
            wakeup = Wakeup(self, notifier, callback)
            ctx.set_event_notifier(notifier, wakeup._on_readable)
        except BaseException:
            notifier.close()
            raise
        self._made[wakeup] = None
        return wakeup

    @property
    def wakeups(self) -> list[Wakeup]:
        """The live wake-ups made by this source, oldest first."""
        return list(self._made)

    def close(self) -> None:
        """Close every wake-up this source made (the context is closing), newest first.

        Every wake-up is closed even if closing one raised (one that raised
        has still closed its notifier's fds); the first error is raised at
        the end (:func:`aiocore.close_newest_first`).
        """
        close_newest_first(self._made, Wakeup.close)


def _factory(ctx: Any) -> NotifierSource:
    return NotifierSource(ctx)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("notifier", _factory)
