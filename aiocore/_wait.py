"""Waiting across threads: ``run_in_context`` and ``wait_while``.

:func:`run_in_context` is QEMU's ``aio_wait_bh_oneshot()``: run a callable in
a context's home thread, from any other thread, and wait for its result.  It
schedules a one-shot BH (safe from any thread, and a BH always wakes a
blocked ``poll(True)``, SPEC 6) and waits on a :class:`threading.Event`,
unless its caller is inside ``poll()`` of a context of its own (a callback):
then it polls that context while it waits, as ``AIO_WAIT_WHILE`` polls the
main context in QEMU, so a call back into the caller's context (A asks B,
whose function asks A) runs instead of deadlocking both threads.  The call's
end notifies the polled context.

:func:`wait_while` is QEMU's ``AIO_WAIT_WHILE(ctx, cond)``: poll a context,
in its home thread, until a condition turns false.  Whoever makes the
condition false from another thread must wake the context afterwards
(``ctx.notify()``, or schedule a BH): the condition is written before the
notification, and ``poll()`` re-reads the notification after announcing
that it may sleep, so the waiter cannot sleep past the change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, Final, TypeVar

from ._clocks import Clock, clock_get_ns
from ._context import AioContext, polling_in_this_thread
from ._coroutine import in_coroutine
from ._errors import check_callback

__all__ = ["run_in_context", "wait_while"]

T = TypeVar("T")

_PENDING: Final = 0
_RUNNING: Final = 1
_DONE: Final = 2
_ABANDONED: Final = 3

#: How often a waiter looks whether the context was closed under it.
_CLOSE_CHECK_S: Final = 0.05
#: A waiter polling several contexts of its own polls each this often.
_TURN_S: Final = 0.001


def _check_ctx(ctx: object, fname: str) -> AioContext:
    if not isinstance(ctx, AioContext):
        raise TypeError(f"{fname}(): ctx must be an AioContext, got {type(ctx).__name__} {ctx!r}")
    return ctx


def _check_timeout(timeout: object, fname: str) -> float | None:
    """Check a ``timeout`` argument: ``None`` or a number of seconds >= 0.

    ``inf``, and anything longer than :data:`threading.TIMEOUT_MAX` (about
    292 years), is returned as ``None``: it means "wait forever", and the
    waits below it (``Event.wait``, ``Thread.join``, a deadline in integer
    nanoseconds) would otherwise fail with an unrelated ``OverflowError``.
    Shared by :func:`run_in_context`, :func:`wait_while` and
    :meth:`IOThread.stop`, so that all three read a timeout the same way,
    before changing anything.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"{fname}(): timeout must be None or a number of seconds, "
            f"got {type(timeout).__name__} {timeout!r}"
        )
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"{fname}(): timeout must be None or a number >= 0, got {timeout!r}")
    if timeout > threading.TIMEOUT_MAX:  # also inf
        return None
    return float(timeout)


class _Call:
    """One ``run_in_context`` call: the state shared by the caller and the BH."""

    __slots__ = ("args", "done", "error", "fn", "lock", "result", "state", "wakers")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], wakers: list[AioContext]
    ) -> None:
        self.fn = fn
        self.args = args
        self.lock = threading.Lock()
        self.state = _PENDING
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        #: The contexts the caller polls while it waits: told when it is done.
        self.wakers = wakers

    def run(self, _: object) -> None:
        with self.lock:
            if self.state != _PENDING:  # the caller gave up: do not run
                return
            self.state = _RUNNING
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc
            self._finish()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like also stop the loop (SPEC 12)
            return
        self._finish()

    def _finish(self) -> None:
        with self.lock:
            self.state = _DONE
        self.done.set()  # first: a waker's poll() returns and reads it
        for ctx in self.wakers:
            try:
                ctx.notify()
            except RuntimeError:
                pass  # closed meanwhile: nobody polls it any more


def run_in_context(
    ctx: AioContext, fn: Callable[..., T], *args: Any, timeout: float | None = None
) -> T:
    """Run ``fn(*args)`` in *ctx*'s home thread and return its result.

    QEMU's ``aio_wait_bh_oneshot()``.  From any thread: a one-shot BH runs
    *fn* at *ctx*'s next BH pass while this thread waits; *fn*'s exception
    is re-raised here.  From *ctx*'s home thread it simply calls ``fn(*args)``
    (waiting for its own loop would deadlock).

    Use it to do what only the home thread may (remove a handler so that it
    is certainly never called again, read loop state consistently) or to
    hand a result back to a worker.  The home thread must be polling (an
    :class:`~aiocore.IOThread` always is), or this waits until it does.

    Called from a callback, that is from inside ``poll()`` of a context
    whose home is the calling thread, it polls that context (nested) while
    it waits, as QEMU's ``AIO_WAIT_WHILE`` does: *fn* may then call back
    into the caller's context (A asks B, whose *fn* asks A) without a
    deadlock, and the caller's other handlers, BHs and timers run meanwhile.
    From a coroutine it blocks instead (``wait_while`` explains why).

    :param timeout: seconds to wait, ``None`` (or ``inf``) for no limit.  If *fn* has not
        started by then it never will; if it is running, its result is
        discarded.  Either way ``TimeoutError`` says which.
    :raises RuntimeError: if *ctx* is closed, or closes before *fn* ran.
    :raises TimeoutError: see *timeout*.
    """
    _check_ctx(ctx, "run_in_context")
    check_callback(fn, "fn")
    limit = _check_timeout(timeout, "run_in_context")
    if ctx.in_home_thread():
        return fn(*args)
    # Inside a coroutine a nested poll() would run other coroutines inside
    # this one (wait_while refuses it): block there, as before.
    own = [] if in_coroutine() else polling_in_this_thread()
    call = _Call(fn, args, own)
    ctx.bh_schedule_oneshot(call.run)  # RuntimeError if closed
    try:
        _wait_for(call, ctx, own, limit)
    except BaseException:
        with call.lock:  # an exception out of our own poll(): give up the call
            if call.state == _PENDING:
                call.state = _ABANDONED
        raise
    error = call.error
    if error is not None:
        call.error = None  # no reference cycle through the traceback
        if isinstance(error, Exception):
            raise error
        raise RuntimeError(
            f"run_in_context(): {fn!r} was interrupted by {type(error).__name__} in the "
            "context's thread"
        ) from error
    result: T = call.result
    return result


def _wait_for(call: _Call, ctx: AioContext, own: list[AioContext], limit: float | None) -> None:
    """Wait until *call* is done, polling *own* meanwhile; raise on timeout or close."""
    fn = call.fn
    deadline = None if limit is None else monotonic() + limit
    done = call.done
    guard = own[0].timer_new_ns(Clock.REALTIME, _noop) if len(own) == 1 else None

    def wait_once(seconds: float) -> bool:
        if guard is not None:
            # The one context this thread is polling: poll it nested until the
            # call's end notifies it, or the guard's next close check.
            if not done.is_set():
                guard.mod_ns(clock_get_ns(Clock.REALTIME) + int(seconds * 1e9))
                own[0].poll(True)
            return done.is_set()
        for c in own:  # several (nested in one another): take turns
            c.poll(False)
        return done.wait(min(seconds, _TURN_S) if own else seconds)

    try:
        while True:
            wait = (
                _CLOSE_CHECK_S if deadline is None else min(_CLOSE_CHECK_S, deadline - monotonic())
            )
            if wait_once(max(wait, 0.0)):
                return
            timed_out = deadline is not None and monotonic() >= deadline
            if not (timed_out or ctx.closed):
                continue
            with call.lock:
                state = call.state
                if state == _PENDING:
                    call.state = _ABANDONED
            if state == _PENDING:
                if timed_out:
                    raise TimeoutError(
                        f"run_in_context(): {fn!r} did not start within {limit} s "
                        "(is the context's home thread polling?); it will not run"
                    )
                raise RuntimeError(f"run_in_context(): the context closed before {fn!r} ran")
            if state == _DONE:
                return
            if timed_out:  # running: cannot be stopped
                raise TimeoutError(
                    f"run_in_context(): {fn!r} is still running after {limit} s; "
                    "its result will be discarded"
                )
    finally:
        if guard is not None:
            guard.delete()


def _noop(_: object) -> None:
    pass


def wait_while(
    ctx: AioContext, cond: Callable[[], object], *, timeout: float | None = None
) -> None:
    """Poll *ctx* until ``cond()`` is false (QEMU's ``AIO_WAIT_WHILE``).

    Call it from *ctx*'s home thread, outside any coroutine (inside one,
    ``await`` instead: polling from a coroutine would run other coroutines
    nested in it).  ``cond()`` is evaluated before each ``poll(True)``; a
    thread that makes it false must then wake *ctx* (``ctx.notify()``, or
    schedule a BH or a coroutine there), which the notify protocol makes
    race-free.

    :param timeout: seconds; ``None`` (or ``inf``) waits as long as it takes.  A REALTIME
        timer wakes the loop at the deadline.
    :raises TimeoutError: if ``cond()`` is still true at the deadline.
    :raises RuntimeError: from another thread, or inside a coroutine.
    """
    _check_ctx(ctx, "wait_while")
    check_callback(cond, "cond")
    limit = _check_timeout(timeout, "wait_while")
    if in_coroutine():
        raise RuntimeError(
            "wait_while() inside a coroutine would nest the loop in it; await instead"
        )
    if not ctx.in_home_thread():
        raise RuntimeError(
            "wait_while() polls ctx, so it must run in the context's home thread; "
            "from another thread use run_in_context()"
        )
    if not cond():
        return
    if limit is None:
        while cond():
            ctx.poll(True)
        return
    deadline = clock_get_ns(Clock.REALTIME) + int(limit * 1e9)
    timer = ctx.timer_new_ns(Clock.REALTIME, _noop)
    timer.mod_ns(deadline)
    try:
        while cond():
            if clock_get_ns(Clock.REALTIME) >= deadline:
                raise TimeoutError(f"wait_while(): condition still true after {limit} s")
            ctx.poll(True)
    finally:
        timer.delete()
