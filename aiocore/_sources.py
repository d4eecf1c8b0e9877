"""``ctx.sources``: handler-source plugins, attached to a context on first use.

A source plugin registers a factory under a name (``aiocore_register_sources``).
``ctx.sources.<name>`` calls ``factory(ctx)`` the first time and returns the
same object afterwards, so a context pays only for the sources it uses.  When
the context closes, every source made for it is closed, newest first, so a
source built on another one is closed before it.

Two helpers for the sources themselves, exported by :mod:`aiocore`:
:func:`check_home_thread` refuses a call from the wrong thread, naming the
method called, before anything is made or changed; :func:`close_newest_first`
is a source's ``close()``: it releases every handle even if one raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._context import AioContext

__all__ = ["SourceNamespace", "check_home_thread", "close_newest_first"]

_T = TypeVar("_T")
_get_ident = threading.get_ident


def check_home_thread(ctx: AioContext, what: str) -> None:
    """Raise ``RuntimeError`` naming *what* unless this thread may change *ctx*'s handlers.

    That is the context's home thread, or a thread holding
    :meth:`ctx.acquire() <aiocore.AioContext.acquire>`: the rule of
    :meth:`~aiocore.AioContext.set_fd_handler`, with the same message, but
    naming the method the user called::

        listen() from a thread other than the context's home thread requires
        holding ctx.acquire()

    Why a source needs it: without it, the refusal comes from the
    ``set_fd_handler()`` the method makes on the user's behalf, so it names a
    method the user never called, and it comes *after* the method made or
    changed things (a socket created, a timerfd armed, a stream marked
    closed with its handler still registered).  A source method that
    registers, changes or removes handlers calls this first, after checking
    its arguments and before it makes or changes anything, so that a refused
    call changes nothing.

    A closed context passes: it has no home thread and no handlers to
    change, and the caller reports it its own way (``"this AioContext is
    closed"``, or the handle's own closed error).

    A permitted call costs a thread-id lookup and two comparisons (about
    0.07 us), so a method on a hot path (a stream's ``write()``) can afford
    it; the arguments are therefore checked only on the way to an error
    (from the home thread a bad *what* goes unnoticed until the method is
    called from the wrong thread, and is then the error reported).

    :param ctx: the context whose handlers the method changes.
    :param what: the method's name as the user called it, without
        parentheses (``"listen"``, ``"cancel"``).
    :raises RuntimeError: from a thread other than the home thread without
        ``ctx.acquire()``.
    :raises TypeError: *ctx* is not an :class:`~aiocore.AioContext`, or *what*
        is not a str.
    :raises ValueError: *what* is empty.
    """
    try:
        ident = _get_ident()
        # The core's rule (AioContext._check_thread), read here without a
        # second call: this is the path of every permitted call, write()'s too.
        if ident == ctx._home or ident == ctx._lock_owner:
            return
        closed = ctx._closed
    except AttributeError:
        closed = None
    # Off the hot path from here on: the arguments are checked only now.
    from ._context import AioContext

    if closed is None or not isinstance(ctx, AioContext):
        raise TypeError(f"ctx must be an AioContext, got {type(ctx).__name__} {ctx!r}")
    if not isinstance(what, str):
        raise TypeError(f"what must be a str (a method name), got {type(what).__name__} {what!r}")
    if not what:
        raise ValueError("what must name the method called, got an empty str")
    if not closed:
        ctx._check_thread(what)  # raises, with the core's message


def close_newest_first(handles: Iterable[_T], close: Callable[[_T], object]) -> None:
    """Call ``close(handle)`` for every handle, newest first; raise the first error at the end.

    A source's ``close()`` runs when its context closes, and it is the last
    chance to release what the source made: a timerfd or a pipe is a plain
    fd number that no finalizer will ever close.  So one handle whose close
    raises (a removal refused by the thread check, a backend error) must not
    keep the others open.  Every handle is tried, even after one raised
    (anything, ``KeyboardInterrupt`` included: the rest are still closed
    before it propagates), and the first error is raised once all were; the
    later ones are dropped.

    *handles* is read once, into a list, before the first ``close()``: a
    handle may remove itself from the collection it came from.  They are
    closed in reverse order: a source keeps them oldest first (an
    insertion-ordered ``dict``), so a handle built on an older one is closed
    before it, as the context closes its sources.  Each ``close()`` should
    release its own fds in a ``finally`` after removing its handler, so that
    the one that raised is released too.

    :param handles: the handles, oldest first.
    :param close: called as ``close(handle)``.
    :raises TypeError: *handles* is not iterable or *close* not callable.
    """
    if not callable(close):
        raise TypeError(f"close must be a callable, got {type(close).__name__} {close!r}")
    try:
        it = iter(handles)
    except TypeError:
        raise TypeError(
            f"handles must be an iterable, got {type(handles).__name__} {handles!r}"
        ) from None
    errors: list[BaseException] = []
    for handle in reversed(list(it)):
        try:
            close(handle)
        except BaseException as exc:  # re-raised below, after the others
            errors.append(exc)
    if errors:
        raise errors[0]


class SourceNamespace:
    """Attribute access to the sources registered by plugins."""

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._made: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        made = self._made
        if name in made:
            return made[name]
        info = self._ctx.registry.sources.get(name)
        if info is None:
            known = ", ".join(sorted(self._ctx.registry.sources)) or "(none registered)"
            raise AttributeError(f"no handler source {name!r}; registered sources: {known}")
        obj = made[name] = info.factory(self._ctx)
        return obj

    def __dir__(self) -> list[str]:
        return sorted(self._ctx.registry.sources)

    def close(self) -> None:
        """Close every source made for this context, newest first.

        Each source is tried even if an earlier one raised, anything
        included (see :func:`close_newest_first`); the first error is raised
        after all were.
        """
        made = list(self._made.values())
        self._made.clear()
        close_newest_first(made, _close_source)


def _close_source(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()
