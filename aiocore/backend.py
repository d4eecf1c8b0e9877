"""The contract between the core and a poller backend.

A backend (QEMU calls it an *fd monitor*) is one small class that watches file
descriptors for readiness.  It sees fds and event masks, **never callbacks**:
the core owns the fd -> handler table and turns a backend's ``(fd, mask)``
reports into dispatch.  Keeping the backend this blind is what lets the core
swap one for another at run time (``auto`` upgrading poll to epoll) and lets
every backend be tested against the same conformance suite.

Masks use the values of :mod:`select`'s ``POLL*`` constants, which Linux's
``EPOLL*`` constants share, so the two Linux backends need no translation:

================  =========================================================
``EVENT_IN``      readable (``POLLIN``)
``EVENT_OUT``     writable (``POLLOUT``)
``EVENT_ERR``     error condition (``POLLERR``); always reported, never asked
``EVENT_HUP``     hang-up (``POLLHUP``); always reported, never asked
``EVENT_NVAL``    the fd is not open (``POLLNVAL``): reported once, after which
                  the backend stops watching that fd until :meth:`Backend.update`
                  changes it again
================  =========================================================

The rules a backend follows (the conformance suite checks each one):

* Readiness is **level-triggered**: an fd that stays ready is reported by
  every :meth:`~Backend.wait` until its state changes.
* :meth:`~Backend.update` calls are serialised by the core, but one may run in
  another thread while the home thread sits in :meth:`~Backend.wait` (a thread
  holding ``ctx.acquire()`` changing a handler).  The core follows such a change
  with ``ctx.notify()``, so the change needs to take effect no later than the
  next :meth:`~Backend.wait`.
* :meth:`~Backend.wait` never raises ``InterruptedError`` and never returns early
  because of a signal: the timeout is what was asked, rounded **up** to the
  backend's resolution so a short timeout never becomes a busy loop.
* An error that concerns one fd (it was closed while registered) is reported
  through its mask (``EVENT_NVAL``) or by :meth:`~Backend.update` raising
  :class:`OSError`; it never wedges the backend.
"""

from __future__ import annotations

import abc
import errno
import select
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

__all__ = [
    "EVENT_ERR",
    "EVENT_HUP",
    "EVENT_IN",
    "EVENT_NVAL",
    "EVENT_OUT",
    "MAX_WAIT_NS",
    "READ_EVENTS",
    "WRITE_EVENTS",
    "Backend",
    "BackendSetup",
    "Option",
    "OptionValue",
    "timeout_ms",
]

EVENT_IN: Final = select.POLLIN
EVENT_OUT: Final = select.POLLOUT
EVENT_ERR: Final = select.POLLERR
EVENT_HUP: Final = select.POLLHUP
EVENT_NVAL: Final = select.POLLNVAL

#: What an ``io_read`` handler asks for, and what makes it run.
READ_EVENTS: Final = EVENT_IN | EVENT_HUP | EVENT_ERR
#: What an ``io_write`` handler asks for, and what makes it run.
WRITE_EVENTS: Final = EVENT_OUT | EVENT_ERR


#: The longest finite wait the core asks of a backend: 2**31 - 1 ms (about
#: 24.8 days), the most ``poll(2)`` and ``epoll_wait(2)`` take (CPython raises
#: ``OverflowError`` above it).  A timer further away makes the wait end early
#: with nothing to do, and the next ``poll()`` computes the rest; QEMU clamps
#: its millisecond timeouts the same way.
MAX_WAIT_NS: Final = (2**31 - 1) * 1_000_000


def timeout_ms(timeout_ns: int) -> int:
    """Convert a core timeout to whole milliseconds, rounding **up**.

    ``-1`` (wait without limit) stays ``-1``.  Rounding down would turn a
    0.3 ms deadline into a 0 ms poll and spin until it passed.  The result is
    at most ``2**31 - 1`` (:data:`MAX_WAIT_NS`).
    """
    if timeout_ns < 0:
        return -1
    return min(-(-timeout_ns // 1_000_000), 2**31 - 1)


OptionValue: TypeAlias = "int | float | str | bool | list[str]"


@dataclass(frozen=True)
class Option:
    """One configurable option of a backend, as it appears in the config file.

    ``kind`` is the accepted Python type (``bool`` is not accepted where
    ``int`` is asked, because TOML keeps them apart and so should we);
    ``minimum`` and ``maximum`` bound integers (inclusive); ``choices``
    bounds strings.
    """

    kind: type
    default: Any
    doc: str
    minimum: int | None = None
    choices: tuple[str, ...] | None = None
    maximum: int | None = None

    def check(self, key: str, value: object) -> object:
        """Return *value* if it is acceptable for *key*, else raise naming both."""
        ok = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if not ok:
            raise TypeError(
                f"option {key!r} must be {self.kind.__name__}, got {type(value).__name__} {value!r}"
            )
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
            if high is None:
                accepted = f">= {low}"
            elif low is None:
                accepted = f"<= {high}"
            else:
                accepted = f"in {low}..{high}"
            raise ValueError(f"option {key!r} must be {accepted}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"option {key!r} must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
            )
        return value


@dataclass(frozen=True)
class BackendSetup:
    """What a backend receives when a context creates it.

    ``options`` holds every option the backend declares in
    :attr:`Backend.options`, defaults filled in and values checked.
    ``open`` creates another registered backend by name (with its own
    configured options); composite backends such as ``auto`` use it so they
    never import a sibling plugin.  ``log`` is the context's logger for what
    a user should act on (a fallback for good, a kernel refusing a feature:
    logged as warnings); ``info`` is for normal events worth a trace (``auto``
    upgrading at its threshold), so a server with many contexts is not told
    to worry about them.  ``info`` defaults to ``log``.
    """

    options: Mapping[str, Any]
    open: Callable[[str], Backend]
    log: Callable[[str], None]
    info: Callable[[str], None] | None = None

    def note(self, message: str) -> None:
        """Log *message* through ``info`` (or ``log`` when there is none)."""
        (self.info or self.log)(message)


class Backend(abc.ABC):
    """Base class of every poller backend.

    Subclasses set :attr:`name` and implement :meth:`update`, :meth:`wait`
    and :meth:`close`; they may override :meth:`probe`, :meth:`need_wait`,
    :meth:`maintain` and :meth:`statistics`.  See the module docstring for the
    rules they follow.
    """

    #: The name the backend is registered and selected under.  A composite
    #: backend may change it on the instance to show which mechanism is doing
    #: the work now (``ctx.backend_name`` reads it).
    name: str = "?"

    #: Options this backend accepts under ``[tool.aiocore.backends.NAME]``.
    options: ClassVar[Mapping[str, Option]] = {}

    #: Set by a backend that wants :meth:`maintain` called at the next safe
    #: point: the outermost ``poll()`` level, with external clients enabled.
    #: A plain attribute (not a method) so the core's check costs one load.
    maintenance_due: bool = False

    @classmethod
    def probe(cls) -> str | None:
        """Return ``None`` if this backend can run here, else the reason it cannot.

        Called by ``aiocore backends`` and before creating an instance; it must
        be cheap and must not leave resources open.
        """
        return None

    def __init__(self, setup: BackendSetup) -> None:
        self.setup = setup

    @abc.abstractmethod
    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        """Change the interest in *fd* from *old_mask* to *new_mask*.

        ``0`` means absent: ``old_mask == 0`` adds the fd, ``new_mask == 0``
        removes it.  The masks are combinations of ``EVENT_IN`` and
        ``EVENT_OUT`` (``EVENT_ERR``/``EVENT_HUP`` are implied).

        Raises :class:`OSError` if the kernel refuses an add or change (a
        closed fd, a regular file on epoll); the backend's state is then
        unchanged and the core changes nothing either.  A backend that batches
        changes into its next :meth:`wait` (kqueue, io_uring) learns of a
        refused add only there, and reports it as ``EVENT_NVAL`` for that fd
        instead.  A removal that the kernel refuses (epoll's ``EBADF`` for an
        fd closed while registered) still forgets the fd before raising: the
        core has already dropped the handler and only reports the error.
        """

    @abc.abstractmethod
    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        """Wait up to *timeout_ns* for readiness and return ``(fd, mask)`` pairs.

        ``-1`` waits without limit, ``0`` only looks; the core never asks for
        more than :data:`MAX_WAIT_NS`.  Each fd appears at most once.  Never
        raises ``InterruptedError``: a signal that interrupts the system call
        is retried with the remaining time.
        """

    def need_wait(self) -> bool:
        """Return true if :meth:`wait` must be called even with a zero timeout.

        The core skips the system call when every handler can be polled
        without one; a backend that has completions or submissions pending
        (io_uring) says so here.
        """
        return False

    def fd_errno(self, fd: int) -> int:
        """The errno behind an ``EVENT_NVAL`` just reported for *fd*.

        The core calls this (rarely: once per closed fd) to build the error it
        hands the exception handler.  ``EBADF`` unless the backend knows
        better (kqueue refuses some fds with ``EINVAL``).
        """
        return errno.EBADF

    def maintain(self) -> None:
        """Do deferred work at a safe point; see :attr:`maintenance_due`."""
        self.maintenance_due = False

    @abc.abstractmethod
    def close(self) -> None:
        """Release every OS resource.  Called once; no other call follows."""

    def statistics(self) -> dict[str, object]:
        """Return backend-specific counters for ``aiocore info`` and debugging."""
        return {}
