"""The ``epoll`` backend: :func:`select.epoll`, level-triggered.

Kernel facts it relies on:

* The interest set lives in the kernel; a wait costs O(ready fds), not
  O(registered fds), which is what keeps 8192 idle fds cheap.
* Level-triggered (no ``EPOLLET``): a ready fd is reported by every wait
  until drained, matching the core's contract and the other backends.
* ``EPOLLIN``/``EPOLLOUT``/``EPOLLERR``/``EPOLLHUP`` have the same values as
  the ``POLL*`` constants on Linux, so masks pass through untranslated.
* epoll watches *open file descriptions*, not fd numbers.  Closing the last fd
  to a file removes it from the set silently: no error is ever reported, and
  the error surfaces when the handler is removed (``EPOLL_CTL_DEL`` fails with
  ``EBADF`` or ``ENOENT``).  If a ``dup()`` of the fd is still open, epoll keeps
  reporting the old file under the closed number.  Users remove a handler
  before closing its fd; the docs say so.
* Regular files and directories are always ready and ``epoll_ctl`` refuses
  them with ``EPERM``.  This backend raises that as a ``PermissionError`` that
  says so; the ``auto`` policy instead falls back to poll for good.
* A wait interrupted by a signal is retried by CPython with the remaining
  timeout (PEP 475).  The timeout is rounded up to whole milliseconds.
"""

from __future__ import annotations

import errno
import select
from typing import Any

from aiocore import hookimpl
from aiocore.backend import Backend, BackendSetup

__all__ = ["EpollBackend"]

#: errnos of epoll_create1() that describe the moment, not the system.
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


class EpollBackend(Backend):
    """A backend on :func:`select.epoll`."""

    name = "epoll"

    @classmethod
    def probe(cls) -> str | None:
        if not hasattr(select, "epoll"):
            return "select.epoll is not available (epoll is Linux-only)"
        try:
            select.epoll().close()
        except OSError as exc:
            if exc.errno in _TRANSIENT:
                # Out of descriptors or memory *now*: no reason to call epoll
                # unavailable for good (the registry caches this answer).
                # The constructor raises it as OSError when it happens again.
                return None
            return f"epoll_create1() failed: {exc}"
        return None

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._epoll = select.epoll()
        self._epoll_call = self._epoll.poll
        self._nfds = 0

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        ep = self._epoll
        if not new_mask:
            # Forget the fd even if the kernel already did (EBADF/ENOENT for
            # an fd closed while registered): the core has dropped it.
            self._nfds -= 1
            ep.unregister(fd)
            return
        try:
            if old_mask:
                try:
                    ep.modify(fd, new_mask)
                except FileNotFoundError:
                    # The fd was closed and its number reused while registered:
                    # epoll forgot the old file, so watch the new one.
                    ep.register(fd, new_mask)
            else:
                ep.register(fd, new_mask)
                self._nfds += 1
        except PermissionError as exc:
            raise PermissionError(
                errno.EPERM,
                f"epoll cannot watch fd {fd}: it is a regular file or directory, which is "
                "always ready and which epoll_ctl refuses (use the poll or auto backend)",
            ) from exc

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        if timeout_ns < 0:
            return self._epoll_call()
        # CPython converts seconds to milliseconds rounding up (PEP 475's
        # _PyTime_ROUND_TIMEOUT), so a sub-millisecond deadline never spins.
        return self._epoll_call(timeout_ns / 1e9)

    def fileno(self) -> int:
        """The epoll instance's fd."""
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()

    def statistics(self) -> dict[str, object]:
        return {"fds": self._nfds}


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(EpollBackend)
