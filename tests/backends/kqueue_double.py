"""TEST DOUBLE: ``select.kqueue``/``select.kevent`` emulated on Linux epoll.

**This is not kqueue.**  Linux has no kqueue, so the ``kqueue`` backend's logic
(batching, filter bookkeeping, EV_EOF/EV_ERROR mapping, merging two filters into
one mask, closed-fd handling) is tested here against this double, which
implements the parts of kqueue's *semantics* the backend relies on, on top of a
real :func:`select.epoll`.  The readiness is real (real sockets, pipes,
eventfds, real waits and timeouts); the kqueue *rules* are this module's
reading of FreeBSD's ``kern_event.c`` and the kqueue(2) manual.  The real thing
is tested by ``TestRealKqueue`` in ``test_kqueue.py``, which runs wherever
``select.kqueue`` exists.

What it implements, as BSD does:

* knotes per ``(ident, filter)`` for ``KQ_FILTER_READ``/``KQ_FILTER_WRITE``;
  ``KQ_EV_ADD`` creates or updates (idempotent), ``KQ_EV_DELETE`` removes
  (``ENOENT`` if absent), ``KQ_EV_ENABLE``/``KQ_EV_DISABLE`` mute a knote,
  ``KQ_EV_ONESHOT`` deletes it once delivered; one epoll registration per fd
  whose mask is the union of its enabled filters (READ -> ``EPOLLIN |
  EPOLLRDHUP``, WRITE -> ``EPOLLOUT``);
* one kevent per fired filter: a readable and writable fd gives two;
* level-triggered: a knote fires on every call while its condition holds;
* ``KQ_EV_EOF`` on the read filter on ``EPOLLRDHUP``/``EPOLLHUP`` (peer closed
  or shut down its write side, pipe writer gone), on the write filter on
  ``EPOLLHUP``/``EPOLLERR`` (peer gone, pipe reader gone); on a pipe, whose
  only error is a gone peer, ``EPOLLERR`` is end of file for both filters
  (FreeBSD's ``filt_piperead`` checks the same ``PIPE_EOF`` state), while on a
  socket ``EPOLLERR`` alone fires the read filter without ``EV_EOF``, as a
  pending socket error does on BSD;
* the changelist is applied in order before waiting; a change that fails
  (``EBADF`` for an fd that is not open, ``ENOENT`` for deleting an absent knote,
  ``EINVAL`` for an unknown filter) comes back as a ``KQ_EV_ERROR`` kevent with the
  errno in ``data`` while the event list has room, and then the call returns at
  once with only the errors, without waiting; with no room left it raises
  :class:`OSError` with that errno and applies no later change;
* ``max_events == 0`` never waits;
* closing an fd deletes its knotes (kqueue tracks fd numbers): the double notices
  lazily, when a change or an epoll event names the fd and ``fstat`` shows the
  number is closed or now names another file (``st_dev``/``st_ino`` differ);
* regular files (which epoll refuses with ``EPERM``) behave as vnodes: READ fires
  while the offset is before the end of the file, WRITE always.

Known differences, all irrelevant to the backend under test:

* ``data`` is always 0 on readiness kevents (BSD gives bytes readable or
  writable space) and ``fflags`` is always 0: Linux cannot read a socket's
  pending error without clearing it.  :meth:`FakeKqueue.inject` queues
  synthetic kevents (for example ``EV_EOF`` with an errno in ``fflags``) to test
  that mapping; they are labelled synthetic where used;
* ``KQ_EV_CLEAR`` (edge-triggered) raises :class:`NotImplementedError`;
* timeouts have epoll's millisecond resolution (rounded up, so never early);
* two eventfds share one anonymous inode, so closing a registered eventfd and
  getting a new eventfd under the same number is not noticed as "another file";
* if an fd is closed while registered and a ``dup()`` of it stays open
  elsewhere, epoll keeps that file registered under the old number and refuses
  to remove it; the double then rebuilds its epoll set before the next wait, so
  :meth:`FakeKqueue.fileno` may change;
* one thread at a time may *wait* (``max_events > 0``); other threads may apply
  changes (``max_events == 0``) concurrently, which is how the backend uses it.

:class:`KqueueOnEpollBackend` is the ``kqueue`` backend running on this double,
registered as ``"kqueue-double"`` by this module's hook so a test registry can
load it: ``aiocore.PluginRegistry(plugins=[("kqueue-double", kqueue_double)])``.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import stat
import threading
import time
from collections.abc import Iterable
from typing import Any

from aiocore_plugins.kqueue import KqueueBackend, KqueueInterface

from aiocore import hookimpl

__all__ = [
    "DOUBLE_INTERFACE",
    "KQ_EV_ADD",
    "KQ_EV_CLEAR",
    "KQ_EV_DELETE",
    "KQ_EV_DISABLE",
    "KQ_EV_ENABLE",
    "KQ_EV_EOF",
    "KQ_EV_ERROR",
    "KQ_EV_ONESHOT",
    "KQ_FILTER_READ",
    "KQ_FILTER_WRITE",
    "FakeKevent",
    "FakeKqueue",
    "KqueueOnEpollBackend",
]

# The BSD values (identical on FreeBSD, macOS, OpenBSD, NetBSD).
KQ_FILTER_READ = -1
KQ_FILTER_WRITE = -2
KQ_EV_ADD = 0x0001
KQ_EV_DELETE = 0x0002
KQ_EV_ENABLE = 0x0004
KQ_EV_DISABLE = 0x0008
KQ_EV_ONESHOT = 0x0010
KQ_EV_CLEAR = 0x0020
KQ_EV_ERROR = 0x4000
KQ_EV_EOF = 0x8000

# Flags a returned kevent keeps from its knote (BSD strips the action flags).
_KEPT_FLAGS = KQ_EV_ONESHOT | KQ_EV_CLEAR

_READ_EPOLL = select.EPOLLIN | select.EPOLLRDHUP
_WRITE_EPOLL = select.EPOLLOUT
_READ_FIRES = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_READ_EOF = select.EPOLLRDHUP | select.EPOLLHUP
_WRITE_FIRES = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_WRITE_EOF = select.EPOLLHUP | select.EPOLLERR

#: Wake-ups that produce no kevent (a stale registration) tolerated per call
#: before giving up and returning an empty list; bounds the scan loop.
_MAX_IDLE_WAKEUPS = 64


class FakeKevent:
    """TEST DOUBLE of ``select.kevent``: same constructor, fields and equality."""

    __slots__ = ("data", "fflags", "filter", "flags", "ident", "udata")

    def __init__(
        self,
        ident: Any,
        filter: int = KQ_FILTER_READ,
        flags: int = KQ_EV_ADD,
        fflags: int = 0,
        data: int = 0,
        udata: int = 0,
    ) -> None:
        self.ident: int = ident if isinstance(ident, int) else ident.fileno()
        self.filter = filter
        self.flags = flags
        self.fflags = fflags
        self.data = data
        self.udata = udata

    def _key(self) -> tuple[int, int, int, int, int, int]:
        return (self.ident, self.filter, self.flags, self.fflags, self.data, self.udata)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FakeKevent):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, like select.kevent

    def __repr__(self) -> str:
        return (
            f"<FakeKevent ident={self.ident} filter={self.filter} flags={self.flags:#x} "
            f"fflags={self.fflags:#x} data={self.data} udata={self.udata:#x}>"
        )


class _Knote:
    __slots__ = ("disabled", "flags", "udata")

    def __init__(self, flags: int, udata: int) -> None:
        self.flags = flags & _KEPT_FLAGS
        self.udata = udata
        self.disabled = False


class FakeKqueue:
    """TEST DOUBLE of ``select.kqueue`` with kqueue semantics over a real epoll.

    ``control_calls`` counts :meth:`control` calls and ``calls`` records the
    last 1000 as ``(number of changes, max_events, timeout)``, so tests can
    check that changes were batched into the wait.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._knotes: dict[int, dict[int, _Knote]] = {}
        self._identity: dict[int, tuple[int, int]] = {}
        self._epoll_masks: dict[int, int] = {}
        self._vnodes: set[int] = set()
        self._fifos: set[int] = set()
        self._injected: list[FakeKevent] = []
        self._rebuild = False
        self.control_calls = 0
        self.calls: collections.deque[tuple[int, int, float | None]] = collections.deque(
            maxlen=1000
        )

    # -- the select.kqueue interface -------------------------------------------

    @property
    def closed(self) -> bool:
        return self._epoll.closed

    def fileno(self) -> int:
        if self._epoll.closed:
            raise ValueError("I/O operation on closed kqueue object")
        return self._epoll.fileno()

    def close(self) -> None:
        with self._lock:
            self._epoll.close()
            self._knotes.clear()
            self._epoll_masks.clear()

    def control(
        self,
        changelist: Iterable[FakeKevent] | None,
        max_events: int,
        timeout: float | None = None,
    ) -> list[FakeKevent]:
        if self._epoll.closed:
            raise ValueError("I/O operation on closed kqueue object")
        if max_events < 0:
            raise ValueError(f"Length of eventlist must be 0 or positive, got {max_events}")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be positive or None")
        changes = [] if changelist is None else list(changelist)
        for change in changes:
            if not isinstance(change, FakeKevent):
                raise TypeError("changelist must be an iterable of select.kevent objects")
        errors: list[FakeKevent] = []
        with self._lock:
            self.control_calls += 1
            self.calls.append((len(changes), max_events, timeout))
            for change in changes:
                err = self._register(change)
                if not err:
                    continue
                if len(errors) >= max_events:
                    raise OSError(err, os.strerror(err))
                errors.append(
                    FakeKevent(
                        change.ident, change.filter, KQ_EV_ERROR, change.fflags, err, change.udata
                    )
                )
        if errors or not max_events:
            return errors
        return self._scan(max_events, timeout)

    # -- test hooks --------------------------------------------------------------

    def inject(self, *events: FakeKevent) -> None:
        """Queue SYNTHETIC kevents for the next call that waits (ahead of real ones).

        For conditions Linux cannot produce through epoll, such as ``EV_EOF`` with
        a socket errno in ``fflags``.
        """
        with self._lock:
            self._injected.extend(events)

    def registered(self) -> dict[int, set[int]]:
        """fd -> filters with a knote now (for assertions)."""
        with self._lock:
            return {fd: set(notes) for fd, notes in self._knotes.items()}

    # -- changes -------------------------------------------------------------------

    def _register(self, change: FakeKevent) -> int:
        """Apply one change; return 0 or the errno BSD would report (lock held)."""
        filt = change.filter
        if filt not in (KQ_FILTER_READ, KQ_FILTER_WRITE):
            return errno.EINVAL
        flags = change.flags
        if flags & KQ_EV_CLEAR:
            raise NotImplementedError(
                "the kqueue test double implements level-triggered filters only (no EV_CLEAR)"
            )
        fd = change.ident
        identity = _identity(fd)
        if identity is None:
            self._purge(fd)
            return errno.EBADF
        if fd in self._knotes and self._identity.get(fd) != identity:
            self._purge(fd)  # the number now names another file
        notes = self._knotes.get(fd)
        knote = notes.get(filt) if notes is not None else None
        if knote is None:
            if not flags & KQ_EV_ADD:
                return errno.ENOENT
            knote = _Knote(flags, change.udata)
            if notes is None:
                notes = self._knotes[fd] = {}
                self._identity[fd] = identity
                if _is_fifo(fd):
                    self._fifos.add(fd)
            notes[filt] = knote
            err = self._sync_epoll(fd)
            if err:
                del notes[filt]
                if not notes:
                    self._forget(fd)
                return err
        elif flags & KQ_EV_DELETE:
            del notes[filt]  # type: ignore[index]
            if not notes:
                self._forget(fd)
            else:
                self._sync_epoll(fd)
            return 0
        elif flags & KQ_EV_ADD:
            knote.flags = flags & _KEPT_FLAGS
            knote.udata = change.udata
        if flags & KQ_EV_DISABLE:
            knote.disabled = True
        if flags & KQ_EV_ENABLE:
            knote.disabled = False
        return self._sync_epoll(fd)

    def _sync_epoll(self, fd: int) -> int:
        """Make fd's epoll registration the union of its enabled filters (lock held)."""
        if fd in self._vnodes:
            return 0
        mask = 0
        for filt, knote in self._knotes.get(fd, {}).items():
            if not knote.disabled:
                mask |= _READ_EPOLL if filt == KQ_FILTER_READ else _WRITE_EPOLL
        old = self._epoll_masks.get(fd)
        if old == mask:
            return 0
        ep = self._epoll
        try:
            if not mask:
                self._unregister(fd)
                return 0
            if old is None:
                try:
                    ep.register(fd, mask)
                except FileExistsError:
                    ep.modify(fd, mask)
            else:
                try:
                    ep.modify(fd, mask)
                except FileNotFoundError:
                    ep.register(fd, mask)
        except PermissionError:
            # epoll refuses regular files and directories; kqueue treats them
            # as vnodes, evaluated at each scan.
            self._vnodes.add(fd)
            return 0
        except OSError as exc:
            return exc.errno or errno.EINVAL
        self._epoll_masks[fd] = mask
        return 0

    def _unregister(self, fd: int) -> None:
        if self._epoll_masks.pop(fd, None) is None:
            return
        try:
            self._epoll.unregister(fd)
        except OSError:
            # Closed (EBADF) or reused (ENOENT): if a dup keeps the old file
            # open, epoll still reports it under this number and cannot be told
            # to stop; rebuild the set before the next wait.
            self._rebuild = True

    def _forget(self, fd: int) -> None:
        self._knotes.pop(fd, None)
        self._identity.pop(fd, None)
        self._vnodes.discard(fd)
        self._fifos.discard(fd)
        self._unregister(fd)

    def _purge(self, fd: int) -> None:
        """fd was closed: kqueue deleted its knotes with it (lock held)."""
        if fd in self._knotes:
            self._forget(fd)

    def _rebuild_epoll(self) -> None:
        """Replace the epoll set, dropping registrations epoll would not remove."""
        self._rebuild = False
        fresh = select.epoll()
        for fd, mask in list(self._epoll_masks.items()):
            try:
                fresh.register(fd, mask)
            except OSError:
                self._epoll_masks.pop(fd, None)
                self._knotes.pop(fd, None)
                self._identity.pop(fd, None)
        old, self._epoll = self._epoll, fresh
        old.close()

    # -- waiting -------------------------------------------------------------------

    def _scan(self, max_events: int, timeout: float | None) -> list[FakeKevent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(_MAX_IDLE_WAKEUPS):
            with self._lock:
                if self._rebuild:
                    self._rebuild_epoll()
                out = self._injected
                self._injected = []
                out += self._vnode_events()
                ep = self._epoll
            if out:
                wait: float = 0
            elif deadline is None:
                wait = -1
            else:
                wait = max(0.0, deadline - time.monotonic())
            ready = ep.poll(wait, max(max_events, 1))
            with self._lock:
                out += self._translate(ready)
                if out:
                    return self._deliver(out, max_events)
            if deadline is not None and time.monotonic() >= deadline:
                return []
        return []

    def _translate(self, ready: list[tuple[int, int]]) -> list[FakeKevent]:
        out: list[FakeKevent] = []
        for fd, ev in ready:
            notes = self._knotes.get(fd)
            if notes is None or self._identity.get(fd) != _identity(fd):
                self._purge(fd)
                if fd in self._epoll_masks or notes is None:
                    self._rebuild = True  # a registration we cannot map
                continue
            read = notes.get(KQ_FILTER_READ)
            if read is not None and not read.disabled and ev & _READ_FIRES:
                eof = _READ_EOF | select.EPOLLERR if fd in self._fifos else _READ_EOF
                flags = read.flags | (KQ_EV_EOF if ev & eof else 0)
                out.append(FakeKevent(fd, KQ_FILTER_READ, flags, 0, 0, read.udata))
            write = notes.get(KQ_FILTER_WRITE)
            if write is not None and not write.disabled and ev & _WRITE_FIRES:
                flags = write.flags | (KQ_EV_EOF if ev & _WRITE_EOF else 0)
                out.append(FakeKevent(fd, KQ_FILTER_WRITE, flags, 0, 0, write.udata))
        return out

    def _vnode_events(self) -> list[FakeKevent]:
        out: list[FakeKevent] = []
        for fd in list(self._vnodes):
            notes = self._knotes.get(fd)
            try:
                st = os.fstat(fd)
                offset = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:
                self._purge(fd)
                continue
            if notes is None or self._identity.get(fd) != (st.st_dev, st.st_ino):
                self._purge(fd)
                continue
            read = notes.get(KQ_FILTER_READ)
            left = st.st_size - offset if stat.S_ISREG(st.st_mode) else 0
            if read is not None and not read.disabled and left > 0:
                out.append(FakeKevent(fd, KQ_FILTER_READ, read.flags, 0, left, read.udata))
            write = notes.get(KQ_FILTER_WRITE)
            if write is not None and not write.disabled:
                out.append(FakeKevent(fd, KQ_FILTER_WRITE, write.flags, 0, 0, write.udata))
        return out

    def _deliver(self, out: list[FakeKevent], max_events: int) -> list[FakeKevent]:
        """Cap at max_events; delete delivered one-shot knotes (lock held)."""
        out = out[:max_events]
        for kev in out:
            if kev.flags & KQ_EV_ONESHOT:
                notes = self._knotes.get(kev.ident)
                if notes is not None and notes.pop(kev.filter, None) is not None:
                    if notes:
                        self._sync_epoll(kev.ident)
                    else:
                        self._forget(kev.ident)
        return out


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _is_fifo(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _make_fake_kqueue() -> FakeKqueue:
    return FakeKqueue()


#: The interface :class:`KqueueOnEpollBackend` hands the backend.
DOUBLE_INTERFACE = KqueueInterface(
    kqueue=_make_fake_kqueue,
    kevent=FakeKevent,
    filter_read=KQ_FILTER_READ,
    filter_write=KQ_FILTER_WRITE,
    ev_add=KQ_EV_ADD,
    ev_delete=KQ_EV_DELETE,
    ev_eof=KQ_EV_EOF,
    ev_error=KQ_EV_ERROR,
)


class KqueueOnEpollBackend(KqueueBackend):
    """TEST DOUBLE: the real ``kqueue`` backend code running on :class:`FakeKqueue`.

    Only the kernel interface is replaced; every line of the backend's logic is
    the production one.  ``kq`` exposes the double for assertions.
    """

    name = "kqueue-double"

    @classmethod
    def kqueue_interface(cls) -> KqueueInterface:
        return DOUBLE_INTERFACE

    @classmethod
    def probe(cls) -> str | None:
        if not hasattr(select, "epoll"):
            return "the kqueue test double emulates kqueue on select.epoll, which is Linux-only"
        return None

    @property
    def kq(self) -> FakeKqueue:
        kq = self._kq
        assert isinstance(kq, FakeKqueue)
        return kq


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(KqueueOnEpollBackend)
