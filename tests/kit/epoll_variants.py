"""A small epoll backend, correct as ``vsel``, and the same with one bug each.

Vendored from the user audit's ``aiocore-selectors`` plugin (its bugs were
switched by ``AIOCORE_SEL_BUG``), on ``select.epoll`` directly so that the
correct variant can report a closed fd as the rules ask.  The kit's own
tests run :class:`aiocore.testing.BackendConformance` on every variant and
check that it fails each bug, and only it:

``vsel_nodrop``
    ``update(fd, mask, 0)`` forgets the fd but leaves it in the epoll set:
    a removed fd that stays ready ends every wait (a busy loop), and adding
    it again fails with ``EEXIST``.
``vsel_errhup``
    ``wait()`` drops ``EVENT_ERR`` and ``EVENT_HUP``: a pipe's end of file
    never reaches ``io_read``, an error never reaches ``io_write``.
``vsel_rounddown``
    the timeout is rounded down to whole milliseconds: a 0.5 ms deadline is a
    0 ms wait, again and again until it passes.
``vsel_notimeout``
    ``wait()`` ignores its timeout (``wait(0)`` included) and sleeps until an
    fd is ready.
``vsel_silent``
    the removal of an fd closed while registered swallows the ``EBADF``
    (as :mod:`selectors` does): the closed fd is never reported.
"""

from __future__ import annotations

import select
import threading
from typing import Any

from aiocore import hookimpl
from aiocore.backend import EVENT_ERR, EVENT_HUP, EVENT_IN, EVENT_OUT, Backend, BackendSetup


class VselBackend(Backend):
    name = "vsel"
    bug = ""

    @classmethod
    def probe(cls) -> str | None:
        return None if hasattr(select, "epoll") else "select.epoll is Linux only"

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._masks: dict[int, int] = {}

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        with self._lock:
            if not new_mask:
                self._masks.pop(fd, None)
                if self.bug == "nodrop":
                    return
                try:
                    self._ep.unregister(fd)
                except OSError:
                    if self.bug != "silent":
                        raise  # forgotten above; the core reports it once
                return
            if fd in self._masks:
                self._ep.modify(fd, new_mask)
            else:
                self._ep.register(fd, new_mask)  # OSError on a closed fd, nothing changed
            self._masks[fd] = new_mask

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        if timeout_ns < 0 or self.bug == "notimeout":
            timeout = -1.0
        elif self.bug == "rounddown":
            timeout = (timeout_ns // 1_000_000) / 1000
        else:
            timeout = timeout_ns / 1e9  # CPython rounds up to whole milliseconds
        out = []
        for fd, ev in self._ep.poll(timeout):
            mask = ev & (EVENT_IN | EVENT_OUT | EVENT_ERR | EVENT_HUP)
            if self.bug == "errhup":
                mask &= ~(EVENT_ERR | EVENT_HUP)
            if mask:
                out.append((fd, mask))
        return out

    def close(self) -> None:
        self._ep.close()

    def statistics(self) -> dict[str, object]:
        return {"fds": len(self._masks)}


def _variant(bug: str) -> type[VselBackend]:
    return type(f"Vsel_{bug}", (VselBackend,), {"name": f"vsel_{bug}", "bug": bug})


VARIANTS = [_variant(bug) for bug in ("nodrop", "errhup", "rounddown", "notimeout", "silent")]


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(VselBackend)
    for cls in VARIANTS:
        register(cls)
