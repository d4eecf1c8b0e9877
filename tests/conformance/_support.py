"""Helpers shared by the conformance tests (not tests themselves).

* :class:`Guard`: a REALTIME safety timer.  A test that must block in
  ``poll(True)`` arms one first, so that a bug makes ``poll(True)`` return when
  the guard fires (and the test fail on ``guard.fired``) instead of hanging.
* :class:`WaitSpy`: wraps the context's backend ``wait`` and records every
  call, to prove when the core does (not) make the system call and which
  timeout it asks for; it can also inject readiness into a report.  It
  reaches into ``ctx._backend``, which is acceptable in tests.
* :func:`poll_until`: poll until a predicate holds, bounded in count and time.
* :func:`drain`, :func:`make_pipe`, :class:`Pair`: fds for handlers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from aiocore import SCALE_MS, AioContext, Clock, clock_get_ns
from aiocore.testing import _fill, _WaitSpy

#: Upper bound for any single loop of polls in a test.
MAX_POLLS = 200
#: Upper bound in seconds for any loop of polls in a test.
DEADLINE_S = 5.0


class Guard:
    """A REALTIME timer that fires after *ms* milliseconds and records it.

    Arm it *before* the notification-consuming ``poll(False)`` so its own
    ``notify()`` does not make the next ``poll(True)`` return at once.
    """

    def __init__(self, ctx: AioContext, ms: int = 2000) -> None:
        self.fired = False
        self.timer = ctx.timer_new_ms(Clock.REALTIME, self._fire)
        self.timer.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + ms)

    def _fire(self, _opaque: object) -> None:
        self.fired = True

    def cancel(self) -> None:
        self.timer.delete()


class WaitSpy(_WaitSpy):
    """The kit's wait spy (:mod:`aiocore.testing`), which can also inject readiness."""

    def __init__(self, ctx: AioContext) -> None:
        #: Readiness added to the next report (fd, mask), merged by fd.
        self.inject: list[tuple[int, int]] = []
        super().__init__(ctx)

    def _wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout_ns)
        events: list[tuple[int, int]] = list(self._orig(timeout_ns))
        if self.inject:
            extra, self.inject = self.inject, []
            merged = dict(events)
            for fd, mask in extra:
                merged[fd] = merged.get(fd, 0) | mask
            events = list(merged.items())
        self.reports.append(events)
        return events

    def backend_needs_wait(self) -> bool:
        """The backend's own ``need_wait()`` now (io_uring: submissions pending)."""
        return bool(self._backend.need_wait())


def poll_until(
    ctx: AioContext,
    predicate: Callable[[], bool],
    *,
    blocking: bool = False,
    max_polls: int = MAX_POLLS,
    deadline_s: float = DEADLINE_S,
) -> int:
    """Poll until *predicate()* holds; return the number of polls it took.

    Returns -1 if it never held within *max_polls* polls or *deadline_s*.
    """
    end = time.monotonic() + deadline_s
    for n in range(max_polls + 1):
        if predicate():
            return n
        if time.monotonic() > end:
            break
        ctx.poll(blocking)
    return -1


def drain(fd: int) -> bytes:
    """Read everything readable now from non-blocking *fd*."""
    chunks: list[bytes] = []
    for _ in range(1000):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def make_pipe() -> tuple[int, int]:
    """A non-blocking pipe (read end, write end)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def fill_pipe(w: int) -> None:
    """Write into non-blocking *w* until it is full (no longer writable): the kit's helper."""
    _fill(w)


class Pair:
    """A non-blocking socketpair: ``a`` is the end handlers watch, ``b`` the peer."""

    def __init__(self) -> None:
        self.sa, self.sb = socket.socketpair()
        self.sa.setblocking(False)
        self.sb.setblocking(False)
        self.a = self.sa.fileno()
        self.b = self.sb.fileno()

    def send_to_a(self, data: bytes = b"x") -> None:
        """Make ``a`` readable."""
        self.sb.send(data)

    def send_to_b(self, data: bytes = b"x") -> None:
        """Make ``b`` readable."""
        self.sa.send(data)

    def read_a(self) -> bytes:
        return drain(self.a)

    def read_b(self) -> bytes:
        return drain(self.b)

    def close(self) -> None:
        self.sa.close()
        self.sb.close()


class Recorder:
    """Callbacks that append ``(name, opaque)`` to one shared list."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def cb(self, name: str) -> Callable[[object], None]:
        def callback(opaque: object) -> None:
            self.calls.append((name, opaque))

        callback.__name__ = f"cb_{name}"
        return callback

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def clear(self) -> None:
        self.calls.clear()


class ExcLog:
    """An exception handler that records ``(ctx, exc)`` and goes on (or re-raises)."""

    def __init__(self, reraise: bool = False) -> None:
        self.reraise = reraise
        self.seen: list[BaseException] = []
        self.contexts: list[AioContext] = []

    def __call__(self, ctx: AioContext, exc: BaseException) -> None:
        self.contexts.append(ctx)
        self.seen.append(exc)
        if self.reraise:
            raise exc
