"""EventNotifier implementations: eventfd (Linux) and a non-blocking pipe.

eventfd is one fd holding a 64-bit counter: ``set()`` adds 1, reading returns
and zeroes it, and it is readable while non-zero, which is exactly a
notifier's semantics in one system call each way.  Where there is no eventfd
(BSD, macOS) a pipe does the same with two fds: ``set()`` writes a byte,
draining reads until ``EAGAIN``.  Both are non-blocking and close-on-exec;
both survive ``fork()`` and work across processes (a child that inherits the
write side, or the eventfd, wakes the parent), which is why they stay real
fds rather than a condition variable.

A full counter or pipe means "already set": ``set()`` swallows ``EAGAIN``
because a notifier has only two states.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiocore import EventNotifier, hookimpl

__all__ = ["EventfdNotifier", "PipeNotifier"]


def _closed_error(n: EventNotifier) -> RuntimeError:
    return RuntimeError(f"{type(n).__name__} is closed")


class EventfdNotifier(EventNotifier):
    """An :class:`~aiocore.EventNotifier` on one eventfd (Linux)."""

    name = "eventfd"
    preference = 20

    @classmethod
    def probe(cls) -> str | None:
        if not hasattr(os, "eventfd"):
            return (
                f"os.eventfd is missing (Python {sys.version_info.major}."
                f"{sys.version_info.minor} on {sys.platform}; eventfd is Linux-only)"
            )
        return None

    def __init__(self, active: bool = False, *, kind: str | None = None, registry: Any = None):
        self._fd = os.eventfd(1 if active else 0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        fd = self._fd
        if fd < 0:
            raise _closed_error(self)
        try:
            os.eventfd_write(fd, 1)
        except BlockingIOError:
            pass

    def test_and_clear(self) -> bool:
        fd = self._fd
        if fd < 0:
            raise _closed_error(self)
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return False
        return True

    def fileno(self) -> int:
        if self._fd < 0:
            raise _closed_error(self)
        return self._fd

    def write_fileno(self) -> int:
        """The fd that sets the notifier: for an eventfd, the same fd.

        Hand it to another process (``subprocess.Popen(pass_fds=...)``, or
        ``fork()``); the other side wakes this one by writing an 8-byte
        native-endian 1 (``aiocore_plugins.notifier_source.wake(fd)``), and
        must never read it.
        """
        if self._fd < 0:
            raise _closed_error(self)
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class PipeNotifier(EventNotifier):
    """An :class:`~aiocore.EventNotifier` on a non-blocking pipe (portable)."""

    name = "pipe"
    preference = 10

    def __init__(self, active: bool = False, *, kind: str | None = None, registry: Any = None):
        if hasattr(os, "pipe2"):
            self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        else:  # macOS
            self._rfd, self._wfd = os.pipe()
            for fd in (self._rfd, self._wfd):
                os.set_blocking(fd, False)
                os.set_inheritable(fd, False)
        if active:
            self.set()

    def set(self) -> None:
        fd = self._wfd
        if fd < 0:
            raise _closed_error(self)
        try:
            os.write(fd, b"\x01")
        except BlockingIOError:
            pass

    def test_and_clear(self) -> bool:
        fd = self._rfd
        if fd < 0:
            raise _closed_error(self)
        was_set = False
        while True:
            try:
                data = os.read(fd, 512)
            except BlockingIOError:
                return was_set
            if not data:
                return was_set
            was_set = True

    def fileno(self) -> int:
        if self._rfd < 0:
            raise _closed_error(self)
        return self._rfd

    def write_fileno(self) -> int:
        """The write end, for handing to another process.

        Any write sets the notifier; ``aiocore_plugins.notifier_source.wake(fd)``
        writes the same 8 bytes an eventfd needs, so the waker need not know
        which kind it holds.
        """
        if self._wfd < 0:
            raise _closed_error(self)
        return self._wfd

    @property
    def closed(self) -> bool:
        return self._rfd < 0

    def close(self) -> None:
        rfd, wfd = self._rfd, self._wfd
        self._rfd = self._wfd = -1
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)


@hookimpl
def aiocore_register_notifiers(register: Any) -> None:
    register(EventfdNotifier)
    register(PipeNotifier)
