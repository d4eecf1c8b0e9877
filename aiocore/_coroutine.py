"""Coroutines on a context: QEMU's ``aio_co_enter``/``aio_co_schedule``/``aio_co_wake``.

Python coroutines (``async def``) are driven here by aiocore itself, not by
asyncio: a :class:`Coroutine` wraps a coroutine object, and the driver
(:func:`_drive`) advances it with ``send(None)`` in the home thread of the
context it runs in.  A coroutine suspends by awaiting one of the awaitables
below, which all yield one private sentinel; someone then wakes it:

=============================  ==============================================
QEMU                           aiocore
=============================  ==============================================
``qemu_coroutine_create``      ``Coroutine(coro, name=None)``
``aio_co_enter(ctx, co)``      :func:`co_enter`
``aio_co_schedule(ctx, co)``   :func:`co_schedule` (any thread)
``aio_co_wake(co)``            :func:`co_wake` (any thread)
``qemu_coroutine_yield()``     ``await yield_()``
``qemu_co_sleep_ns``           ``await sleep_ns(ns, clock=Clock.REALTIME)``
``aio_co_reschedule_self``     ``await co_reschedule_self(ctx)``
``qemu_coroutine_self``        :func:`current_coroutine`
``qemu_in_coroutine``          :func:`in_coroutine`
``CoMutex``                    :class:`CoMutex` (``async with mutex:``)
=============================  ==============================================

Nothing here touches ``poll()``: a coroutine is entered either directly (by
the caller, in the context's home thread) or by a one-shot BH, so coroutines
ride on the BH machinery and its no-lost-wake-up guarantee (SPEC 6, 7).

Why the rules are what they are:

* **No recursion.**  Entering a coroutine from inside a running coroutine of
  the same context does not nest a ``send()``: the woken coroutine goes on the
  running one's wake-up queue and the driver enters it when the running one
  suspends (QEMU's ``co_queue_wakeup``).  The driver is a loop over a queue,
  so a chain of any number of hand-offs between coroutines runs at a constant
  stack depth.
* **Scheduled once.**  From the moment a coroutine is scheduled (by
  ``co_schedule``, or queued by ``co_enter``/``co_wake``) until the driver
  takes it, it is marked with where it was scheduled; scheduling it again
  raises ``RuntimeError`` naming the coroutine and the first scheduling.  In
  QEMU that is an abort; entering a coroutine twice would resume it from a
  wait it is not in.
  The mark is cleared if the context closes before the coroutine ran (its
  BH is dropped; a warning on the ``aiocore`` logger names it), so it can be
  scheduled elsewhere instead of staying "scheduled" for ever.  A coroutine
  object can be wrapped by one :class:`Coroutine` only, or two wrappers
  would each carry a mark of their own.
* **Never entered while running.**  A coroutine that is running (in its own
  thread, say, between publishing itself to others and suspending) can still
  be scheduled: the scheduling is recorded and carried out by the driver the
  moment the coroutine suspends.  So "publish myself, then ``await
  yield_()``" is race-free even when another thread picks it up at once, and
  ``co_reschedule_self`` needs no helper BH (QEMU needs one).
* **Where a coroutine runs** is the context it was last entered in
  (``co.ctx``); :func:`co_wake` wakes it there.  Entering it in another
  context (``co_schedule(other, co)``) moves it.
* **Nobody stranded silently.**  A context keeps, weakly, the coroutines
  that live there (entered there last, not finished): :func:`_drive` files a
  coroutine when it enters a context it did not run in before and takes it
  out when it finishes, so the bookkeeping is per start, move and finish,
  never per resume.  When the context closes, every one of them that is
  suspended and not scheduled elsewhere is named in one warning on the
  ``aiocore`` logger (see :func:`_context_closed`), whatever it waits on:
  nothing can wake it there any more.  The coroutines the scheduled-BH and
  sleep-timer warnings named are taken out first, so none is named twice.
  One waiting in :meth:`CoMutex.lock` leaves the mutex's queue, and one that
  had just been handed the mutex passes it on, so the mutex is never left
  held by a coroutine that will not run.

A coroutine that raises reports the exception through its context's exception
handler (SPEC 12; default: logged), once, and keeps it for
:meth:`Coroutine.result`.  A handler that re-raises makes ``poll()`` raise
what it raised: the BH or sleep timer that entered the coroutine lets it
through instead of reporting it a second time.  (Entered by ``co_enter`` or
``co_wake`` from your own code, what the handler raised comes out of that
call.)
A ``BaseException`` (KeyboardInterrupt) propagates out of the driver at once,
after any coroutines it still had queued were handed to BHs, so none is lost.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Generator
from collections.abc import Coroutine as _PyCoroutine
from typing import Any, Final

from ._clocks import Clock, check_clock, clock_get_ns
from ._context import AioContext
from ._errors import check_nonneg_int

__all__ = [
    "CoMutex",
    "Coroutine",
    "co_enter",
    "co_reschedule_self",
    "co_schedule",
    "co_wake",
    "current_coroutine",
    "in_coroutine",
    "sleep_ns",
    "yield_",
]

log = logging.getLogger("aiocore")

_CREATED: Final = 0
_RUNNING: Final = 1
_SUSPENDED: Final = 2
_DONE: Final = 3
_STATE_NAMES: Final = ("created", "running", "suspended", "done")


class _Sentinel:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<aiocore suspend>"


#: What every aiocore awaitable yields to the driver.
_SUSPEND: Final = _Sentinel()

#: The coroutine running in this thread (``current``), if any.
_tls = threading.local()

#: Coroutine objects wrapped by a Coroutine (weak: a finished one goes away).
_wrapped: weakref.WeakSet[_PyCoroutine[Any, Any, Any]] = weakref.WeakSet()
_wrapped_lock = threading.Lock()

#: The coroutines living in each context (entered there last, not finished;
#: see "Nobody stranded silently" above), by ``id(ctx)``, as weak references
#: whose callback takes them out: an abandoned coroutine is not kept alive.
#: Nor is the context: its closing forgets its entry, and so does a finalizer
#: if it is collected unclosed.  A context's set is written by the driver in
#: its home thread, read by its closing, and only discarded from elsewhere (a
#: move): single set and dict operations, so no lock is needed.  (A first
#: version, a WeakKeyDictionary of WeakSets under a lock, cost about 2 us per
#: start and finish; this one about 0.4 us.)
_residents: dict[int, set[weakref.ref[Coroutine]]] = {}


def current_coroutine() -> Coroutine | None:
    """The :class:`Coroutine` running in this thread, or ``None`` (``qemu_coroutine_self``)."""
    co: Coroutine | None = getattr(_tls, "co", None)
    return co


def in_coroutine() -> bool:
    """True inside a coroutine driven by aiocore (``qemu_in_coroutine``)."""
    return getattr(_tls, "co", None) is not None


class Coroutine:
    """A Python coroutine driven by aiocore on a context (QEMU's ``Coroutine``).

    :param coro: a coroutine object, the result of calling an ``async def``
        function, not yet started, and not wrapped by another ``Coroutine``
        (``ValueError``).
    :param name: a name for messages; default: the coroutine's qualified name.

    Start it with :func:`co_enter` (in the context's home thread) or
    :func:`co_schedule` (from any thread).  While it runs it may await only
    aiocore's awaitables (:func:`yield_`, :func:`sleep_ns`,
    :func:`co_reschedule_self`, :meth:`CoMutex.lock`).
    """

    __slots__ = (
        "__weakref__",
        "_coro",
        "_ctx",
        "_deferred",
        "_exception",
        "_home",
        "_home_ref",
        "_lock",
        "_name",
        "_result",
        "_scheduled",
        "_state",
        "_token",
        "_waiting_on",
        "_wakeup",
    )

    def __init__(self, coro: _PyCoroutine[Any, Any, Any], *, name: str | None = None) -> None:
        if not inspect.iscoroutine(coro):
            raise TypeError(
                "coro must be a coroutine object (what calling an async def function "
                f"returns), got {type(coro).__name__} {coro!r}"
            )
        if inspect.getcoroutinestate(coro) != inspect.CORO_CREATED:
            raise ValueError(f"coro has already been started or closed: {coro!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
        # One wrapper per coroutine object: two wrappers would each carry
        # their own "scheduled" mark, so the object could be entered twice
        # (from a wait it is not in) despite the scheduled-once rule.
        with _wrapped_lock:
            if coro in _wrapped:
                raise ValueError(
                    f"coro is already wrapped by another Coroutine: {coro!r}; "
                    "wrap each coroutine object once and share that Coroutine"
                )
            _wrapped.add(coro)
        self._coro = coro
        self._name = coro.__qualname__ if name is None else name
        self._lock = threading.Lock()
        self._state = _CREATED
        #: Where it was scheduled, while a BH or a wake-up queue holds it.
        self._scheduled: str | None = None
        #: Context to schedule it into once it suspends (scheduled while running).
        self._deferred: AioContext | None = None
        self._ctx: AioContext | None = None
        #: The set of _residents it is filed in (its context's), and its entry there.
        self._home: set[weakref.ref[Coroutine]] | None = None
        self._home_ref: weakref.ref[Coroutine] | None = None
        #: Coroutines entered (same context) while this one ran: QEMU's co_queue_wakeup.
        self._wakeup: list[Coroutine] = []
        #: Identifies the current sleep, so a late timer does not wake a later wait.
        self._token: object = None
        #: The CoMutex whose lock() it is waiting in (for _context_closed()).
        self._waiting_on: CoMutex | None = None
        self._result: Any = None
        self._exception: BaseException | None = None

    def __repr__(self) -> str:
        extra = ", scheduled" if self._scheduled is not None else ""
        return f"<Coroutine {self._name!r} {_STATE_NAMES[self._state]}{extra}>"

    @property
    def name(self) -> str:
        """The name given, or the coroutine's qualified name."""
        return self._name

    @property
    def ctx(self) -> AioContext | None:
        """The context it was last entered in (where :func:`co_wake` wakes it)."""
        return self._ctx

    @property
    def done(self) -> bool:
        """True once the coroutine returned or raised."""
        return self._state == _DONE

    @property
    def scheduled(self) -> bool:
        """True while it is scheduled to be entered (a BH or a wake-up queue holds it)."""
        return self._scheduled is not None

    def result(self) -> Any:
        """The coroutine's return value; re-raises its exception.

        :raises RuntimeError: if it has not finished.
        """
        if self._state != _DONE:
            raise RuntimeError(f"{self!r} has not finished")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        """The exception the coroutine raised, or ``None``.

        :raises RuntimeError: if it has not finished.
        """
        if self._state != _DONE:
            raise RuntimeError(f"{self!r} has not finished")
        return self._exception


# -- entering and scheduling ------------------------------------------------

_POST: Final = 0  # marked: hand it to a BH or a queue now
_DEFERRED: Final = 1  # marked while running: the driver posts it when it suspends
_SKIP: Final = 2  # nothing to do (a conditional wake that no longer applies)


def _check_args(ctx: object, co: object, fname: str) -> None:
    if not isinstance(ctx, AioContext):
        raise TypeError(f"{fname}(): ctx must be an AioContext, got {type(ctx).__name__} {ctx!r}")
    if not isinstance(co, Coroutine):
        raise TypeError(
            f"{fname}(): co must be an aiocore.Coroutine (wrap the coroutine object: "
            f"Coroutine(fn())), got {type(co).__name__} {co!r}"
        )
    if ctx.closed:
        raise RuntimeError(f"{fname}(): the AioContext is closed")


def _mark(
    co: Coroutine,
    ctx: AioContext,
    how: str,
    *,
    token: object = None,
    quiet: bool = False,
) -> int:
    """Mark *co* as scheduled by *how* (atomically); say what to do next.

    With *token*, only if *co* still waits in the sleep that token names.
    With *quiet*, a coroutine already scheduled is left alone (it will run
    anyway) instead of raising.
    """
    with co._lock:
        if token is not None and (co._token is not token or co._state != _SUSPENDED):
            return _SKIP
        if co._scheduled is not None:
            if quiet or token is not None:
                return _SKIP
            raise RuntimeError(
                f"{how}: {co!r} was already scheduled ({co._scheduled}) and has not run "
                "since; a coroutine can be scheduled only once before it runs"
            )
        if co._state == _DONE:
            raise RuntimeError(f"{how}: {co!r} has finished; it cannot be entered again")
        co._scheduled = f"{how} into {ctx!r}"
        if co._state == _RUNNING:
            co._deferred = ctx
            return _DEFERRED
        return _POST


def _post(ctx: AioContext, co: Coroutine) -> None:
    """Enter the (marked) *co* in *ctx* at its next BH pass; unmark on failure.

    The one-shot goes straight to the context's BH queue, for an option
    ``bh_schedule_oneshot`` does not offer (see :mod:`._bh`): *on_drop*
    unmarks *co* if the context closes before the BH ran (else *co* would
    stay "scheduled" for ever and could never be scheduled anywhere else).
    :func:`_drive` reports to the exception handler itself; what the handler
    re-raises is recognised by the BH pass and passed on (see
    ``AioContext._handle_exception``).
    """
    try:
        if ctx.closed:
            raise RuntimeError("this AioContext is closed")
        ctx._bhs.schedule_oneshot(_scheduled_bh, (ctx, co), on_drop=_dropped)
    except BaseException:
        with co._lock:
            co._scheduled = None
        raise


def _scheduled_bh(arg: tuple[AioContext, Coroutine]) -> None:
    ctx, co = arg
    _drive(ctx, co)


def _dropped(args: list[tuple[AioContext, Coroutine]]) -> None:
    """A context closed with these coroutines' BHs queued: unmark and report them.

    Reported as one warning on the ``aiocore`` logger, not through the
    exception handler: this runs inside ``close()``, which must release
    every resource whatever a handler does, and nothing raised here could
    reach anyone who can act on it.  Each coroutine is left as it was
    before it was scheduled (not started, or suspended where it was), so it
    can be scheduled into another context.

    One waiting in :meth:`CoMutex.lock` that had been handed the mutex (its
    BH is the hand-over's wake-up) passes it on, and one that lived in the
    closing context leaves the mutex's queue; both before it is unmarked, so
    nobody can enter it meanwhile.  If it is scheduled again, ``lock()``
    queues it again.  Those that lived in the closing context are not named
    again by :func:`_context_closed`.
    """
    for ctx, co in args:
        mutex = co._waiting_on
        if mutex is not None:
            mutex._forget_waiter(co, ctx, hand_on=True)
    for ctx, co in args:
        _unsettle(co, ctx)  # while it is marked: nobody moves it meanwhile
        with co._lock:
            co._scheduled = None
    _warn_lost(
        [co for _ctx, co in args],
        "scheduled into a context that closed before they ran; "
        "they were not entered and are no longer scheduled (schedule them elsewhere)",
    )


def co_schedule(ctx: AioContext, co: Coroutine) -> None:
    """Enter *co* in *ctx* at the context's next BH pass (``aio_co_schedule``).  Any thread.

    Moves *co* to *ctx* if it ran elsewhere.  If *co* is running right now, it
    is entered after it next suspends.

    :raises RuntimeError: if *co* is already scheduled and has not run since
        (the message names both schedulings), if it has finished, or if *ctx*
        is closed.
    """
    _check_args(ctx, co, "co_schedule")
    if _mark(co, ctx, "co_schedule") == _POST:
        _post(ctx, co)


def co_enter(ctx: AioContext, co: Coroutine) -> None:
    """Run *co* in *ctx* now if possible, else as soon as possible (``aio_co_enter``).

    * From a thread other than *ctx*'s home thread, or from a coroutine
      running in another context: like :func:`co_schedule`.
    * From inside a coroutine running in *ctx*: *co* is queued and entered
      when the running coroutine suspends (no recursion).
    * Otherwise (the home thread, outside any coroutine): *co* runs now, until
      it suspends or finishes, and so do the coroutines it wakes.

    :raises RuntimeError: as :func:`co_schedule`.
    """
    _check_args(ctx, co, "co_enter")
    _enter(ctx, co, "co_enter")


def co_wake(co: Coroutine) -> None:
    """Wake *co* in the context it last ran in (``aio_co_wake``).  Any thread.

    :raises RuntimeError: if *co* was never entered (use :func:`co_enter`),
        or as :func:`co_schedule`.
    """
    if not isinstance(co, Coroutine):
        raise TypeError(f"co_wake(): co must be an aiocore.Coroutine, got {type(co).__name__}")
    ctx = co._ctx
    if ctx is None:
        raise RuntimeError(f"co_wake(): {co!r} was never entered; start it with co_enter()")
    if ctx.closed:
        raise RuntimeError(f"co_wake(): {co!r}'s context is closed")
    _enter(ctx, co, "co_wake")


def _enter(
    ctx: AioContext, co: Coroutine, how: str, *, token: object = None, quiet: bool = False
) -> None:
    current: Coroutine | None = getattr(_tls, "co", None)
    if not ctx.in_home_thread() or (current is not None and current._ctx is not ctx):
        if _mark(co, ctx, how, token=token, quiet=quiet) == _POST:
            _post(ctx, co)
        return
    if current is not None:
        if _mark(co, ctx, f"{how} queued by {current!r}", token=token, quiet=quiet) == _POST:
            current._wakeup.append(co)
        return
    if _mark(co, ctx, how, token=token, quiet=quiet) == _POST:
        _drive(ctx, co)


# -- where coroutines live, and what a closing context strands ---------------


def _settle(co: Coroutine, ctx: AioContext) -> None:
    """*co* enters *ctx*, where it did not run last: file it there, set ``co._ctx``.

    Called by :func:`_drive` (in *ctx*'s home thread, with *co* running, so
    nobody moves it meanwhile) on a coroutine's first entry and on a move
    between contexts only, never on a plain resume.
    """
    old = co._home
    if old is not None:
        old.discard(co._home_ref)
    home = _residents.get(id(ctx))
    if home is None:
        home = _residents[id(ctx)] = set()
        weakref.finalize(ctx, _residents.pop, id(ctx), None).atexit = False
    ref = weakref.ref(co, home.discard)
    home.add(ref)
    co._home = home
    co._home_ref = ref
    co._ctx = ctx


def _finished(co: Coroutine) -> None:
    """*co* finished (in the driver, which is running it): it lives nowhere now."""
    home = co._home
    if home is not None:
        home.discard(co._home_ref)
        co._home = co._home_ref = None


def _unsettle(co: Coroutine, ctx: AioContext) -> None:
    """A closing of *ctx* reported *co*: it no longer lives in *ctx*."""
    home = _residents.get(id(ctx))
    if home is not None:
        home.discard(weakref.ref(co))


def _stranded(co: Coroutine) -> bool:
    """Suspended, and not scheduled anywhere: only its context could wake it."""
    with co._lock:
        return co._state == _SUSPENDED and co._scheduled is None


def _claim_stranded(cos: list[Coroutine]) -> list[Coroutine]:
    """Those of *cos* still living in their context and stranded; no longer living there.

    A closing reports a coroutine once: the first report claims it.
    """
    claimed: list[Coroutine] = []
    for co in cos:
        ctx = co._ctx
        home = None if ctx is None else _residents.get(id(ctx))
        ref = weakref.ref(co)  # equal to its entry while it lives
        if home is not None and ref in home and _stranded(co):
            home.discard(ref)
            claimed.append(co)
    return claimed


def _warn_lost(cos: list[Coroutine], what: str) -> None:
    """The one warning a closing context gives about the coroutines it drops."""
    log.warning("%d coroutine(s) were %s: %s", len(cos), what, ", ".join(repr(co) for co in cos))


def _context_closed(ctx: AioContext) -> None:
    """Called last by :meth:`AioContext.close`: name the coroutines stranded in *ctx*.

    The scheduled-BH and sleep-timer hooks ran before (inside the BH queue's
    and the timer group's ``close()``) and took out those they named.  What
    is left and suspended waits on something else (:func:`yield_`,
    :meth:`CoMutex.lock`): ``co_wake()`` refuses a closed context, so
    nothing wakes it.  A coroutine scheduled into another context is not
    stranded (it runs there), and one running is not suspended.  Those
    waiting for a :class:`CoMutex` leave its queue, so an ``unlock()``
    hands the mutex to a live waiter instead.  Never raises: ``close()``
    must finish releasing whatever this does.
    """
    try:
        home = _residents.pop(id(ctx), None)
        if home is None:
            return
        cos = [co for ref in list(home) if (co := ref()) is not None]
        home.clear()  # its entries' callbacks point back at it
        _strand(ctx, [co for co in cos if _stranded(co)])
    except Exception:
        log.exception("naming the coroutines stranded in %r failed", ctx)


def _strand(ctx: AioContext, stranded: list[Coroutine]) -> None:
    """Name *stranded* (suspended in the closed *ctx*) and take them out of CoMutex queues."""
    if not stranded:
        return
    _warn_lost(
        stranded,
        "suspended in a context that closed, waiting to be woken (yield_(), "
        "CoMutex.lock()); they will never resume there, and left any CoMutex queue "
        "(close a context after its coroutines finish)",
    )
    for co in stranded:
        mutex = co._waiting_on
        if mutex is not None:
            mutex._forget_waiter(co, ctx, hand_on=False)


def _suspended_after_close(ctx: AioContext, co: Coroutine) -> None:
    """*co* closed its own context *ctx* while running, then suspended in it.

    ``close()`` saw it running, not suspended, so did not name it; the driver
    does, now that it has suspended (unless it is scheduled elsewhere).  Never
    raises, like the closing it completes.
    """
    try:
        _strand(ctx, [co] if _stranded(co) else [])
    except Exception:
        log.exception("naming %r, suspended in the closed %r, failed", co, ctx)


# -- the driver --------------------------------------------------------------


def _foreign_await(co: Coroutine, what: object) -> TypeError:
    return TypeError(
        f"{co!r} awaited {what!r}, which aiocore cannot drive: a coroutine run by aiocore "
        "may await only aiocore's awaitables (yield_(), sleep_ns(), co_reschedule_self(), "
        "CoMutex.lock()) and coroutines that await only those"
    )


def _step(co: Coroutine) -> tuple[bool, Any, BaseException | None]:
    """Advance *co* until it suspends; return (finished, result, exception)."""
    coro = co._coro
    try:
        yielded = coro.send(None)
        if yielded is not _SUSPEND:
            # Let the coroutine see the error at its await, once.
            yielded = coro.throw(_foreign_await(co, yielded))
            if yielded is not _SUSPEND:
                coro.close()
                raise _foreign_await(co, yielded)
    except StopIteration as stop:
        return True, stop.value, None
    except BaseException as exc:
        return True, None, exc
    return False, None, None


def _drive(ctx: AioContext, first: Coroutine) -> None:
    """Enter the marked *first* in *ctx*, then every coroutine woken meanwhile.

    A loop over a queue, never a recursion: QEMU's ``qemu_aio_coroutine_enter``.
    Coroutines queued by the one that just ran go first (depth first, as in
    QEMU), then the ones that were already pending.
    """
    pending: deque[Coroutine] = deque((first,))
    parent = getattr(_tls, "co", None)
    handle = ctx._handle_exception
    while pending:
        co = pending.popleft()
        with co._lock:
            co._scheduled = None
            co._state = _RUNNING
        if co._ctx is not ctx:  # first entry, or a move: not a plain resume
            _settle(co, ctx)
        co._token = None
        _tls.co = co
        try:
            finished, result, exc = _step(co)
        finally:
            _tls.co = parent
        with co._lock:
            co._state = _DONE if finished else _SUSPENDED
            deferred, co._deferred = co._deferred, None
            if finished and deferred is not None:
                late = co._scheduled
                co._scheduled = None
        woken = co._wakeup
        if woken:
            pending.extendleft(reversed(woken))
            woken.clear()
        problems: list[BaseException] = []
        if finished:
            _finished(co)
            co._result = result
            co._exception = exc
            if exc is not None:
                problems.append(exc)
            if deferred is not None:
                problems.append(
                    RuntimeError(f"{co!r} finished while scheduled ({late}); that entry is dropped")
                )
        elif deferred is not None:
            try:
                _post(deferred, co)
            except Exception as err:  # the target context closed meanwhile
                problems.append(err)
        if ctx._closed and not finished:  # one test per step: it closed ctx itself
            _suspended_after_close(ctx, co)
        for problem in problems:
            if isinstance(problem, Exception):
                try:
                    handle(problem)
                    continue
                except BaseException:
                    _hand_over(ctx, pending)
                    raise
            _hand_over(ctx, pending)
            raise problem


def _hand_over(ctx: AioContext, pending: deque[Coroutine]) -> None:
    """The driver is leaving by an exception: give what it still had to BHs."""
    while pending:
        co = pending.popleft()
        try:
            _post(ctx, co)
        except Exception as exc:
            ctx._handle_exception(exc)


# -- awaitables --------------------------------------------------------------


def _require_current(what: str) -> Coroutine:
    co: Coroutine | None = getattr(_tls, "co", None)
    if co is None:
        raise RuntimeError(f"{what} must be awaited inside a coroutine run by aiocore")
    return co


class _Yield:
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        _require_current("yield_()")
        yield _SUSPEND


_YIELD: Final = _Yield()


def yield_() -> Awaitable[None]:
    """``await yield_()``: suspend until woken (``qemu_coroutine_yield``).

    Someone must wake the coroutine later (:func:`co_wake`, :func:`co_enter`,
    :func:`co_schedule`), or it stays suspended.
    """
    return _YIELD


class _Sleep:
    __slots__ = ("_clock", "_ns")

    def __init__(self, ns: int, clock: Clock) -> None:
        self._ns = ns
        self._clock = clock

    def __await__(self) -> Generator[Any, None, None]:
        co = _require_current("sleep_ns()")
        ctx = co._ctx
        assert ctx is not None
        token = object()
        timer = ctx.timer_new_ns(self._clock, _sleep_timer_cb, (co, token))
        timer._on_drop = _sleep_dropped
        timer.mod_ns(clock_get_ns(self._clock) + self._ns)
        co._token = token
        try:
            yield _SUSPEND
        finally:
            timer.delete()


def _sleep_timer_cb(arg: tuple[Coroutine, object]) -> None:
    co, token = arg
    ctx = co._ctx
    if ctx is not None and not ctx.closed:
        _enter(ctx, co, "sleep_ns timer", token=token)


def _sleep_dropped(args: list[tuple[Coroutine, object]]) -> None:
    """A context closed under these sleeping coroutines: say so (see :func:`_dropped`).

    Their timer is gone and their context is closed, so neither it nor a
    :func:`co_wake` can resume them: they stay suspended for ever, and
    whatever they hold (a :class:`CoMutex`) with them.  Not those also
    scheduled (the scheduled-BH warning names them, or they run elsewhere).
    """
    sleepers = _claim_stranded([co for co, _token in args])
    if sleepers:
        _warn_lost(
            sleepers,
            "sleeping in a context that closed; they will never resume "
            "(close a context after its coroutines finish)",
        )


def sleep_ns(ns: int, clock: Clock = Clock.REALTIME) -> Awaitable[None]:
    """``await sleep_ns(ns)``: suspend for *ns* nanoseconds on the context's timers.

    QEMU's ``qemu_co_sleep_ns``.  The timer runs on *clock* of the context
    the coroutine runs in.  A :func:`co_wake` ends the sleep early.
    """
    check_nonneg_int(ns, "ns")
    return _Sleep(ns, check_clock(clock))


class _Reschedule:
    __slots__ = ("_ctx",)

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx

    def __await__(self) -> Generator[Any, None, None]:
        co = _require_current("co_reschedule_self()")
        co_schedule(self._ctx, co)  # carried out by the driver once we suspend
        yield _SUSPEND


def co_reschedule_self(ctx: AioContext) -> Awaitable[None]:
    """``await co_reschedule_self(ctx)``: continue in *ctx* (``aio_co_reschedule_self``).

    The coroutine suspends and is entered again at *ctx*'s next BH pass, in
    *ctx*'s home thread.  **Deviation:** with *ctx* the current context QEMU
    does nothing; here the coroutine still goes through the loop once, which
    makes this the way to let a context's other work run (a cooperative
    yield that needs no one to wake it).
    """
    if not isinstance(ctx, AioContext):
        raise TypeError(
            f"co_reschedule_self(): ctx must be an AioContext, got {type(ctx).__name__}"
        )
    return _Reschedule(ctx)


# -- CoMutex -----------------------------------------------------------------


class CoMutex:
    """A mutex for coroutines, usable across contexts and threads (QEMU's ``CoMutex``).

    ``await mutex.lock()`` ... ``mutex.unlock()``, or ``async with mutex:``.
    A coroutine that finds it held suspends (its thread's loop goes on) and
    is handed the mutex by ``unlock()`` in FIFO order: the unlocker makes the
    first waiter the holder and wakes it with :func:`co_wake`, so nobody can
    barge in between.  The holder is a coroutine, not a thread: it may move
    to another context while holding the mutex.  Not recursive.

    A waiter woken by someone else before it was handed the mutex goes back
    to waiting; a waiter closed while waiting leaves the queue (and passes the
    mutex on if it had just been handed it).  So does a waiter whose context
    closes (the warning that names it says so), or whose wake-up that
    context's closing drops: the mutex is never left to a coroutine that will
    not run.  A waiter that cannot be entered all the same (its context closed
    while the mutex was being handed to it) is skipped, with a warning: the
    mutex goes to the next waiter, or is unlocked.
    """

    __slots__ = ("_holder", "_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: Coroutine | None = None
        self._waiters: deque[Coroutine] = deque()

    def __repr__(self) -> str:
        state = f"held by {self._holder!r}" if self._holder is not None else "unlocked"
        return f"<CoMutex {state}, {len(self._waiters)} waiting>"

    @property
    def locked(self) -> bool:
        """True while a coroutine holds the mutex."""
        return self._holder is not None

    async def lock(self) -> None:
        """Take the mutex, suspending until it is handed over (``qemu_co_mutex_lock``)."""
        co = _require_current("CoMutex.lock()")
        with self._lock:
            holder = self._holder
            if holder is None:
                self._holder = co
                return
            if holder is co:
                raise RuntimeError(f"CoMutex is not recursive: {co!r} already holds it")
            self._waiters.append(co)
            co._waiting_on = self
        try:
            while True:
                await _YIELD
                with self._lock:
                    if self._holder is co:  # set by unlock() before it woke us
                        return
                    if co not in self._waiters:
                        # unlock() skipped us while our context was closed,
                        # and someone entered us elsewhere: wait again.
                        if self._holder is None:
                            self._holder = co
                            return
                        self._waiters.append(co)
        except BaseException:
            with self._lock:
                if self._holder is co:
                    pass_on = True
                else:
                    pass_on = False
                    try:
                        self._waiters.remove(co)
                    except ValueError:
                        pass
            if pass_on:
                self._release()
            raise
        finally:
            co._waiting_on = None

    def unlock(self) -> None:
        """Release the mutex, handing it to the first waiter (``qemu_co_mutex_unlock``).

        :raises RuntimeError: if the mutex is not held by the calling coroutine.
        """
        co = getattr(_tls, "co", None)
        holder = self._holder
        if holder is None:
            raise RuntimeError("CoMutex.unlock() of a mutex that is not locked")
        if holder is not co:
            raise RuntimeError(f"CoMutex.unlock() by {co!r}, but it is held by {holder!r}")
        self._release()

    def _release(self, closing: AioContext | None = None) -> None:
        """Hand the mutex to the first waiter that can be entered; else unlock it.

        The waiter is made the holder before it is woken, so nobody barges
        in.  A waiter whose context closed cannot be entered (waking it
        raises): handing it the mutex would leave the mutex held for ever by
        a coroutine that never runs, and raising here would throw that
        failure into the unlocking coroutine, which did nothing wrong.  So
        such a waiter is skipped, and left out of the queue (if it is ever
        entered elsewhere, ``lock()`` queues it again), and the skip is
        logged as a warning on the ``aiocore`` logger.

        *closing*: the context whose ``close()`` hands the mutex on (see
        :meth:`_forget_waiter`).  The next waiter is then always given a BH,
        never entered inside ``close()``; one already scheduled is skipped
        (that entry may be one ``close()`` is dropping; when it runs,
        ``lock()`` queues it again), and so is one of the closing context,
        without a warning: the closing names it.
        """
        skipped: list[tuple[Coroutine, Exception]] = []
        while True:
            with self._lock:
                nxt = self._waiters.popleft() if self._waiters else None
                self._holder = nxt
            if nxt is None:
                break
            ctx = nxt._ctx
            assert ctx is not None  # it ran lock(), so it was entered
            try:
                if closing is None:
                    # quiet: a waiter already scheduled (woken spuriously) will
                    # run anyway and find that it holds the mutex now.
                    _enter(ctx, nxt, "CoMutex.unlock", quiet=True)
                elif _mark(nxt, ctx, "CoMutex hand-over by close()") == _POST:
                    _post(ctx, nxt)
            except Exception as exc:  # its context is closed (or it is scheduled)
                # Still the holder meanwhile: nobody can barge in.
                if closing is None or (ctx is not closing and nxt._scheduled is None):
                    skipped.append((nxt, exc))
                continue
            break
        if skipped:
            log.warning(
                "CoMutex: skipped %d waiter(s) that could not be entered; the mutex went to "
                "the next waiter (or was unlocked): %s",
                len(skipped),
                "; ".join(f"{co!r}: {exc}" for co, exc in skipped),
            )

    def _forget_waiter(self, co: Coroutine, closing: AioContext, *, hand_on: bool) -> None:
        """*co*, waiting in :meth:`lock`, was dropped by *closing*'s ``close()``.

        If it lives in *closing* (nothing can wake it there), it leaves the
        queue.  If it had been handed the mutex and *hand_on* (its wake-up,
        a BH, was dropped; it is still marked, so nobody enters it
        meanwhile), the mutex goes to the next waiter, or is unlocked.  With
        *co* unmarked (stranded) a hand-over is left to the ``unlock()``
        under way, which finds *co* cannot be entered.  Either way, if *co*
        is ever entered elsewhere, :meth:`lock` queues it again.
        """
        with self._lock:
            if self._holder is not co:
                if co._ctx is closing:
                    try:
                        self._waiters.remove(co)
                    except ValueError:
                        pass
                return
            if not hand_on:
                return
        self._release(closing)

    async def __aenter__(self) -> CoMutex:
        await self.lock()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unlock()
