"""A ``select(2)`` backend for aiocore.

Kernel facts it relies on:

* ``select(2)`` is stateless and level-triggered: each call passes the whole
  interest set, so the backend keeps it in user space and a wait costs
  O(highest fd).
* It cannot watch an fd numbered ``FD_SETSIZE`` (1024 on Linux) or higher;
  ``update()`` refuses one above the ``max_fd`` option.
* It has no error or hang-up sets: an fd in error or at end of file is
  reported readable (and writable), which makes the core run ``io_read``,
  as poll's ``POLLERR``/``POLLHUP`` would.  (The third set of ``select`` is
  for out-of-band data, not errors, so it is not used.)
* A closed fd in a set makes the whole call fail with ``EBADF``.  The backend
  then finds the culprit, reports it ``EVENT_NVAL`` once and stops watching it
  until ``update()`` changes it again.
* CPython retries ``select`` after ``EINTR`` with the remaining time (PEP 475)
  and rounds the timeout up to whole microseconds.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from aiocore import hookimpl
from aiocore.backend import EVENT_IN, EVENT_NVAL, EVENT_OUT, Backend, BackendSetup, Option

__all__ = ["SelectBackend"]


class SelectBackend(Backend):
    """A backend on :func:`select.select`."""

    name = "select"
    options: ClassVar[Mapping[str, Option]] = {
        "max_fd": Option(int, 1023, "highest fd select(2) can watch (FD_SETSIZE - 1)", minimum=0),
    }

    @classmethod
    def probe(cls) -> str | None:
        # Cheap, and leaves nothing open.  select exists everywhere CPython
        # runs; a backend on a less common facility checks it here.
        if not hasattr(select, "select"):
            return "select.select is not available on this platform"
        return None

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._max_fd: int = setup.options["max_fd"]
        self._lock = threading.Lock()  # update() may run in another thread
        self._masks: dict[int, int] = {}
        self._dropped: set[int] = set()  # closed fds reported once, not watched
        # What wait() hands to select(): one tuple, replaced whole under the
        # lock and read without it, so a wait never sees half a change.
        self._sets: tuple[list[int], list[int]] = ([], [])

    def _rebuild(self) -> None:
        watched = [(fd, m) for fd, m in self._masks.items() if fd not in self._dropped]
        self._sets = (
            [fd for fd, m in watched if m & EVENT_IN],
            [fd for fd, m in watched if m & EVENT_OUT],
        )

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        if new_mask:
            if fd > self._max_fd:
                raise OSError(
                    errno.EINVAL, f"select cannot watch fd {fd}: above max_fd={self._max_fd}"
                )
            if not old_mask:
                os.fstat(fd)  # adding a closed fd raises OSError (EBADF) now
        with self._lock:
            self._dropped.discard(fd)
            if new_mask:
                self._masks[fd] = new_mask
            else:
                self._masks.pop(fd, None)
            self._rebuild()

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        rlist, wlist = self._sets
        timeout = None if timeout_ns < 0 else timeout_ns / 1e9
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            return self._drop_closed(rlist + wlist)
        ready = dict.fromkeys(readable, EVENT_IN)
        for fd in writable:
            ready[fd] = ready.get(fd, 0) | EVENT_OUT
        return list(ready.items())

    def _drop_closed(self, fds: list[int]) -> list[tuple[int, int]]:
        bad = []
        with self._lock:
            for fd in dict.fromkeys(fds):
                try:
                    os.fstat(fd)
                except OSError:
                    if fd in self._masks:  # not removed in the meantime
                        self._dropped.add(fd)
                        bad.append((fd, EVENT_NVAL))
            self._rebuild()
        return bad

    def close(self) -> None:
        # select holds no kernel object; nothing to release.
        with self._lock:
            self._masks.clear()
            self._rebuild()

    def statistics(self) -> dict[str, object]:
        return {"fds": len(self._masks), "max_fd": self._max_fd, "dropped": sorted(self._dropped)}


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(SelectBackend)
