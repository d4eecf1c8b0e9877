"""aiocore_lines: a handler source that delivers what arrives on an fd, line by line."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aiocore import AioContext, check_home_thread, close_newest_first, hookimpl

LineCallback = Callable[[bytes | None], object]


class LineReader:
    """Calls ``on_line(line)`` for each complete line read from a watched fd.

    ``on_line(None)`` signals end of file, after which the fd is no longer
    watched.  The caller owns the fds: the source never closes them.
    """

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._watched: dict[int, tuple[bytearray, LineCallback]] = {}

    def watch(self, fd: int, on_line: LineCallback) -> None:
        check_home_thread(self._ctx, "watch")  # before anything changes
        os.set_blocking(fd, False)
        self._watched[fd] = (bytearray(), on_line)
        self._ctx.set_fd_handler(fd, io_read=self._readable, opaque=fd)

    def unwatch(self, fd: int) -> None:
        check_home_thread(self._ctx, "unwatch")
        if self._watched.pop(fd, None) is not None:
            self._ctx.set_fd_handler(fd, None)

    def _readable(self, fd: int) -> None:
        buf, on_line = self._watched[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:  # end of file
            self.unwatch(fd)
            if buf:
                on_line(bytes(buf))  # the last line had no newline
            on_line(None)
            return
        buf += data
        *lines, rest = buf.split(b"\n")
        buf[:] = rest
        for line in lines:
            on_line(bytes(line))

    def close(self) -> None:
        # Called by ctx.close(), while the context still works: every fd is
        # unwatched even if unwatching one raises.
        close_newest_first(self._watched, self.unwatch)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("lines", LineReader)
