"""A third-party aiocore plugin: a ``select(2)`` backend and lifecycle hooks.

It is written only against aiocore's public plugin API (``aiocore.hookimpl``
and ``aiocore.backend``), as any outside distribution would be.
"""

from __future__ import annotations

import os
import select
from collections.abc import Mapping
from typing import Any, ClassVar

from aiocore import hookimpl
from aiocore.backend import EVENT_ERR, EVENT_IN, EVENT_NVAL, EVENT_OUT, Backend, Option

#: Contexts seen by the lifecycle hooks, for the tests to inspect.
CREATED: list[Any] = []
CLOSING: list[Any] = []


class SelectBackend(Backend):
    """select(2): limited to FD_SETSIZE, but everywhere."""

    name = "select"
    options: ClassVar[Mapping[str, Option]] = {
        "max_fd": Option(int, 1023, "highest fd select(2) accepts", minimum=1),
    }

    def __init__(self, setup: Any) -> None:
        super().__init__(setup)
        self._masks: dict[int, int] = {}
        self._max_fd = setup.options["max_fd"]

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        if fd > self._max_fd:
            raise OSError(f"fd {fd} exceeds select's limit {self._max_fd}")
        if new_mask:
            self._masks[fd] = new_mask
        else:
            self._masks.pop(fd, None)

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        r = [fd for fd, m in self._masks.items() if m & EVENT_IN]
        w = [fd for fd, m in self._masks.items() if m & EVENT_OUT]
        timeout = None if timeout_ns < 0 else timeout_ns / 1e9
        try:
            rr, ww, xx = select.select(r, w, r, timeout)
        except OSError:
            # A closed fd: find it, report it once, stop watching it.
            bad = []
            for fd in list(self._masks):
                try:
                    os.fstat(fd)
                except OSError:
                    bad.append((fd, EVENT_NVAL))
                    del self._masks[fd]
            return bad
        out: dict[int, int] = {}
        for fd in rr:
            out[fd] = out.get(fd, 0) | EVENT_IN
        for fd in ww:
            out[fd] = out.get(fd, 0) | EVENT_OUT
        for fd in xx:
            out[fd] = out.get(fd, 0) | EVENT_ERR
        return list(out.items())

    def close(self) -> None:
        self._masks.clear()

    def statistics(self) -> dict[str, object]:
        return {"max_fd": self._max_fd, "fds": len(self._masks)}


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(SelectBackend)


@hookimpl
def aiocore_context_created(ctx: Any) -> None:
    CREATED.append(ctx)


@hookimpl
def aiocore_context_closing(ctx: Any) -> None:
    CLOSING.append(ctx)
