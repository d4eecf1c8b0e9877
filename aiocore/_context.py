"""``AioContext``: one event loop, orchestrating the parts that live elsewhere.

:meth:`AioContext.poll` is written to be read beside SPEC section 2; the
numbered comments are its steps.  The parts it orchestrates each have their
own module: the fd table (:mod:`._fdtable`), bottom halves (:mod:`._bh`),
timers (:mod:`._timers`), poll mode (:mod:`._pollmode`) and the backend
(:mod:`aiocore.backend`, chosen through :mod:`._plugins`).  The core never
imports a backend and never branches on a backend's name.

The notify protocol (SPEC 6), or why no wake-up is lost
--------------------------------------------------------

Two flags: ``_notify_me`` (written only by the home thread: non-zero while a
blocking ``poll()`` may sleep in the backend) and ``_notified`` (written by
anyone through :meth:`notify`).

* A waker first publishes its work (queues a BH, arms a timer, changes a
  handler), **then** sets ``_notified``, **then** reads ``_notify_me``, and
  kicks the internal notifier's fd only if it is non-zero.
* The poller computes its timeout (reading the BH queue and the timer
  heads) and busy-polls, testing ``_notified`` every round; only if it is
  then about to sleep does it raise ``_notify_me``, **then** test
  ``_notified`` (a set one makes the timeout 0), **then** sleep.  This is
  QEMU 5.1's late announcement, which SPEC 6 allows: a ``notify()`` while
  the loop computes or spins costs no system call.

If the poller's test after raising ``_notify_me`` read ``_notified`` false,
the waker's store to ``_notified`` came after that test, so its read of
``_notify_me`` came after the raise: it kicks the fd and the sleep returns.
If the test read it true, the poller does not sleep.  Work published before
the poller computed its timeout is in the timeout.  Either way the poller
does not sleep past published work, including work the core cannot see (a
flag the caller tests between polls, ``wait_while``'s condition), since
every waker sets ``_notified``.  After the wait the
poller accepts the notification (clears ``_notified``, drains the fd if it
was kicked) *before* it runs BHs, dispatches and runs timers, so work
published after the accept is handled in this pass or seen by the next
poll; a kick that lands after the drain only causes one
spurious, harmless wake-up, never a lost one.  ``tests/threads`` checks this
under every single-preemption interleaving of the two sides, line by line.

What the argument needs from the machine: that each side's store and later
load are seen in program order by the other thread (the store-load ordering
QEMU gets from ``smp_mb()``).  With the GIL this holds, as only one thread
runs bytecode at a time and a GIL hand-off is a full barrier.  On
free-threaded builds it rests on how CPython stores and loads instance
attributes (stores inside the object's critical section, released by a
sequentially consistent atomic; loads by acquire or sequentially consistent
atomics), which gives it on x86-64 and ARMv8 but is an implementation detail,
not a documented language guarantee.

The kick itself holds ``_kick_lock``, which :meth:`close` takes to close the
notifier: a waker preempted between reading ``_notify_me`` and writing the
fd can then never write to a closed notifier, or to an unrelated file that
reused its fd number.  Only the kick (a system call anyway) takes the lock.
It is reentrant, so a signal handler that calls ``notify()`` while its
thread is inside the kick writes the notifier a second time (harmless)
instead of deadlocking.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from time import monotonic_ns
from typing import Any, Final, TypeAlias

from . import _clocks
from ._bh import BH, BHQueue
from ._clocks import SCALE_MS, SCALE_NS, SCALE_US, Clock
from ._config import Resolved, resolve
from ._errors import PluginError, check_callback, check_fd, check_nonneg_int
from ._fdtable import AioHandler, FdTable
from ._notifier import EventNotifier
from ._plugins import PluginRegistry, default_registry
from ._pollmode import PollMode
from ._timers import Timer, TimerGroup
from .backend import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_IN,
    EVENT_NVAL,
    EVENT_OUT,
    MAX_WAIT_NS,
    READ_EVENTS,
    WRITE_EVENTS,
    Backend,
)

__all__ = ["AioContext", "ExceptionHandler"]

log = logging.getLogger("aiocore")

ExceptionHandler: TypeAlias = Callable[["AioContext", BaseException], object]
Callback: TypeAlias = Callable[[Any], object]
PollCallback: TypeAlias = Callable[[Any], bool]

#: An idle BH caps a blocking wait at this (SPEC 7).
IDLE_BH_TIMEOUT_NS: Final = 10 * SCALE_MS
_NO_EVENTS: Final[list[tuple[int, int]]] = []

_get_ident = threading.get_ident

#: The contexts made in each thread, weakly: run_in_context() looks here for
#: a context its caller is polling (see polling_in_this_thread()).
_by_thread: dict[int, weakref.WeakSet[AioContext]] = {}
_by_thread_lock = threading.Lock()


def polling_in_this_thread() -> list[AioContext]:
    """The open contexts this thread is inside ``poll()`` of (a callback runs).

    A thread that blocks there waiting for another thread blocks those
    loops too; if the other thread needs one of them (a call back into the
    caller's context), both wait for ever.  :func:`~aiocore.run_in_context`
    polls them while it waits instead, as QEMU's ``AIO_WAIT_WHILE`` polls
    the main context.
    """
    ident = _get_ident()
    with _by_thread_lock:
        made = list(_by_thread.get(ident, ()))
    return [c for c in made if c._depth and c._home == ident and not c._closed]


def check_backend_arg(backend: object) -> None:
    """Raise ``TypeError``/``ValueError`` for a ``backend=`` no context accepts.

    A function, not inline in ``__init__``, so that :class:`~aiocore.IOThread`
    (which creates its context later, in its own thread) refuses the same
    arguments in its constructor, with the same messages.
    """
    if backend is None:
        return
    if isinstance(backend, str):
        names = [backend]
    elif isinstance(backend, (list, tuple)) and all(isinstance(b, str) for b in backend):
        names = list(backend)
    else:
        raise TypeError(
            "backend must be a backend name (str), a list of names, or None, "
            f"got {type(backend).__name__} {backend!r}"
        )
    if not any(names):
        raise ValueError(f"backend must name at least one backend, got {backend!r}")
    if not all(names):
        empty = names.index("") + 1
        raise ValueError(f"backend has an empty name (item {empty}), got {backend!r}")


class AioContext:
    """An event loop in the shape of QEMU's ``AioContext``.

    :param backend: a backend name, a list of names (the first available is
        used), or ``None`` to let ``AIOCORE_BACKEND``, then the config file,
        then ``"auto"`` decide.
    :param poll_max_ns: cap of the adaptive busy-poll window (0 = off), and
        *poll_grow*, *poll_shrink*: see :meth:`set_poll_params`.  ``None``
        takes the config file's value, else 0.
    :param registry: the plugin registry to take backends and notifiers from;
        default: the process's (:func:`aiocore.default_registry`).

    The creating thread is the context's *home thread*: the only one allowed
    to :meth:`poll`.  Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        backend: str | Sequence[str] | None = None,
        *,
        poll_max_ns: int | None = None,
        poll_grow: int | None = None,
        poll_shrink: int | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        # Everything is checked before any OS resource is taken, so a bad
        # argument leaks nothing.
        check_backend_arg(backend)
        poll_args = {
            "poll_max_ns": poll_max_ns,
            "poll_grow": poll_grow,
            "poll_shrink": poll_shrink,
        }
        for key, value in poll_args.items():
            if value is not None:
                check_nonneg_int(value, key)
        reg = default_registry() if registry is None else registry
        if not isinstance(reg, PluginRegistry):
            raise TypeError(f"registry must be a PluginRegistry, got {type(reg).__name__}")
        cfg = resolve(backend, poll=poll_args, registry=reg)
        cfg.check_names(reg)
        options = {name: cfg.options_for(reg, name) for name in reg.backends}
        notifier_cls = reg.notifier_class(cfg.notifier.value)

        self._registry = reg
        self._config: Resolved = cfg
        self._home: int | None = _get_ident()
        self._home_thread = threading.current_thread()
        with _by_thread_lock:
            if len(_by_thread) > 64:  # threads come and go: drop the emptied sets
                for ident in [i for i, made in _by_thread.items() if not made]:
                    del _by_thread[ident]
            _by_thread.setdefault(self._home, weakref.WeakSet()).add(self)
        self._closed = False
        self._lock = threading.RLock()
        self._lock_owner: int | None = None
        self._lock_depth = 0
        self._hlock = threading.Lock()  # serialises handler changes
        self._exc_handler: ExceptionHandler | None = None
        #: What the exception handler last raised, on its way out of poll():
        #: see _handle_exception().
        self._escaping: BaseException | None = None

        # SPEC 6 state.
        self._notify_me = 0
        self._notified = False
        self._kicked = False
        # notify()'s kick against close().  Reentrant: a signal handler (run
        # by CPython between two bytecodes of the main thread) may call
        # notify(), or schedule a BH, while that thread is inside the kick.
        self._kick_lock = threading.RLock()

        self._depth = 0  # poll() nesting level
        self._external_disabled = 0
        self._table = FdTable()
        self._poll_ready: list[AioHandler] = []
        self._leftover: list[tuple[int, int]] = []
        self._bhs = BHQueue(self.notify, self._handle_exception)
        self._timers = TimerGroup(self.notify, self._handle_exception)
        self._pollmode = PollMode(
            cfg.poll["poll_max_ns"].value,
            cfg.poll["poll_grow"].value,
            cfg.poll["poll_shrink"].value,
        )

        self._backend: Backend = reg.open_backend(
            cfg.backend.value, options.__getitem__, self._log_backend, self._note_backend
        )
        self._need_wait: Callable[[], bool] | None = None
        self._backend_changed()
        try:
            self._event: EventNotifier = notifier_cls()
            try:
                fd = self._event.fileno()
                node = AioHandler(
                    fd, self._drain_notifier, None, None, None, self._event, False, EVENT_IN
                )
                self._table.special = node
                self._backend.update(fd, 0, EVENT_IN)
                self._table.replace(fd, node)
                self._notifier_node = node
            except BaseException:
                self._event.close()
                raise
        except BaseException:
            self._backend.close()
            raise
        _clocks.register_context(self)
        self._sources: Any = None
        try:
            reg.call_lifecycle("aiocore_context_created", self)
        except BaseException:
            self.close()
            raise

    # -- introspection -----------------------------------------------------

    def __repr__(self) -> str:
        if self._closed:
            return "<AioContext closed>"
        return (
            f"<AioContext backend={self.backend_name} fds={len(self._table.nodes) - 1} "
            f"poll_max_ns={self._pollmode.max_ns}>"
        )

    @property
    def backend_name(self) -> str:
        """The backend doing the work now (``"epoll"`` after ``auto`` upgraded)."""
        self._check_open()
        return self._backend.name

    @property
    def registry(self) -> PluginRegistry:
        """The plugin registry this context took its backend from."""
        return self._registry

    @property
    def config(self) -> Resolved:
        """The resolved configuration, with where each value came from."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def poll_ns(self) -> int:
        """The current adaptive busy-poll window in nanoseconds."""
        return self._pollmode.ns

    @property
    def poll_max_ns(self) -> int:
        """The cap of the busy-poll window; 0 means polling is off."""
        return self._pollmode.max_ns

    @property
    def poll_grow(self) -> int:
        """The factor the window grows by (0 means 2)."""
        return self._pollmode.grow

    @property
    def poll_shrink(self) -> int:
        """The divisor the window shrinks by (0 means reset to 0)."""
        return self._pollmode.shrink

    @property
    def sources(self) -> Any:
        """Handler sources registered by plugins, by name: ``ctx.sources.socket``."""
        self._check_open()
        if self._sources is None:
            from ._sources import SourceNamespace

            self._sources = SourceNamespace(self)
        return self._sources

    def in_home_thread(self) -> bool:
        """True in the thread that may :meth:`poll` this context."""
        self._check_open()
        return _get_ident() == self._home

    # -- checks ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this AioContext is closed")

    def _check_thread(self, what: str) -> None:
        ident = _get_ident()
        if ident != self._home and ident != self._lock_owner:
            raise RuntimeError(
                f"{what}() from a thread other than the context's home thread "
                "requires holding ctx.acquire()"
            )

    def _wrong_thread(self) -> None:
        self._check_open()
        raise RuntimeError(
            "poll() may only be called from the context's home thread "
            f"(thread id {self._home}); this is thread id {_get_ident()}"
        )

    def _log_backend(self, message: str) -> None:
        log.warning("%r: %s", self, message)

    def _note_backend(self, message: str) -> None:
        log.info("%r: %s", self, message)

    # -- exception handling (SPEC 12) ---------------------------------------

    def set_exception_handler(self, handler: ExceptionHandler | None) -> None:
        """Route exceptions raised by callbacks to ``handler(ctx, exc)``.

        ``None`` restores the default, which logs the exception with its
        traceback on the ``aiocore`` logger.  A handler that raises makes
        ``poll()`` raise, after the context restored its invariants.
        """
        self._check_open()
        self._exc_handler = check_callback(handler, "handler", optional=True)

    def _handle_exception(self, exc: BaseException) -> None:
        # What the handler raises leaves poll(), through every callback
        # between it and the outermost poll(): a timer, BH or fd callback that
        # ran a nested poll() catches it on the way.  Handing it to the
        # handler again there would report one error twice, so it is
        # remembered and passed on; the outermost poll() forgets it, however
        # it ends (a callback may have caught it: a stale mark would let the
        # same object, raised again later, skip the handler).  Outside poll()
        # nothing is nested, so nothing is marked.
        if exc is self._escaping:
            raise exc
        handler = self._exc_handler
        if handler is None:
            log.error("exception in an aiocore callback on %r", self, exc_info=exc)
            return
        try:
            handler(self, exc)
        except BaseException as out:
            if self._depth:
                self._escaping = out
            raise

    # -- notify (SPEC 6) ----------------------------------------------------

    def notify(self) -> None:
        """Wake a blocking :meth:`poll`, now or the next one.  Any thread."""
        if self._closed:
            raise RuntimeError("this AioContext is closed")
        self._notified = True
        if self._notify_me:
            # The kick holds _kick_lock, which close() takes to close the
            # notifier: a notify() from another thread, preempted between
            # reading _notify_me and set(), would otherwise write to the fd
            # number after close() freed it, into whatever reused it.  Only
            # the kick (a system call anyway) pays for the lock.
            with self._kick_lock:
                if not self._closed:
                    self._kicked = True
                    self._event.set()

    def _drain_notifier(self, event: EventNotifier) -> None:
        # io_read of the internal notifier: never progress.
        self._kicked = False
        event.test_and_clear()

    # -- fd handlers (SPEC 3, 4) ---------------------------------------------

    def set_fd_handler(
        self,
        fd: Any,
        io_read: Callback | None = None,
        io_write: Callback | None = None,
        io_poll: PollCallback | None = None,
        opaque: object = None,
        *,
        is_external: bool = False,
        io_poll_ready: Callback | None = None,
    ) -> None:
        """Register, replace or remove (all three callbacks ``None``) *fd*'s handler.

        Callbacks are called as ``cb(opaque)``.  ``io_read`` runs when the fd
        is readable or hung up or in error, ``io_write`` when it is writable or
        in error; ``io_poll(opaque) -> bool`` checks for work without a system
        call (adaptive polling); ``io_poll_ready`` runs instead of ``io_read``
        when ``io_poll`` found work.  *fd* is an int or an object with
        ``fileno()``.  From a thread other than the home thread, hold
        :meth:`acquire`.  Remove a handler before closing its fd.
        """
        self._check_open()
        fd = check_fd(fd)
        check_callback(io_read, "io_read", optional=True)
        check_callback(io_write, "io_write", optional=True)
        check_callback(io_poll, "io_poll", optional=True)
        check_callback(io_poll_ready, "io_poll_ready", optional=True)
        if not isinstance(is_external, bool):
            raise TypeError(
                f"is_external must be a bool, got {type(is_external).__name__} {is_external!r}"
            )
        if io_poll_ready is not None and io_poll is None:
            raise ValueError("io_poll_ready needs io_poll: it runs when io_poll found work")
        if fd == self._notifier_node.fd:
            raise ValueError(f"fd {fd} is the context's own notifier; it cannot be replaced")
        self._check_thread("set_fd_handler")
        errors: list[OSError] = []
        with self._hlock:
            try:
                changed = self._set_handler(
                    fd, io_read, io_write, io_poll, io_poll_ready, opaque, is_external, errors
                )
            finally:
                self._backend_changed()
        if changed:
            self.notify()
        self._report_after_change(errors)

    def _report_after_change(self, errors: list[OSError]) -> None:
        # An fd error met while changing handlers goes to the exception
        # handler only once the change is complete and the handler lock is
        # released: the handler is user code, which may well change handlers
        # itself (the lock is not reentrant), and a handler that re-raises
        # must find the change made and the context notified.
        for error in errors:
            self._handle_exception(error)

    def _effective(self, node: AioHandler) -> int:
        if node.is_external and self._external_disabled:
            return 0
        return node.mask

    def _set_handler(
        self,
        fd: int,
        io_read: Callback | None,
        io_write: Callback | None,
        io_poll: PollCallback | None,
        io_poll_ready: Callback | None,
        opaque: object,
        is_external: bool,
        errors: list[OSError],
    ) -> bool:
        table = self._table
        old = table.nodes.get(fd)
        old_mask = 0 if old is None else self._effective(old)
        # Order matters when another thread (holding acquire()) makes the
        # change while the home thread waits: the table must never lack a
        # record for an fd the backend reports, or the home thread would drop
        # the report and, level-triggered, spin on it.  So a removal tells the
        # backend first, an addition or change updates the table first.
        if io_read is None and io_write is None and io_poll is None:
            if old is None:
                return False
            if old_mask:
                try:
                    self._backend.update(fd, old_mask, 0)
                except OSError as exc:
                    # epoll forgets a closed fd silently; it surfaces here.
                    errors.append(self._fd_error(fd, exc, "removing its handler"))
                except Exception as exc:
                    table.replace(fd, None)  # forgotten, as after any refused removal
                    raise self._backend_bug(exc, fd) from exc
            table.replace(fd, None)
            return True
        mask = (EVENT_IN if io_read is not None else 0) | (EVENT_OUT if io_write is not None else 0)
        node = AioHandler(fd, io_read, io_write, io_poll, io_poll_ready, opaque, is_external, mask)
        new_mask = self._effective(node)
        table.replace(fd, node)
        try:
            if new_mask:
                # Told even when the mask is unchanged: if the fd number was
                # closed and reused without removing the handler, epoll has
                # silently dropped the old file and must learn the new one.
                self._backend.update(fd, old_mask, new_mask)
            elif old_mask:
                self._backend.update(fd, old_mask, 0)
        except BaseException as exc:
            # Refused (a closed fd, a regular file on epoll): undo, so the
            # call changes nothing.
            table.restore(fd, old, node)
            if isinstance(exc, Exception) and not isinstance(exc, OSError):
                raise self._backend_bug(exc, fd) from exc
            raise
        return True

    def _backend_bug(self, exc: Exception, fd: int) -> PluginError:
        """A backend's ``update()`` raised what its contract never does (not an ``OSError``).

        A bug in a plugin, so the error names it, as a constructor's error
        does (:meth:`PluginRegistry.open_backend`).
        """
        name = self._backend.name
        info = self._registry.backends.get(name)
        plugin = f"plugin {info.plugin!r}, {info.dist}" if info is not None else "its plugin"
        return PluginError(
            f"backend {name!r} ({plugin}) raised {type(exc).__name__} in update() for fd "
            f"{fd}: {exc} (a backend raises only OSError there)"
        )

    def _fd_error(self, fd: int, exc: OSError, doing: str) -> OSError:
        err = OSError(
            exc.errno,
            f"fd {fd}: {exc.strerror or exc} while {doing} on backend {self._backend.name!r} "
            "(was the fd closed while registered? remove the handler before closing the fd)",
        )
        err.__cause__ = exc
        return err

    def set_fd_poll(
        self, fd: Any, io_poll_begin: Callback | None, io_poll_end: Callback | None
    ) -> None:
        """Set the hooks called when poll mode starts and ends for *fd*'s handler.

        A no-op if *fd* has no handler; not carried over when the handler
        changes.
        """
        self._check_open()
        fd = check_fd(fd)
        check_callback(io_poll_begin, "io_poll_begin", optional=True)
        check_callback(io_poll_end, "io_poll_end", optional=True)
        self._check_thread("set_fd_poll")
        with self._hlock:
            node = self._table.nodes.get(fd)
            if node is not None and node is not self._notifier_node:
                node.io_poll_begin = io_poll_begin
                node.io_poll_end = io_poll_end

    def set_event_notifier(
        self,
        notifier: EventNotifier,
        io_read: Callable[[EventNotifier], object] | None,
        io_poll: Callable[[EventNotifier], bool] | None = None,
        *,
        is_external: bool = False,
        io_poll_ready: Callable[[EventNotifier], object] | None = None,
    ) -> None:
        """``set_fd_handler(notifier.fileno(), io_read, io_poll=io_poll, opaque=notifier)``.

        ``io_read=None`` (and no ``io_poll``) removes it, even once the
        notifier is closed (anything else on a closed notifier raises
        ``ValueError``).
        """
        self._check_open()
        if not isinstance(notifier, EventNotifier):
            raise TypeError(
                f"notifier must be an EventNotifier, got {type(notifier).__name__} {notifier!r}"
            )
        if notifier.closed:
            fd = self._closed_notifier_fd(notifier, io_read is None and io_poll is None)
            if fd is None:
                return  # not registered here: nothing to remove
        else:
            fd = notifier.fileno()
        self.set_fd_handler(
            fd,
            io_read,
            None,
            io_poll,
            notifier,
            is_external=is_external,
            io_poll_ready=io_poll_ready,
        )

    def set_event_notifier_poll(
        self,
        notifier: EventNotifier,
        io_poll_begin: Callable[[EventNotifier], object] | None,
        io_poll_end: Callable[[EventNotifier], object] | None,
    ) -> None:
        """:meth:`set_fd_poll` for an event notifier."""
        self._check_open()
        if not isinstance(notifier, EventNotifier):
            raise TypeError(
                f"notifier must be an EventNotifier, got {type(notifier).__name__} {notifier!r}"
            )
        if notifier.closed:
            fd = self._closed_notifier_fd(
                notifier, io_poll_begin is None and io_poll_end is None
            )
            if fd is None:
                return
        else:
            fd = notifier.fileno()
        self.set_fd_poll(fd, io_poll_begin, io_poll_end)

    def _closed_notifier_fd(self, notifier: EventNotifier, removing: bool) -> int | None:
        """The fd a closed *notifier* is registered under here, to remove it.

        Closing a notifier before removing its handler is the caller's error
        (SPEC 3), but the handler must still be removable through the
        notifier, whose ``fileno()`` no longer answers: the handler record
        knows it (its opaque is the notifier).  Anything but a removal is
        refused.
        """
        if not removing:
            raise ValueError(f"notifier is closed: {notifier!r}")
        for fd, node in list(self._table.nodes.items()):
            if node.opaque is notifier:
                return fd
        return None

    # -- external clients (SPEC 9) ----------------------------------------

    def disable_external(self) -> None:
        """Stop dispatching, polling and waiting on ``is_external`` handlers (nests)."""
        self._check_open()
        self._check_thread("disable_external")
        errors: list[OSError] = []
        with self._hlock:
            self._external_disabled += 1
            if self._external_disabled == 1:
                self._refresh_external(True, errors)
        self._report_after_change(errors)

    def enable_external(self) -> None:
        """Undo one :meth:`disable_external`; at zero, resume and notify."""
        self._check_open()
        self._check_thread("enable_external")
        errors: list[OSError] = []
        with self._hlock:
            if self._external_disabled == 0:
                raise RuntimeError("enable_external() without a matching disable_external()")
            self._external_disabled -= 1
            if self._external_disabled:
                return
            self._refresh_external(False, errors)
        self.notify()
        self._report_after_change(errors)

    @property
    def external_disabled(self) -> int:
        """How many :meth:`disable_external` calls are in force."""
        return self._external_disabled

    def _refresh_external(self, disabling: bool, errors: list[OSError]) -> None:
        try:
            self._toggle_external(disabling, errors)
        finally:
            self._backend_changed()

    def _toggle_external(self, disabling: bool, errors: list[OSError]) -> None:
        backend = self._backend
        for fd, node in list(self._table.nodes.items()):
            if node.is_external and node.mask:
                try:
                    if disabling:
                        backend.update(fd, node.mask, 0)
                    else:
                        backend.update(fd, 0, node.mask)
                except OSError as exc:
                    action = "pausing" if disabling else "resuming"
                    errors.append(self._fd_error(fd, exc, f"{action} external clients"))

    # -- bottom halves (SPEC 7) ---------------------------------------------

    def bh_new(self, cb: Callback, opaque: object = None) -> BH:
        """Make a bottom half that will run ``cb(opaque)``; schedule it with ``schedule()``."""
        self._check_open()
        return self._bhs.new(cb, opaque)

    def bh_schedule_oneshot(self, cb: Callback, opaque: object = None) -> None:
        """Run ``cb(opaque)`` once at the next BH pass.  Any thread."""
        self._check_open()
        self._bhs.schedule_oneshot(check_callback(cb, "cb"), opaque)

    # -- timers (SPEC 8) ----------------------------------------------------

    def timer_new(self, clock: Clock, scale: int, cb: Callback, opaque: object = None) -> Timer:
        """Make a timer on *clock* whose expiry is counted in units of *scale* ns."""
        self._check_open()
        return self._timers.new(clock, scale, cb, opaque)

    def timer_new_ns(self, clock: Clock, cb: Callback, opaque: object = None) -> Timer:
        """``timer_new(clock, SCALE_NS, cb, opaque)``."""
        return self.timer_new(clock, SCALE_NS, cb, opaque)

    def timer_new_us(self, clock: Clock, cb: Callback, opaque: object = None) -> Timer:
        """``timer_new(clock, SCALE_US, cb, opaque)``."""
        return self.timer_new(clock, SCALE_US, cb, opaque)

    def timer_new_ms(self, clock: Clock, cb: Callback, opaque: object = None) -> Timer:
        """``timer_new(clock, SCALE_MS, cb, opaque)``."""
        return self.timer_new(clock, SCALE_MS, cb, opaque)

    # -- poll parameters (SPEC 5) -------------------------------------------

    def set_poll_params(self, max_ns: int, grow: int, shrink: int) -> None:
        """Set the adaptive polling cap and factors; resets the window and notifies."""
        self._check_open()
        values = (
            check_nonneg_int(max_ns, "max_ns"),
            check_nonneg_int(grow, "grow"),
            check_nonneg_int(shrink, "shrink"),
        )
        self._pollmode.set_params(*values)
        self.notify()

    # -- locking (SPEC 11) --------------------------------------------------

    def acquire(self) -> None:
        """Take the context's recursive lock, so this thread may change handlers."""
        self._check_open()
        self._lock.acquire()
        self._lock_owner = _get_ident()
        self._lock_depth += 1

    def release(self) -> None:
        """Release one level of :meth:`acquire`."""
        if self._lock_owner != _get_ident():
            raise RuntimeError("release() of an AioContext lock this thread does not hold")
        self._lock_depth -= 1
        if self._lock_depth == 0:
            self._lock_owner = None
        self._lock.release()

    # -- the loop (SPEC 2) --------------------------------------------------

    def poll(self, blocking: bool = True) -> bool:
        """Run one iteration; return true if it made progress.

        With *blocking*, wait until there is something to do.  See SPEC 2 for
        the steps, numbered below.
        """
        # 1. Home thread only (a closed context has no home thread).
        if _get_ident() != self._home:
            self._wrong_thread()
        backend = self._backend
        if backend.maintenance_due and not self._depth and not self._external_disabled:
            # Under the handler lock: a thread holding acquire() may be in
            # set_fd_handler(), whose backend.update() must not run while
            # maintain() migrates the interest set (auto's upgrade iterates
            # it and would miss, or trip over, a concurrent change).
            with self._hlock:
                self._maintain_backend()
        table = self._table
        pollmode = self._pollmode
        start = monotonic_ns() if pollmode.max_ns else 0
        # 2. The announcement (SPEC 6) comes late, in step 5, and only if
        # this poll is about to sleep (QEMU 5.1's optimisation, which SPEC 6
        # allows): while it computes its timeout or busy-polls, notify() only
        # sets _notified, which poll mode tests every round and step 5 tests
        # after announcing, and writes no eventfd.
        announced = False
        self._depth += 1
        try:
            # 3. How long may we sleep?  (A scheduled BH answers at once.)
            bhs = self._bhs
            timeout = self._compute_timeout() if blocking and not bhs.nonidle else 0
            # 4. Poll mode (SPEC 5).  hit_ns: the busy loop's last clock
            # reading before a hit (None: no hit); hit_node: the handler whose
            # io_poll_ready the hit calls in step 8; direct: the lone
            # handler's hit already went through steps 5-8 to its
            # io_poll_ready (see below).
            progress = direct = False
            hit_ns = hit_node = None
            if pollmode.ns and timeout and not table.poll_disable_cnt:
                window = pollmode.ns
                if 0 < timeout < window:  # no min(): a builtin's call, every poll
                    window = timeout
                if not pollmode.started:
                    self._set_poll_started(True)
                now = poll_start = monotonic_ns()
                end = poll_start + window
                pollable = table.poll_nodes
                if len(pollable) == 1 and not pollable[0].is_external:
                    # The usual case, one pollable handler (a ring), spins
                    # here rather than in _busy_poll(): its hit's way to the
                    # callback is the latency poll mode exists to cut, and a
                    # return with a tuple is a tenth of a microsecond of it.
                    # io_poll is called through locals with no ``deleted``
                    # check, because removing or replacing a pollable handler
                    # always installs a new poll_nodes snapshot (see FdTable),
                    # and the round checks the snapshot's identity instead.
                    lone = pollable[0]
                    io_poll = lone.io_poll
                    opaque = lone.opaque
                    ready_cb = lone.io_poll_ready
                    # The direct way: when steps 5-8 would do nothing before
                    # this handler's io_poll_ready (no wait: every handler
                    # polls and the backend needs none; no BH to run first),
                    # a hit runs what they do (adapt the window; nothing was
                    # announced, see step 2) and calls it from here.
                    # Measured paired across processes, that is 0.24 us less
                    # from push to callback: the steps' tests, run cold after
                    # microseconds of spinning, were half of aiocore's cost
                    # over a raw ring consumer.  The conditions are tested
                    # once, here: whatever could change them while we spin
                    # (a handler set or removed, a BH scheduled, the poll
                    # parameters set, by this thread's io_poll or another
                    # thread) calls notify(), and the hit tests _notified.
                    may_direct = (
                        ready_cb is not None
                        and self._need_wait is None
                        and not bhs._live
                        and bhs._batch is None
                    )
                    grow_after = start + pollmode.ns  # step 7: adjust() beyond this
                    while True:
                        try:
                            if io_poll(opaque):  # type: ignore[misc]
                                if may_direct and not self._notified:
                                    # Steps 5 (no wait), 6 (nothing announced
                                    # to withdraw, no notification to accept)
                                    # and 7; step 8 follows.
                                    if now > grow_after:
                                        pollmode.adjust(now - start)
                                    direct = True
                                    break
                                progress = True
                                hit_ns = now
                                timeout = 0
                                if lone.io_poll_ready is not None:
                                    hit_node = lone
                                break
                        except Exception as exc:
                            self._handle_exception(exc)
                        # The notifier's own io_poll, after the handler's, so
                        # a notify() made inside it is seen in this round.
                        if self._notified:
                            hit_ns = now
                            timeout = 0
                            break
                        now = monotonic_ns()
                        if now >= end or table.poll_nodes is not pollable or table.poll_disable_cnt:
                            break
                    if direct:
                        # 8. No readiness to record and no BH to run: the
                        # poll-ready handler, then on to the rest of step 8.
                        try:
                            ready_cb(opaque)  # type: ignore[misc]
                        except Exception as exc:
                            self._handle_exception(exc)
                        progress = True
                        hit_ns = now
                        timeout = 0
                if hit_ns is None:
                    if now < end and not table.poll_disable_cnt:
                        progress, hit_ns, now = self._busy_poll(now, end)
                    if hit_ns is not None:
                        timeout = 0
                    elif timeout > 0:  # time spent polling comes off the timeout
                        timeout -= min(timeout, now - poll_start)
            if hit_ns is None:
                if pollmode.started:
                    self._set_poll_started(False)
                if self._notified:
                    timeout = 0
                if table.poll_nodes and self._poll_once():
                    progress = True
                    timeout = 0
            if direct:
                # Steps 5-7, and step 8 up to the poll-ready handler, ran with
                # the hit above.
                events = _NO_EVENTS
            else:
                # 5. Wait, unless every handler was polled and nothing is due.
                need_wait = self._need_wait
                if timeout or table.poll_disable_cnt or (need_wait is not None and need_wait()):
                    if hit_node is not None:  # see step 8
                        self._add_poll_ready(hit_node)
                        hit_node = None
                    if timeout:  # only a blocking poll has one: it may sleep
                        # Announce, then test _notified, then sleep: see
                        # the module docstring for why no wake-up is lost.
                        self._notify_me += 2
                        announced = True
                        if self._notified:
                            timeout = 0
                    events = backend.wait(timeout)
                else:
                    events = _NO_EVENTS
                # 6. Withdraw the announcement; accept the notification.
                if announced:
                    self._notify_me -= 2
                    announced = False
                if self._notified:
                    self._notified = False
                    if self._kicked:
                        self._kicked = False
                        self._event.test_and_clear()
                # 7. Adapt the busy-poll window.  After a hit the busy loop's
                # last clock reading, at most one round before the hit, stands in
                # for a new one: a read costs 60-100 ns here, a third of a round
                # of the loop, on the path a hit exists to shorten.
                if pollmode.max_ns:
                    block_ns = (monotonic_ns() if hit_ns is None else hit_ns) - start
                    if block_ns > pollmode.ns:  # else adjust() keeps the window: no call
                        pollmode.adjust(block_ns)
                # 8. Record readiness (before BHs run, so a handler a BH replaces
                # inherits it), run BHs, dispatch fds, then timers.
                if events:
                    nodes = table.nodes
                    for fd, mask in events:
                        node = nodes.get(fd)
                        if node is not None:
                            node.revents |= mask
                # The busy round's hit (hit_node) goes straight to its
                # io_poll_ready below, skipping the _poll_ready list, unless
                # something runs first that could poll nested (a BH) or raise (a
                # BH, the wait): then it joins the list, which a nested poll()
                # dispatches and an escaping exception leaves for the next one.
                if bhs._live or bhs._batch is not None:
                    if hit_node is not None:
                        self._add_poll_ready(hit_node)
                        hit_node = None
                    if bhs.run():
                        progress = True
                # The poll-ready handlers first (SPEC 3), here rather than in
                # _dispatch(): after a busy-poll hit this is the path to the
                # callback, which is the latency poll mode exists to cut.  A
                # handler the backend also found ready gets its io_read or
                # io_write in _dispatch() *instead* (SPEC 5: io_poll_ready is for
                # a hit with no fd readiness), never both for one piece of work.
                if (
                    hit_node is not None and not hit_node.deleted and not hit_node.revents
                ):  # never external: see step 4
                    # The callable is loaded, then called: CPython 3.10 and 3.11
                    # cannot specialize a method-style call of a callable kept in
                    # a slot, and each such call paid ~11 ns more (3.12 on: same).
                    ready_cb = hit_node.io_poll_ready
                    try:
                        ready_cb(hit_node.opaque)  # type: ignore[misc]
                    except Exception as exc:
                        self._handle_exception(exc)
            ready = self._poll_ready
            while ready:
                node = ready.pop(0)
                if (
                    node.deleted
                    or node.revents
                    or (node.is_external and self._external_disabled)
                ):
                    continue
                progress = True
                ready_cb = node.io_poll_ready
                try:
                    ready_cb(node.opaque)  # type: ignore[misc]
                except Exception as exc:
                    self._handle_exception(exc)
            if (events or self._leftover) and self._dispatch(events):
                progress = True
            if self._timers.armed and self._timers.run():
                progress = True
        except BaseException:
            # A callback's exception escapes (a re-raising handler, or a
            # BaseException): readiness recorded on handler records but not yet
            # dispatched must not be lost, so remember those fds for the next
            # poll() (SPEC 12).  BHs and timers keep their own state.
            snapshot = list(table.nodes.items())
            self._leftover = [(fd, 0) for fd, n in snapshot if n.revents]
            raise
        finally:
            if announced:
                self._notify_me -= 2
            self._depth -= 1
            if self._escaping is not None and not self._depth:
                self._escaping = None  # see _handle_exception
        # 9.
        return progress

    def _compute_timeout(self) -> int:
        bhs = self._bhs
        if bhs.nonidle or bhs._batch is not None or self._leftover or self._poll_ready:
            return 0
        timeout = IDLE_BH_TIMEOUT_NS if bhs._live else -1
        if self._timers.armed:
            deadline = self._timers.deadline_ns()
            if deadline >= 0 and (timeout < 0 or deadline < timeout):
                # A timer weeks away (or at "never", 2**63 - 1) waits at most
                # MAX_WAIT_NS, which every backend's system call accepts; the
                # wait then ends with nothing to do and the next poll() goes on.
                timeout = deadline if deadline < MAX_WAIT_NS else MAX_WAIT_NS
        return timeout

    def _maintain_backend(self) -> None:
        backend = self._backend
        before = backend.name
        backend.maintain()
        self._backend_changed()
        if backend.name != before:
            # The backend notes why (auto: the fd count); this is the trace.
            log.debug("%r: backend switched from %s to %s", self, before, backend.name)

    def _backend_changed(self) -> None:
        # Cache whether need_wait() is worth a call per poll(): the base
        # class's answer is always False.  Re-read after anything that may
        # swap a composite backend's mechanism (maintain(), update()).
        fn = self._backend.need_wait
        self._need_wait = None if getattr(fn, "__func__", None) is Backend.need_wait else fn

    # -- poll mode (SPEC 5) -------------------------------------------------

    def _set_poll_started(self, started: bool) -> None:
        """Call ``io_poll_begin`` (or ``io_poll_end``) on the handlers: SPEC 5.

        Each record remembers whether it began (``poll_began``), so the end
        goes to exactly the records the begin went to: one added since, or an
        external one skipped while external clients were disabled, gets
        neither; one that began and was disabled since still gets its end.  A
        ring's producer that stopped kicking must always be told to start
        again, or the loop sleeps through its next push.  For the same
        reason an exception, even a BaseException, from one hook (or from the
        handler it reaches) does not skip the others: it is raised after.
        """
        self._pollmode.started = started
        escaping: BaseException | None = None
        ext_disabled = self._external_disabled
        for node in list(self._table.nodes.values()):
            if node.deleted:
                continue  # removed by an earlier hook
            if started:
                if node.poll_began or (node.is_external and ext_disabled):
                    continue
                node.poll_began = True
                fn = node.io_poll_begin
            else:
                if not node.poll_began:
                    continue
                node.poll_began = False
                fn = node.io_poll_end
            if fn is None:
                continue
            try:
                try:
                    fn(node.opaque)
                except Exception as exc:
                    self._handle_exception(exc)
            except BaseException as exc:  # what the handler raised, or a BaseException
                if escaping is None:
                    escaping = exc
        if escaping is not None:
            # Passed on by the callbacks it escapes through, like any
            # exception the handler raised (see _handle_exception).
            self._escaping = escaping
            raise escaping

    def _poll_once(self) -> bool:
        """Call every ``io_poll`` once; return true if one found work."""
        progress = False
        ext_disabled = self._external_disabled
        for node in self._table.poll_nodes:
            if node.deleted or (node.is_external and ext_disabled):
                continue
            try:
                found = node.io_poll(node.opaque)  # type: ignore[misc]
            except Exception as exc:
                self._handle_exception(exc)
                continue
            if found:
                progress = True
                if node.io_poll_ready is not None:
                    self._add_poll_ready(node)
        return progress

    def _add_poll_ready(self, node: AioHandler) -> None:
        # Once only: a nested poll() (from a BH of the poll that found the
        # hit) may find the same handler ready again before either
        # dispatches it, and io_poll_ready must then run once, not twice.
        if node not in self._poll_ready:
            self._poll_ready.append(node)

    def _busy_poll(self, now: int, end: int) -> tuple[bool, int | None, int]:
        """Busy-poll every handler (``_poll_once()`` rounds) until *end*.

        Returns ``(progress, hit_ns, now)``: *hit_ns* is the last clock
        reading before a hit (``None``: no hit), *now* the last reading.
        ``poll()`` spins on a lone pollable handler itself; this is the
        general case: several handlers, external ones, or the lone
        handler's snapshot changed during the window.
        """
        table = self._table
        while True:
            if self._poll_once():
                return True, now, now
            if self._notified:
                return False, now, now
            now = monotonic_ns()
            if now >= end or table.poll_disable_cnt:
                return False, None, now

    # -- dispatch (SPEC 3) ---------------------------------------------------

    def _dispatch(self, events: list[tuple[int, int]]) -> bool:
        progress = False
        handle = self._handle_exception
        notifier = self._notifier_node
        if self._leftover:
            events = self._leftover + events
            self._leftover = []
        nodes = self._table.nodes
        for fd, _ in events:
            node = nodes.get(fd)
            if node is None:
                continue
            revents = node.revents
            if not revents:
                continue
            if node.is_external and self._external_disabled:
                node.revents = 0
                continue
            if revents & EVENT_NVAL:
                node.revents = 0
                code = self._backend.fd_errno(fd)
                cause = OSError(code, os.strerror(code))
                handle(self._fd_error(fd, cause, "waiting for it"))
                continue
            if revents & EVENT_HUP and node.io_read is None:
                # poll(2) and epoll report a hang-up whatever was asked for.
                # With no io_read to hear it, io_write does (its next write
                # fails: EPIPE); else the wait would return for it for ever
                # and no callback would run (a busy loop).
                revents |= EVENT_ERR
            # The write half stays on the record while io_read runs: if
            # io_read replaces the handler, the new record inherits it and
            # gets its io_write in this pass (SPEC 3); a nested poll that
            # dispatches the fd takes it, and then it is not dispatched twice.
            node.revents = revents & WRITE_EVENTS
            if revents & READ_EVENTS:
                cb = node.io_read
                if cb is not None:
                    try:
                        cb(node.opaque)
                    except Exception as exc:
                        handle(exc)
                    if node is not notifier:
                        progress = True
            if revents & WRITE_EVENTS:
                node = nodes.get(fd)  # io_read may have replaced or removed it
                if node is None or not node.revents & WRITE_EVENTS:
                    continue  # removed, or a nested poll dispatched it
                # (Only the write half: readiness a nested poll recorded and
                # did not dispatch stays, as before this dispatch.)
                node.revents &= ~WRITE_EVENTS
                cb = node.io_write
                # (A record in the table is never a deleted one; a record
                # io_read installed may be external, though.)
                if cb is not None and not (node.is_external and self._external_disabled):
                    progress = True
                    try:
                        cb(node.opaque)
                    except Exception as exc:
                        handle(exc)
        return progress

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Release every OS resource; afterwards every method but this raises.

        Handlers are dropped, not called; their fds belong to their owners and
        stay open.  Idempotent.  From the home thread (or any thread once the
        home thread has ended): another thread gets ``RuntimeError``.
        """
        if self._closed:
            return
        home = self._home_thread
        if _get_ident() != self._home and home.is_alive():
            # The home thread may be inside poll() or about to enter it, and
            # would go on with a released backend.  A context whose home
            # thread has ended may be closed from anywhere (cleanup).
            raise RuntimeError(
                f"close() from thread id {_get_ident()}: a context is closed by its home "
                f"thread ({home.name!r}, id {self._home}), which is still running and may "
                "be polling it; close it there after poll() returns (IOThread.stop() does)"
            )
        if self._depth:
            raise RuntimeError(
                "close() from inside poll() (a callback): schedule it to run after "
                "poll() returns instead"
            )
        if _get_ident() != self._home:
            # The home thread has ended: this thread inherits the context, so
            # the closing hooks and the sources' close() (which remove their
            # handlers, a home-thread operation) run as they would there.
            self._home = _get_ident()
            self._home_thread = threading.current_thread()
        try:
            self._registry.call_lifecycle("aiocore_context_closing", self)
        finally:
            try:
                if self._sources is not None:
                    self._sources.close()
            finally:
                try:
                    self._release()
                finally:
                    # After the BH queue's and timers' drop hooks: name the
                    # coroutines left suspended here (they never resume).
                    from ._coroutine import _context_closed

                    _context_closed(self)

    def _release(self) -> None:
        """Release every resource; runs even if a plugin or source raised."""
        self._closed = True
        self._home = None
        _clocks.unregister_context(self)
        self._bhs.close()
        self._timers.close()
        try:
            self._backend.close()
        finally:
            with self._kick_lock:  # see notify()
                self._event.close()
            self._table = FdTable()
            self._table.special = self._notifier_node

    def __del__(self) -> None:
        # A context dropped without close() would keep its backend's fds and
        # its notifier open until the process ends.  Collected, it releases
        # those (nothing else: no plugin hook or callback can run for an
        # unreachable context) and says so with a ResourceWarning, as files
        # and sockets do.
        try:
            if self._closed:
                return
            backend, event = self._backend, self._event
        except AttributeError:  # never fully made (its __init__ raised)
            return
        self._closed = True
        warnings.warn(f"unclosed AioContext on {backend.name}", ResourceWarning, stacklevel=2)
        try:
            backend.close()
        finally:
            event.close()

    def __enter__(self) -> AioContext:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers for tests and tools ----------------------------------------

    def handler_fds(self) -> list[int]:
        """The fds with a registered handler (the internal notifier excluded)."""
        self._check_open()
        special = self._notifier_node
        return [fd for fd, node in self._table.nodes.items() if node is not special]

    def backend_statistics(self) -> dict[str, object]:
        """The backend's own counters (``Backend.statistics()``)."""
        self._check_open()
        return {"backend": self._backend.name, **self._backend.statistics()}
