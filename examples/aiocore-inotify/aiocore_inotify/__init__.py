"""An inotify handler source for aiocore: ``ctx.sources.inotify.watch(path, callback)``.

This is the example of a third-party source: one module, one hook, its own
distribution (``aiocore-inotify``), found through the ``aiocore`` entry-point
group.  ::

    watch = ctx.sources.inotify.watch(directory, on_event, mask=IN_CREATE | IN_DELETE)
    ...
    watch.close()

``on_event(event)`` gets an :class:`InotifyEvent` (the watched path, the
name inside it, the mask bits, the rename cookie) in the context's home thread.

Kernel facts it relies on (``inotify(7)``):

* ``inotify_init1(IN_NONBLOCK | IN_CLOEXEC)`` makes one fd for any number of
  watches; it is readable while events are queued.  A ``read`` returns whole
  ``struct inotify_event`` records (``int wd; uint32_t mask, cookie, len;
  char name[len]``, the name NUL-padded), never a partial one, as long as the
  buffer holds at least one maximal record (``NAME_MAX`` + 17 bytes).
* ``inotify_add_watch`` returns the *same* watch descriptor for the same
  inode; ``IN_MASK_ADD`` ORs the new mask into the old one.  So two
  :class:`Watch` objects on one directory share a descriptor, and each gets
  only the events its own mask asked for.
* When a watch goes away (``inotify_rm_watch``, or the watched file was
  deleted or its filesystem unmounted) the kernel queues ``IN_IGNORED`` for
  it; ``IN_Q_OVERFLOW`` (``wd == -1``) means events were lost, and is given to
  every watch.

Resources: the source opens its inotify fd with the first watch and closes it
with the last one (a context that watches nothing holds no fd), and everything
is closed with the context.  The handler is removed before the fd is closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from aiocore import AioContext, hookimpl

__all__ = [
    "IN_ALL_EVENTS",
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_Q_OVERFLOW",
    "InotifyEvent",
    "InotifySource",
    "Watch",
]

IN_ACCESS: Final = 0x00000001
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_CLOSE_NOWRITE: Final = 0x00000010
IN_OPEN: Final = 0x00000020
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_ALL_EVENTS: Final = 0x00000FFF
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ISDIR: Final = 0x40000000
IN_MASK_ADD: Final = 0x20000000

#: What :meth:`InotifySource.watch` asks for by default.
DEFAULT_MASK: Final = (
    IN_CREATE
    | IN_DELETE
    | IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
)

_HEADER = struct.Struct("iIII")
_READ_SIZE: Final = 64 * 1024  # far more than one maximal record (16 + 256 bytes)


class InotifyEvent(NamedTuple):
    """One inotify event, as given to a watch's callback."""

    #: The path the watch was made for.
    path: str
    #: The name of the entry inside a watched directory ("" for the path itself).
    name: str
    #: The ``IN_*`` bits.
    mask: int
    #: Links the ``IN_MOVED_FROM`` and ``IN_MOVED_TO`` halves of a rename.
    cookie: int


class _Libc:
    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, f"inotify is Linux-only; this is {sys.platform}")
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = (ctypes.c_int,)
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
        self.rm_watch.restype = ctypes.c_int

    @staticmethod
    def check(result: int, what: str) -> int:
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")
        return result


_libc: _Libc | None = None


def _get_libc() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


class Watch:
    """One watched path; made by :meth:`InotifySource.watch`."""

    __slots__ = ("_source", "callback", "mask", "path", "wd")

    def __init__(
        self,
        source: InotifySource,
        path: str,
        wd: int,
        mask: int,
        callback: Callable[[InotifyEvent], object],
    ) -> None:
        self._source: InotifySource | None = source
        self.path = path
        self.wd = wd
        self.mask = mask
        self.callback = callback

    def __repr__(self) -> str:
        return f"<Watch {self.path!r} wd={self.wd}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        return self._source is None

    def close(self) -> None:
        """Stop watching.  Idempotent."""
        source, self._source = self._source, None
        if source is not None:
            source._drop(self)


class InotifySource:
    """``ctx.sources.inotify``: watch files and directories with inotify."""

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._fd = -1
        self._by_wd: dict[int, list[Watch]] = {}

    def __repr__(self) -> str:
        return f"<InotifySource fd={self._fd} watches={len(self.watches)}>"

    @property
    def watches(self) -> list[Watch]:
        """The open watches."""
        return [w for ws in self._by_wd.values() for w in ws]

    def watch(
        self,
        path: str | os.PathLike[str],
        callback: Callable[[InotifyEvent], object],
        *,
        mask: int = DEFAULT_MASK,
    ) -> Watch:
        """Call ``callback(event)`` for the events of *mask* on *path*.

        :raises TypeError: *path* is not a str or path, *callback* not callable,
            *mask* not an int.
        :raises ValueError: *mask* has no event bit.
        :raises OSError: the kernel refused (``ENOENT``: no such path,
            ``ENOSPC``: the per-user watch limit).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not callable(callback):
            raise TypeError(f"callback must be a callable, got {type(callback).__name__}")
        if type(mask) is not int:
            raise TypeError(f"mask must be an int of IN_* bits, got {type(mask).__name__}")
        if not mask & IN_ALL_EVENTS:
            raise ValueError(
                f"mask must contain at least one event bit (IN_ALL_EVENTS = {IN_ALL_EVENTS:#x}), "
                f"got {mask:#x}"
            )
        if self._ctx.closed:
            raise RuntimeError("this AioContext is closed")
        libc = _get_libc()
        spath = os.fspath(path)
        opened = self._fd < 0
        if opened:
            self._fd = libc.check(libc.init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        try:
            wd = libc.check(
                libc.add_watch(self._fd, os.fsencode(spath), (mask & IN_ALL_EVENTS) | IN_MASK_ADD),
                f"inotify_add_watch({spath!r})",
            )
            if opened:
                self._ctx.set_fd_handler(self._fd, self._on_readable)
        except BaseException:
            if opened:
                os.close(self._fd)
                self._fd = -1
            raise
        w = Watch(self, spath, wd, mask, callback)
        self._by_wd.setdefault(wd, []).append(w)
        return w

    def _on_readable(self, _opaque: object) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        offset = 0
        end = len(data)
        unpack = _HEADER.unpack_from
        while offset < end:
            wd, mask, cookie, length = unpack(data, offset)
            start = offset + _HEADER.size
            name = os.fsdecode(data[start : start + length].rstrip(b"\0"))
            offset = start + length
            # wd -1 is IN_Q_OVERFLOW: every watch lost events.
            targets = self.watches if wd == -1 else list(self._by_wd.get(wd, ()))
            for w in targets:
                if mask & (w.mask | IN_Q_OVERFLOW | IN_IGNORED) and not w.closed:
                    w.callback(InotifyEvent(w.path, name, mask, cookie))
            if mask & IN_IGNORED:
                # The kernel dropped the watch (path deleted): so do we.
                for w in self._by_wd.pop(wd, ()):
                    w._source = None
                self._maybe_close_fd()

    def _drop(self, w: Watch) -> None:
        ws = self._by_wd.get(w.wd)
        if ws is None or w not in ws:
            return
        ws.remove(w)
        if not ws:
            del self._by_wd[w.wd]
            try:
                _get_libc().rm_watch(self._fd, w.wd)  # EINVAL if the kernel dropped it
            finally:
                self._maybe_close_fd()

    def _maybe_close_fd(self) -> None:
        if self._by_wd or self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if not self._ctx.closed:
                self._ctx.set_fd_handler(fd, None)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close every watch and the inotify fd (the context is closing)."""
        for w in self.watches:
            w._source = None
        self._by_wd.clear()
        self._maybe_close_fd()


def _factory(ctx: Any) -> InotifySource:
    return InotifySource(ctx)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    """Register ``ctx.sources.inotify``."""
    register("inotify", _factory)
