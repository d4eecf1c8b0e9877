"""``IOThread``: a thread that owns one context and runs its loop (QEMU's IOThread).

The context is created **inside** the new thread, so that thread is its home
thread from the first instruction (the only one allowed to ``poll()``) and the
``aiocore_context_created`` hook runs there, as it does for any context.
:meth:`IOThread.start` waits until the context exists and re-raises in the
caller whatever its creation raised (an unknown backend, a plugin error), so a
failed start leaves no thread behind.

Stopping follows QEMU's ``iothread_stop()``: a one-shot BH is scheduled into
the context and clears the running flag **in the thread itself**.  A BH is
work that ``poll(True)`` is guaranteed to see (SPEC 6), so there is no flag to
race with, and being a BH it runs after every BH that was scheduled before
``stop()`` was called (BH passes are FIFO).  The iteration in which it ran
finishes (fd handlers, timers); then the thread closes its context, which
releases every fd, and exits; ``stop()`` joins it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from ._context import AioContext, check_backend_arg
from ._errors import check_nonneg_int
from ._plugins import PluginRegistry
from ._wait import _check_timeout

__all__ = ["IOThread"]

log = logging.getLogger("aiocore")

#: An IOThread's default cap of the busy-poll window (SPEC 5), as in QEMU.
IOTHREAD_POLL_MAX_NS: Final = 32768

_NEW: Final = "new"
_STARTING: Final = "starting"
_RUNNING: Final = "running"
_STOPPING: Final = "stopping"
_STOPPED: Final = "stopped"

_counter = itertools.count(1)


class IOThread:
    """A thread that owns an :class:`AioContext` and runs ``poll(True)`` until stopped.

    :param name: the thread's name (``threading.Thread.name``); default
        ``"iothread-N"``.
    :param backend: as for :class:`AioContext`.
    :param poll_max_ns: cap of the adaptive busy-poll window; an IOThread
        defaults to 32768 ns (a plain context to 0).  Change it while the
        thread runs with ``iothread.ctx.set_poll_params(...)`` from any thread.
    :param poll_grow: the window's growth factor (0 means 2).
    :param poll_shrink: the window's shrink divisor (0 means reset to 0).
    :param registry: the plugin registry the context takes its backend from.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with aiocore.IOThread(name="io0") as io:
            aiocore.run_in_context(io.ctx, setup_handlers)
            ...

    The thread is a daemon thread, so a forgotten IOThread does not keep the
    interpreter alive; its context's fds are only released by :meth:`stop`.
    """

    def __init__(
        self,
        name: str | None = None,
        backend: str | Sequence[str] | None = None,
        poll_max_ns: int = IOTHREAD_POLL_MAX_NS,
        poll_grow: int = 0,
        poll_shrink: int = 0,
        registry: PluginRegistry | None = None,
    ) -> None:
        # Validate everything here, before a thread exists, so that a bad
        # argument raises in the constructor and changes nothing.
        if name is None:
            name = f"iothread-{next(_counter)}"
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
        elif not name:
            raise ValueError("name must not be empty")
        # AioContext's own check: an empty name or list is refused here, not
        # by start() from inside the new thread.
        check_backend_arg(backend)
        check_nonneg_int(poll_max_ns, "poll_max_ns")
        check_nonneg_int(poll_grow, "poll_grow")
        check_nonneg_int(poll_shrink, "poll_shrink")
        if registry is not None and not isinstance(registry, PluginRegistry):
            raise TypeError(
                f"registry must be a PluginRegistry or None, got {type(registry).__name__}"
            )
        self._name = name
        self._backend = backend
        self._poll_params = (poll_max_ns, poll_grow, poll_shrink)
        self._registry = registry
        self._state = _NEW
        self._state_lock = threading.Lock()
        self._ctx: AioContext | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        #: Read and written only in the IOThread's own thread.
        self._running = False
        #: What made the loop die, if ``poll()`` raised.
        self._loop_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<IOThread {self._name!r} {self._state}>"

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._name

    @property
    def ctx(self) -> AioContext:
        """The context this thread runs; available once :meth:`start` returned.

        After :meth:`stop` it is the closed context.  An IOThread stopped
        before it started, or whose start failed, has none: ``RuntimeError``
        says it was stopped (it cannot start any more).
        """
        ctx = self._ctx
        if ctx is None:
            if self._state == _STOPPED:  # stopped before start(), or start() failed
                raise RuntimeError(f"{self!r} has no context: it was stopped, and cannot start")
            raise RuntimeError(f"{self!r} has no context yet: call start() first")
        return ctx

    @property
    def thread(self) -> threading.Thread | None:
        """The underlying :class:`threading.Thread` (``None`` before :meth:`start`)."""
        return self._thread

    def is_alive(self) -> bool:
        """True while the thread runs (between :meth:`start` and the end of :meth:`stop`)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> IOThread:
        """Start the thread and wait until its context exists; return ``self``.

        An error creating the context (an unknown or unavailable backend, ...)
        is raised here, and the thread is gone by then.  An IOThread starts
        once; a second ``start()`` raises ``RuntimeError``.
        """
        # The state and the thread are published together: a stop() that sees
        # "starting" always finds the thread to wait for (and the readiness
        # event that the thread sets on every path).
        with self._state_lock:
            if self._state != _NEW:
                raise RuntimeError(f"{self!r} can only be started once")
            thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread = thread
            self._state = _STARTING
        thread.start()
        # Bounded by the thread's life: it sets _ready on every path, and if it
        # died some other way is_alive() turns false.
        while not self._ready.wait(0.1):
            if not thread.is_alive():
                break
        error = self._start_error
        if error is not None or self._ctx is None:
            thread.join()
            with self._state_lock:
                self._state = _STOPPED  # _run set it already unless it died oddly
            if error is None:
                raise RuntimeError(f"{self!r} ended before its context was created")
            self._start_error = None
            raise error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and join the thread; the thread closes its context.

        The loop is woken, the iteration in which the stop request runs
        finishes, then the context is closed (releasing its fds) and the
        thread ends.  BHs scheduled before ``stop()`` was called run first;
        work scheduled after it may not run, and scheduling into the closed
        context raises ``RuntimeError``.  Idempotent; a no-op before
        :meth:`start`.  Called from the IOThread itself (from a callback), it
        only requests the stop and returns: the thread cannot join itself.

        :param timeout: seconds to wait for the thread; ``None`` (or
            ``inf``, or more than ``threading.TIMEOUT_MAX``) waits as long
            as the current iteration takes.  On expiry ``TimeoutError`` is
            raised and the stop stays requested (call ``stop()`` again to
            wait more).
        :raises RuntimeError: if the loop had died because ``poll()`` raised
            (the exception is chained).
        """
        # Checked before any state changes; inf (or more than
        # threading.TIMEOUT_MAX) means None, as for run_in_context().
        limit = _check_timeout(timeout, "IOThread.stop")
        with self._state_lock:
            state = self._state
            if state == _NEW:
                self._state = _STOPPED
                return
            thread = self._thread
        # start() publishes the thread with the "starting" state, so it is set.
        assert thread is not None
        if state == _STARTING and thread is not threading.current_thread():
            # A start() in progress in another thread: wait until the thread
            # created its context (or failed to), then read the state again.
            # Bounded by the thread's life: it sets _ready on every path.
            while not self._ready.wait(0.1) and thread.is_alive():
                pass
        with self._state_lock:
            state = self._state
            if state == _RUNNING:
                self._state = _STOPPING
                request = True
            else:
                request = False
        if request:
            ctx = self._ctx
            assert ctx is not None
            if thread is threading.current_thread():
                self._running = False
                return
            try:
                ctx.bh_schedule_oneshot(self._stop_bh)
            except RuntimeError:
                pass  # the loop died and closed its context already
        if thread is threading.current_thread():
            return
        thread.join(limit)
        if thread.is_alive():
            raise TimeoutError(
                f"{self!r} did not stop within {timeout} s (a callback is still running?)"
            )
        with self._state_lock:
            self._state = _STOPPED
        error = self._loop_error
        if error is not None:
            self._loop_error = None
            raise RuntimeError(f"{self!r}: its loop died: poll() raised {error!r}") from error

    def __enter__(self) -> IOThread:
        """Start the thread if it is new; a started one is used as it is.

        :raises RuntimeError: if it is stopping or stopped: the ``with`` body
            would run against a closed context (or none), silently.
        """
        state = self._state
        if state == _NEW:
            self.start()
        elif state in (_STOPPING, _STOPPED):
            raise RuntimeError(f"{self!r} is {state}: an IOThread cannot be entered again")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------

    def _stop_bh(self, _: object) -> None:
        self._running = False

    def _run(self) -> None:
        max_ns, grow, shrink = self._poll_params
        try:
            ctx = AioContext(
                self._backend,
                poll_max_ns=max_ns,
                poll_grow=grow,
                poll_shrink=shrink,
                registry=self._registry,
            )
        except BaseException as exc:
            self._start_error = exc
            # Before _ready: a stop() waiting for readiness then reads a
            # final state, not "starting".
            with self._state_lock:
                self._state = _STOPPED
            self._ready.set()
            return
        self._ctx = ctx
        self._running = True
        with self._state_lock:
            self._state = _RUNNING
        self._ready.set()
        try:
            poll = ctx.poll
            while self._running:
                poll(True)
        except BaseException as exc:
            # The exception handler re-raised, or a BaseException escaped a
            # callback: the loop cannot go on.  stop() reports it.
            self._loop_error = exc
            log.error("%r: poll() raised; the loop stops", self, exc_info=exc)
        finally:
            ctx.close()
