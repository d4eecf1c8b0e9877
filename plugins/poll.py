"""The ``poll`` backend: :func:`select.poll`, the portable baseline.

Kernel facts it relies on:

* ``poll(2)`` is level-triggered and stateless: every call hands the kernel
  the whole interest set, so a call costs O(number of fds).  That is why
  ``auto`` moves to epoll past a threshold (64 fds, as in QEMU).
* CPython's ``select.poll`` object keeps the ``pollfd`` array between calls
  and rebuilds it only after ``register``/``modify``/``unregister``, so an
  unchanged interest set is not rebuilt per iteration.
* POLLERR and POLLHUP are always reported, whatever was asked.
* A closed fd is reported as POLLNVAL on every call.  This backend reports it
  once and then stops watching the fd (it unregisters it from the kernel-side
  set but remembers the interest), so the loop neither crashes nor spins; the
  core reports the error through the context's exception handler.
* ``poll()`` interrupted by a signal is retried by CPython with the remaining
  timeout (PEP 475); an exception raised by a Python signal handler
  propagates, as it should.
* Another thread may change the interest set while the home thread sits in
  ``poll()`` (a thread holding ``ctx.acquire()``).  The kernel still polls the
  array the call started with, so what it reports for an fd changed
  meanwhile is about the *old* registration: the fd may have been removed and
  closed (a stale POLLNVAL) and its number reused by a new registration.
  Such reports are dropped; readiness is level-triggered, so the next call
  reports the fd's present state.
* The timeout is in milliseconds; it is rounded up (see
  :func:`aiocore.backend.timeout_ms`).
"""

from __future__ import annotations

import select
from typing import Any

from aiocore import hookimpl
from aiocore.backend import EVENT_NVAL, Backend, BackendSetup, timeout_ms

__all__ = ["PollBackend"]


class PollBackend(Backend):
    """A backend on :func:`select.poll`."""

    name = "poll"

    @classmethod
    def probe(cls) -> str | None:
        if not hasattr(select, "poll"):
            return "select.poll is not available on this platform"
        return None

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._poll = select.poll()
        self._poll_call = self._poll.poll
        # fds reported POLLNVAL and dropped from the kernel set.
        self._dropped: set[int] = set()
        # fds update() changed since the current wait() began (see above).
        self._changed: set[int] = set()
        self._nfds = 0

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        poller = self._poll
        self._changed.add(fd)
        self._dropped.discard(fd)
        if not new_mask:
            try:
                poller.unregister(fd)
            except KeyError:
                pass
            self._nfds -= 1
        elif old_mask:
            try:
                poller.modify(fd, new_mask)
            except (KeyError, FileNotFoundError):
                poller.register(fd, new_mask)
        else:
            poller.register(fd, new_mask)
            self._nfds += 1

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        changed = self._changed
        if changed:  # cleared before the call: select.poll builds its array in it
            changed.clear()
        events = self._poll_call(timeout_ms(timeout_ns))
        if changed:
            # Reports about registrations another thread replaced during
            # the call: stale (see the module docstring).
            events = [(fd, mask) for fd, mask in events if fd not in changed]
        for fd, mask in events:
            if mask & EVENT_NVAL:
                self._poll.unregister(fd)
                self._dropped.add(fd)
        return events

    def close(self) -> None:
        # select.poll holds no OS resource; drop the references.
        self._dropped.clear()

    def statistics(self) -> dict[str, object]:
        return {"fds": self._nfds, "dropped_closed_fds": sorted(self._dropped)}


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(PollBackend)
