"""A line-pipe source, correct as ``linepipe``, and as ``linepipe_cbafter`` with a bug.

Vendored from the user audit's ``aiocore-linepipe`` plugin.
``ctx.sources.linepipe.open(on_line)`` makes a pipe the source owns; lines
written to its write end reach ``on_line(bytes)`` in the home thread,
batched through a BH.  ``linepipe_cbafter``'s ``close()`` forgets to delete
that BH, so lines read before ``close()`` are delivered after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aiocore import AioContext, hookimpl


class LinePipe:
    def __init__(self, src: LinePipeSource, on_line: Callable[[bytes | None], object]) -> None:
        self._src = src
        self._ctx = src.ctx
        self._on_line = on_line
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._buf = bytearray()
        self._ready: list[bytes | None] = []
        self._bh = self._ctx.bh_new(self._deliver)
        self.closed = False
        self._ctx.set_fd_handler(self._r, io_read=self._readable)

    def write(self, data: bytes) -> None:
        os.write(self._w, data)

    def _readable(self, _o: Any) -> None:
        try:
            data = os.read(self._r, 65536)
        except BlockingIOError:
            return
        if not data:
            self._ctx.set_fd_handler(self._r, None)
            if self._buf:
                self._ready.append(bytes(self._buf))
                self._buf.clear()
            self._ready.append(None)
        else:
            self._buf += data
            *lines, rest = self._buf.split(b"\n")
            self._buf[:] = rest
            self._ready.extend(lines)
        if self._ready:
            self._bh.schedule()

    def _deliver(self, _o: Any) -> None:
        batch, self._ready = self._ready, []
        for line in batch:
            self._on_line(line)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._src.pipes.discard(self)
        try:
            if self._r in self._ctx.handler_fds():
                self._ctx.set_fd_handler(self._r, None)
        finally:
            if not self._src.cbafter:
                self._bh.delete()
            os.close(self._r)
            os.close(self._w)


class LinePipeSource:
    cbafter = False

    def __init__(self, ctx: AioContext) -> None:
        self.ctx = ctx
        self.pipes: set[LinePipe] = set()

    def open(self, on_line: Callable[[bytes | None], object]) -> LinePipe:
        p = LinePipe(self, on_line)
        self.pipes.add(p)
        return p

    def close(self) -> None:
        for p in list(self.pipes):
            p.close()


class CbAfterSource(LinePipeSource):
    cbafter = True


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("linepipe", LinePipeSource)
    register("linepipe_cbafter", CbAfterSource)
