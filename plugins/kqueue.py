"""The ``kqueue`` backend: :func:`select.kqueue` (BSD and macOS), level-triggered.

Kernel facts it relies on (FreeBSD's ``sys/kern/kern_event.c`` is the
reference; macOS, OpenBSD and NetBSD behave the same where it matters here):

* **Filters, not masks.**  A kqueue watches *knotes*, one per
  ``(ident, filter)`` pair.  Readable and writable are two separate knotes,
  ``EVFILT_READ`` and ``EVFILT_WRITE``, added and deleted independently, and a
  wait returns one ``kevent`` per knote that fired.  A mask change from IN to
  IN|OUT is therefore one ``EV_ADD`` of the write filter, not a re-registration,
  and an fd that is both readable and writable comes back as two kevents, which
  :meth:`KqueueBackend.wait` merges into the single ``(fd, mask)`` pair the
  contract asks for.
* **EV_ADD / EV_DELETE / EV_ENABLE.**  ``EV_ADD`` creates the knote or, if it
  exists, updates it (so repeating it is harmless); ``EV_DELETE`` removes it and
  fails with ``ENOENT`` if it does not exist, ``EBADF`` if the fd is not open.
  ``EV_ENABLE``/``EV_DISABLE`` keep a knote but mute it; this backend does not use
  them: deleting an unwanted filter is as cheap and keeps the kernel's state equal
  to the interest set.  Neither ``EV_ONESHOT`` nor ``EV_CLEAR`` is used, so every
  knote is **level-triggered**: after copying a fired knote out, the kernel
  re-checks its condition and queues it again at the *tail* of the active queue
  (``kqueue_scan``).  An fd that stays ready is reported by every wait, and the
  queue rotates, which is why capping the event list (:data:`MAX_EVENTS`) is fair:
  what did not fit comes first next time.
* **The changelist rides on the wait.**  ``kevent()`` applies the changelist, in
  order, before it collects events, in the same system call.  So
  :meth:`~KqueueBackend.update` only records the change, and the next
  :meth:`~KqueueBackend.wait` submits every pending change with the wait: one
  system call per loop iteration however many fds changed.  Changes are kept per
  fd as "wanted" versus "believed in the kernel", so an fd toggled ten times
  between two waits costs at most one kevent per filter.
* **Changelist errors are EV_ERROR events.**  When the event list has room, a
  change that fails does not fail the call: it comes back as a kevent with
  ``EV_ERROR`` in ``flags`` and the errno in ``data`` (the original
  ``EV_ADD``/``EV_DELETE`` bits are overwritten, so the backend tells adds from
  deletes by its own records).  If any change failed, the kernel returns at once
  with only the errors and *does not wait* (``kern_kevent_fp``: ``if (nerrors)
  ... goto done``).  Without room (``nevents == 0``) the first failure makes
  ``kevent()`` itself fail with that errno and later changes are not applied.
  The event list is therefore always at least as long as the changelist.
* **EV_EOF is readiness, EV_ERROR is not.**  ``EV_EOF`` is set on a *fired*
  filter: on ``EVFILT_READ`` when the read side is shut (the peer closed, or
  shut down its write side, or a pipe's writer is gone), on ``EVFILT_WRITE``
  when nothing more can be sent (the peer is gone, a pipe's reader is gone).
  For sockets ``fflags`` then carries the socket's pending error (``so_error``,
  e.g. ``ECONNRESET``), or 0.  The mapping to the core's masks:

  ==========================================  ===================================
  kevent                                      reported mask
  ==========================================  ===================================
  ``EVFILT_READ``                             ``EVENT_IN``
  ``EVFILT_READ`` + ``EV_EOF``                ``EVENT_IN | EVENT_HUP`` (data may
                                              remain; ``read`` returns it, then
                                              ``b""``; poll also reports the
                                              hang-up as readable)
  ``EVFILT_WRITE``                            ``EVENT_OUT``
  ``EVFILT_WRITE`` + ``EV_EOF``               ``EVENT_OUT | EVENT_HUP`` (a write
                                              no longer blocks: it fails)
  either + ``EV_EOF`` + ``fflags`` (errno)    additionally ``EVENT_ERR``
  ``EV_ERROR`` for an ``EV_ADD``              ``EVENT_NVAL`` once (see below)
  ``EV_ERROR`` for an ``EV_DELETE``           nothing (the filter is gone anyway)
  ==========================================  ===================================

  A socketpair whose peer closed, watched for IN and OUT, thus gives
  ``IN|OUT|HUP``, exactly what Linux's ``poll`` reports for it.  One difference
  from Linux's poll remains: a *half*-close (the peer's ``shutdown(SHUT_WR)``)
  gives ``IN|HUP`` here and ``IN|RDHUP`` there; kqueue does not tell a half-close
  from a full one on the read filter.  Both dispatch ``io_read``, which reads the
  end of file either way.
* **Closing an fd deletes its knotes.**  kqueue tracks *fd numbers*
  (``knote_fdclose`` runs on every ``close()``), unlike epoll, which watches the
  open file description and keeps reporting it under the old number while a
  ``dup()`` lives.  So an fd closed while registered is not reported at all: it
  just falls silent.  The error surfaces the next time the backend touches it:

  - a pending ``EV_ADD`` (the fd was added or its mask grew, then it was closed
    before the next wait) fails with ``EBADF``: the fd is reported
    ``EVENT_NVAL`` **once** and then not watched until :meth:`update` changes
    it again, as the contract asks.  Any other refusal of ``EV_ADD`` (macOS
    refuses some character devices with ``EINVAL``) is reported the same way,
    and the real errno is what :meth:`~KqueueBackend.fd_errno` hands the core
    for its error report (and it goes to the context's log too);
  - removing the handler (``update(fd, mask, 0)``) is applied **at once**, not
    batched, precisely so that ``EBADF`` can be raised from :meth:`update` as
    the epoll backend does, and the core reports it through the exception
    handler once.  (Removal is the rare operation; the mask changes of a busy
    ``io_write`` stay batched.)  The one exception: if the fd has a change in the
    changelist a concurrent :meth:`wait` is submitting right now, the delete is
    deferred to the next wait, because a delete overtaking an in-flight
    ``EV_ADD`` would fail and leave the added knote behind, untracked.
* **Signals.**  CPython's ``kqueue.control()`` retries ``kevent()`` after
  ``EINTR`` with the remaining timeout (PEP 475; ``kqueue_queue_control`` in
  ``Modules/selectmodule.c`` recomputes the deadline), and an exception raised
  by a Python signal handler propagates.  The retry *resubmits the same
  changelist*: a repeated ``EV_ADD`` is harmless, and a repeated ``EV_DELETE``
  fails with ``ENOENT``, which :meth:`~KqueueBackend.wait` ignores like every
  delete error.
* **Timeout.**  ``kevent()`` takes a ``timespec``, so nanoseconds pass through:
  the backend hands CPython ``timeout_ns / 1e9`` seconds and CPython converts
  back to nanoseconds rounding *up* (``_PyTime_ROUND_TIMEOUT``); for any timeout
  below 2**51 ns (26 days) that round trip gives the asked nanoseconds or one
  more, never fewer.  The kernel may wake later than asked (FreeBSD adds its
  timer slop, macOS coalesces timers), never earlier.  If the only results of a
  wait were ignorable delete errors, the kernel neither looked at the queue nor
  waited; the backend then calls again with what is left of the timeout (0 if
  it is used up), so a wait never returns early and a zero-timeout wait still
  looks.
* **Regular files.**  Unlike epoll (``EPERM``), kqueue accepts regular files,
  but ``EVFILT_READ`` on a vnode fires only while the file offset is before the
  end of the file (``data`` is the number of bytes left) and ``EVFILT_WRITE``
  always fires.  ``poll`` reports a regular file as always readable; here a file
  read to its end is not readable.
* **macOS and BSD quirks.**  macOS's kqueue does not support some character
  devices, ttys among them (tinc and libevent users turn kqueue off on macOS for
  that reason); where ``EV_ADD`` refuses such an fd it is reported
  ``EVENT_NVAL`` with the errno in the log, and the ``poll`` backend is the one
  to use for it.  A kqueue is not inherited by a child created with ``fork()``:
  a context must not be used across ``fork()`` (the same holds for every
  backend in practice).  The filter and flag values (``EVFILT_READ = -1``,
  ``EVFILT_WRITE = -2``, ``EV_ADD = 0x1``, ``EV_DELETE = 0x2``,
  ``EV_ERROR = 0x4000``, ``EV_EOF = 0x8000``) are the same on FreeBSD, macOS,
  OpenBSD and NetBSD, but the backend reads them from :mod:`select` anyway.

The module imports on every platform: nothing touches ``select.kqueue`` until a
backend is probed or created.  The kernel interface comes from
:meth:`KqueueBackend.kqueue_interface`, a classmethod returning a small
:class:`KqueueInterface`, so a test double (``tests/backends/kqueue_double.py``,
a kqueue emulated on epoll) can be injected by subclassing without touching the
production path.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from time import monotonic_ns as _monotonic_ns
from typing import Any, Final, Protocol

from aiocore import BackendUnavailable, hookimpl
from aiocore.backend import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_IN,
    EVENT_NVAL,
    EVENT_OUT,
    Backend,
    BackendSetup,
)

__all__ = ["MAX_EVENTS", "KqueueBackend", "KqueueInterface", "select_kqueue_interface"]

#: Most readiness kevents one wait asks for (on top of room for the
#: changelist's errors).  CPython allocates the event list per call, so an
#: unbounded list would cost a large allocation per wait with 8192 idle fds;
#: CPython's own epoll default is similar (``FD_SETSIZE - 1``).  Level-triggered
#: knotes are re-queued at the tail, so what does not fit is reported first by
#: the next wait.
MAX_EVENTS: Final = 1024


class KeventLike(Protocol):
    """The fields of a returned ``select.kevent`` the backend reads."""

    @property
    def ident(self) -> int: ...
    @property
    def filter(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def fflags(self) -> int: ...
    @property
    def data(self) -> int: ...


class KqueueLike(Protocol):
    """The methods of ``select.kqueue`` the backend calls."""

    def control(
        self, changelist: Iterable[Any] | None, max_events: int, timeout: float | None = ...
    ) -> list[Any]: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...


@dataclass(frozen=True)
class KqueueInterface:
    """The kqueue system interface as the backend uses it.

    ``kqueue()`` makes a queue, ``kevent(ident, filter, flags)`` makes a
    change record; the integers are the kernel's constants.  Production code
    gets :func:`select_kqueue_interface`; a test double supplies its own.
    """

    kqueue: Callable[[], KqueueLike]
    kevent: Callable[[int, int, int], object]
    filter_read: int
    filter_write: int
    ev_add: int
    ev_delete: int
    ev_eof: int
    ev_error: int


def _unavailable_reason() -> str | None:
    if hasattr(select, "kqueue"):
        return None
    return f"select.kqueue is not available: kqueue exists on BSD and macOS; this is {sys.platform}"


def select_kqueue_interface() -> KqueueInterface:
    """The real interface, from :mod:`select`.

    Raises :class:`aiocore.BackendUnavailable` (with the probe's reason) where
    :mod:`select` has no kqueue, rather than an ``AttributeError`` from deep inside.
    """
    reason = _unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(
            f"backend 'kqueue' is not available here: {reason}", {"kqueue": reason}
        )
    sel: Any = select  # the kqueue names exist in typeshed only on BSD/macOS
    return KqueueInterface(
        kqueue=sel.kqueue,
        kevent=sel.kevent,
        filter_read=sel.KQ_FILTER_READ,
        filter_write=sel.KQ_FILTER_WRITE,
        ev_add=sel.KQ_EV_ADD,
        ev_delete=sel.KQ_EV_DELETE,
        ev_eof=sel.KQ_EV_EOF,
        ev_error=sel.KQ_EV_ERROR,
    )


_NO_FDS: Final[frozenset[int]] = frozenset()


class KqueueBackend(Backend):
    """A backend on :func:`select.kqueue`: batched changes, one ``kevent()`` per wait.

    State, guarded by one lock because :meth:`update` may run in another thread
    while the home thread waits (the contract allows it):

    * ``_want``: fd -> the mask the core asked for (``EVENT_IN``/``EVENT_OUT``);
    * ``_kernel``: fd -> the filters (as mask bits) the kernel has, or will have
      once the changelist being submitted is applied;
    * ``_dirty``: fd -> "renew", the fds whose filters must be recomputed at the
      next wait; renew means the fd was (re)added, so every wanted filter gets
      an ``EV_ADD`` even if the kernel is believed to have it (the number may now
      name another file, whose knotes were deleted when the old one closed);
    * ``_dropped``: fd -> errno, fds reported ``EVENT_NVAL`` and no longer
      watched until :meth:`update` changes them;
    * ``_inflight``: the fds whose changes a :meth:`wait` is submitting now.
    """

    name = "kqueue"

    @classmethod
    def kqueue_interface(cls) -> KqueueInterface:
        """The kqueue interface to use; a test double overrides this."""
        return select_kqueue_interface()

    @classmethod
    def probe(cls) -> str | None:
        reason = _unavailable_reason()
        if reason is not None:
            return reason
        try:
            cls.kqueue_interface().kqueue().close()
        except OSError as exc:
            return f"kqueue() failed: {exc}"
        return None

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        api = self.kqueue_interface()
        self._kq = api.kqueue()
        self._control = self._kq.control
        self._kevent = api.kevent
        self._filt_read = api.filter_read
        self._filt_write = api.filter_write
        self._ev_add = api.ev_add
        self._ev_delete = api.ev_delete
        self._ev_eof = api.ev_eof
        self._ev_error = api.ev_error
        self._lock = threading.Lock()
        self._want: dict[int, int] = {}
        self._kernel: dict[int, int] = {}
        self._dirty: dict[int, bool] = {}
        self._dropped: dict[int, int] = {}
        self._inflight: frozenset[int] = _NO_FDS
        self._nevents = 1
        self._eager_deletes = 0
        self._deferred_deletes = 0

    # -- changes --------------------------------------------------------------

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        with self._lock:
            self._dropped.pop(fd, None)
            if new_mask:
                self._want[fd] = new_mask
                self._dirty[fd] = self._dirty.get(fd, False) or not old_mask
                self._resize()
                return
            self._want.pop(fd, None)
            self._resize()
            have = self._kernel.get(fd, 0)
            if not have:
                # Never reached the kernel (or its knotes are gone): nothing to do.
                self._dirty.pop(fd, None)
                return
            if fd in self._inflight:
                # A wait is submitting an EV_ADD for it right now; deleting
                # first would fail and leave that knote behind.  Delete next time.
                self._dirty[fd] = False
                self._deferred_deletes += 1
                return
            self._dirty.pop(fd, None)
            del self._kernel[fd]
            changes = self._changes_for(fd, 0, have, False)
            self._eager_deletes += 1
            try:
                # nevents = 0: a failing delete fails the call with its errno.
                self._control(changes, 0, 0)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"kqueue could not delete the filters of fd {fd}: "
                    f"{exc.strerror or exc} (was it closed while registered? kqueue "
                    "deletes a closed fd's filters itself)",
                ) from exc

    def _resize(self) -> None:
        # Called with the lock held: room for two filters per fd, capped.
        self._nevents = min(2 * len(self._want), MAX_EVENTS) or 1

    def _changes_for(self, fd: int, want: int, have: int, renew: bool) -> list[object]:
        kevent = self._kevent
        changes: list[object] = []
        if want & EVENT_IN:
            if renew or not have & EVENT_IN:
                changes.append(kevent(fd, self._filt_read, self._ev_add))
        elif have & EVENT_IN:
            changes.append(kevent(fd, self._filt_read, self._ev_delete))
        if want & EVENT_OUT:
            if renew or not have & EVENT_OUT:
                changes.append(kevent(fd, self._filt_write, self._ev_add))
        elif have & EVENT_OUT:
            changes.append(kevent(fd, self._filt_write, self._ev_delete))
        return changes

    def _take_changes(self) -> list[object]:
        """Turn the dirty fds into a changelist and mark them in flight (lock held)."""
        changes: list[object] = []
        kernel = self._kernel
        want_of = self._want
        dropped = self._dropped
        for fd, renew in self._dirty.items():
            want = 0 if fd in dropped else want_of.get(fd, 0)
            changes += self._changes_for(fd, want, kernel.get(fd, 0), renew)
            if want:
                kernel[fd] = want
            else:
                kernel.pop(fd, None)
        self._inflight = frozenset(self._dirty)
        self._dirty.clear()
        return changes

    def _resubmit(self, fds: Iterable[int]) -> None:
        """After a failed submission, redo every change of *fds* next time (lock held).

        Whether the kernel applied the changelist is unknown (a signal handler
        may have raised after it did), so every wanted filter is added again
        (idempotent) and every unwanted one deleted again (``ENOENT`` ignored).
        """
        for fd in fds:
            self._dirty[fd] = True
            self._kernel[fd] = EVENT_IN | EVENT_OUT

    # -- waiting --------------------------------------------------------------

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        timeout = None if timeout_ns < 0 else timeout_ns / 1e9
        if not self._dirty:
            events = self._control(None, self._nevents, timeout)
            return self._ready(events) if events else []
        return self._wait_with_changes(timeout_ns, timeout)

    def _wait_with_changes(self, timeout_ns: int, timeout: float | None) -> list[tuple[int, int]]:
        with self._lock:
            changes = self._take_changes()
            submitted = self._inflight
            nevents = self._nevents + len(changes)
        start = _monotonic_ns() if timeout_ns > 0 else 0
        try:
            events = self._control(changes, nevents, timeout)
        except BaseException:
            with self._lock:
                self._inflight = _NO_FDS
                self._resubmit(submitted)
            raise
        with self._lock:
            self._inflight = _NO_FDS
        if not events:
            return []
        ready = self._ready(events)
        if ready:
            return ready
        # Only ignorable errors (failed deletes) came back, and with errors in
        # the list the kernel neither looked at the queue nor waited.  Look
        # again, with what is left of the timeout (0 if it is used up: a
        # zero-timeout wait must still look).
        if timeout_ns > 0:
            timeout = max(0, timeout_ns - (_monotonic_ns() - start)) / 1e9
        events = self._control(None, self._nevents, timeout)
        return self._ready(events) if events else []

    def _ready(self, events: Sequence[KeventLike]) -> list[tuple[int, int]]:
        """Merge kevents into one ``(fd, mask)`` pair per fd."""
        ready: dict[int, int] = {}
        errors: list[KeventLike] | None = None
        ev_eof = self._ev_eof
        ev_error = self._ev_error
        filt_read = self._filt_read
        for ev in events:
            flags = ev.flags
            if flags & ev_error:
                if errors is None:
                    errors = []
                errors.append(ev)
                continue
            mask = EVENT_IN if ev.filter == filt_read else EVENT_OUT
            if flags & ev_eof:
                mask |= (EVENT_HUP | EVENT_ERR) if ev.fflags else EVENT_HUP
            fd = ev.ident
            ready[fd] = ready.get(fd, 0) | mask
        if errors is not None or self._dropped:
            refused: list[tuple[int, int]] = []
            with self._lock:
                if errors is not None:
                    refused = self._change_errors(errors, ready)
                dropped = self._dropped
                if dropped:
                    for fd in list(ready):
                        if fd in dropped and ready[fd] != EVENT_NVAL:
                            del ready[fd]
            for fd, err in refused:  # outside the lock: the log is foreign code
                self.setup.log(
                    f"kqueue refused to watch fd {fd}: {errno.errorcode.get(err, err)} "
                    f"({os.strerror(err)}); reported as EVENT_NVAL and no longer watched"
                )
        return list(ready.items())

    def _change_errors(
        self, errors: list[KeventLike], ready: dict[int, int]
    ) -> list[tuple[int, int]]:
        """Account for changelist entries the kernel refused (lock held).

        Returns the ``(fd, errno)`` of each refused ``EV_ADD``, now reported
        ``EVENT_NVAL`` in *ready* and dropped.
        """
        refused: list[tuple[int, int]] = []
        kernel = self._kernel
        for ev in errors:
            err = ev.data
            if not err:
                continue  # EV_RECEIPT-style success record; never asked for
            fd = ev.ident
            bit = EVENT_IN if ev.filter == self._filt_read else EVENT_OUT
            have = kernel.get(fd, 0) & ~bit
            if have:
                kernel[fd] = have
            else:
                kernel.pop(fd, None)
            if fd in self._dirty or fd in self._dropped:
                continue  # changed again since: the next wait recomputes it
            if not self._want.get(fd, 0) & bit:
                continue  # a failed delete (or a removed fd): the filter is gone
            # An EV_ADD failed: report EVENT_NVAL once, stop watching the fd.
            self._dropped[fd] = err
            ready[fd] = EVENT_NVAL
            if err == errno.EBADF:
                kernel.pop(fd, None)  # closing the fd deleted its other knote
            elif kernel.get(fd):
                self._dirty[fd] = False  # delete what is left at the next wait
            refused.append((fd, err))
        return refused

    # -- the rest -------------------------------------------------------------

    def fd_errno(self, fd: int) -> int:
        """The errno kqueue refused *fd* with (EBADF, or EINVAL for a macOS tty)."""
        with self._lock:
            return self._dropped.get(fd, errno.EBADF)

    def fileno(self) -> int:
        """The kqueue's fd."""
        return self._kq.fileno()

    def close(self) -> None:
        self._kq.close()
        with self._lock:
            self._want.clear()
            self._kernel.clear()
            self._dirty.clear()
            self._dropped.clear()

    def statistics(self) -> dict[str, object]:
        with self._lock:
            return {
                "fds": len(self._want),
                "pending_changes": len(self._dirty),
                "dropped_fds": {
                    fd: errno.errorcode.get(err, str(err))
                    for fd, err in sorted(self._dropped.items())
                },
                "eager_deletes": self._eager_deletes,
                "deferred_deletes": self._deferred_deletes,
            }


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(KqueueBackend)
