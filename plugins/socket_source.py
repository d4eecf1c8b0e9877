"""The ``socket`` source: listeners, byte streams and datagrams on a context.

::

    def on_connection(stream):
        stream.start(on_data=stream.write)          # an echo server

    srv = ctx.sources.socket.listen(("127.0.0.1", 0), on_connection)
    cli = ctx.sources.socket.connect(srv.address, on_data=print, on_close=done)
    udp = ctx.sources.socket.datagram(local_address=("::1", 0), on_datagram=got)

An address is a ``(host, port)`` tuple (IPv4 or IPv6, resolved with
``getaddrinfo``: pass numeric hosts, a name lookup blocks the loop) or a
``str``/path for a Unix-domain socket (a leading ``"\\0"`` means Linux's
abstract namespace).  Every callback runs in the context's home thread from
``poll()``; exceptions they raise go to the context's exception handler.
Methods belong to the home thread too (or a thread holding ``ctx.acquire()``):
to hand data over from another thread, use a BH or ``ctx.sources.notifier``.
From any other thread, a method that makes, changes or closes a socket
(``listen()``, ``connect()``, ``stream()``, ``datagram()``, and a stream's
``start()``, ``pause_reading()``, ``resume_reading()``,
``set_write_limits()``, ``write()``,
``writelines()``, ``write_eof()``, ``close()``, ``abort()``, a datagram
socket's ``send()`` and ``close()``, a listener's ``close()``) raises
``RuntimeError`` naming itself, and changes nothing: it is refused before it
makes a socket, sends a byte or touches a handler
(:func:`aiocore.check_home_thread`).  ``write()`` is refused even when the
kernel would take the bytes at once, so whether a call is allowed never
depends on how fast the peer reads.

**How a stream moves bytes, and why it is fast.**

* **Reading** is one ``recv_into`` per readiness report, into one 256 KiB
  buffer shared by every stream of the context (the home thread is the only
  reader), and ``on_data`` gets ``bytes`` of exactly what arrived.  asyncio's
  selector transport instead allocates a fresh 256 KiB ``bytes`` per ``recv``
  and shrinks it, which is most of its per-request cost.  Readiness is
  level-triggered, so reading once and returning lets other handlers run; more
  data is reported again by the next wait.
* **Writing** tries ``send`` at once when nothing is queued; only what the
  kernel did not take is copied into the stream's ``bytearray``, and only then
  is write interest registered (and dropped again when the buffer drains), so
  a stream that keeps up costs no ``epoll_ctl`` per write.  Bytes leave in the
  order ``write()`` accepted them; ``write()`` on a closed stream raises
  :class:`StreamClosed` instead of dropping them.
* **Flow control**: ``write()`` returns ``False`` once the buffer holds
  ``high_water`` bytes or more (default 64 KiB), and ``on_drain()`` runs once
  it is back to ``low_water`` (default 16 KiB).  Pair it with
  :meth:`Stream.pause_reading` / :meth:`Stream.resume_reading` to propagate
  back-pressure.
* **Half-close**: :meth:`Stream.write_eof` shuts down the write side after the
  buffer drains (``shutdown(SHUT_WR)``; the peer reads end of file) and keeps
  reading.  A peer's end of file calls ``on_eof()`` if given (the stream stays
  writable), otherwise closes the stream gracefully.  Once both directions
  are finished the stream closes itself.
* **Closing is reported once**: ``on_close(exc)`` runs exactly once per
  stream, with ``None`` for an orderly end (:meth:`Stream.close`,
  :meth:`Stream.abort`, end of file) or the ``OSError`` that ended it
  (``ConnectionResetError`` for a reset peer).  It never runs inside a method
  you called: an error found by ``write()`` or a close you asked for is
  reported from a BH at the next ``poll()``.  When the *context* closes,
  every socket of the source is closed without callbacks.

**Kernel facts it relies on.**

* A listening socket is readable while its accept queue is non-empty; up to
  ``accept_batch`` connections are accepted per report, then the handler
  returns so one busy listener cannot starve the other handlers.
* ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` from ``accept`` would keep the
  listener readable forever: accepting pauses for 100 ms and the error is
  reported once per pause (asyncio does the same).  ``ECONNABORTED`` (the
  peer gave up while queued) is skipped.
* A non-blocking ``connect`` returns ``EINPROGRESS``; the socket becomes
  writable when it completes, and ``SO_ERROR`` says how.  A Unix-domain
  connect completes (or fails) at once; both paths report through the same
  writable callback.  For a Unix-domain socket ``EAGAIN`` means the
  listener's backlog is full: the socket is not connecting at all, so that
  is a failure (``BlockingIOError``, through ``on_close``).  An unconnected
  socket is writable at once with ``SO_ERROR`` 0, so the writable callback
  also asks ``getpeername``: no peer (``ENOTCONN``) is a failed connect.
* ``recv`` returning 0 bytes is end of file; a reset peer (``SO_LINGER`` 0)
  makes it raise ``ECONNRESET``, and a write to it ``EPIPE`` or ``ECONNRESET``.
  ``POLLHUP``/``POLLERR`` run the read callback, whose ``recv`` finds out
  which; on a stream that only writes (reading paused, at end of file, or
  closing with bytes buffered) the context hands a hang-up to the write
  callback instead, whose ``send`` fails with ``EPIPE``: ``on_close`` gets
  the ``BrokenPipeError``.  With neither read nor write interest the fd is
  not registered at all, and such a condition is noticed at the next read
  or write.
* Datagram sockets keep message boundaries.  A Unix-domain datagram can be
  longer than the shared buffer (up to the sender's ``SO_SNDBUF``), and
  ``recv`` would cut it silently: its length is peeked first (``MSG_PEEK |
  MSG_TRUNC`` returns the whole length on Linux) so it arrives whole.  A
  connected UDP socket receives ``ECONNREFUSED`` for an ICMP "port
  unreachable" as an error on its next receive, which is reported to
  ``on_error`` and is not fatal.
* Handlers are always removed before their socket is closed (epoll forgets
  closed fds silently; see the ``epoll`` backend's essay).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from aiocore import (
    SCALE_MS,
    AioContext,
    Clock,
    check_home_thread,
    clock_get_ns,
    close_newest_first,
    hookimpl,
)

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "RECV_BUFFER_SIZE",
    "Datagram",
    "Listener",
    "SocketSource",
    "Stream",
    "StreamClosed",
]

DataCallback: TypeAlias = Callable[[bytes], object]
CloseCallback: TypeAlias = Callable[["BaseException | None"], object]
EventCallback: TypeAlias = Callable[[], object]
ConnectionCallback: TypeAlias = Callable[["Stream"], object]
DatagramCallback: TypeAlias = Callable[[bytes, Any], object]
ErrorCallback: TypeAlias = Callable[[OSError], object]

#: Size of the receive buffer shared by the streams and datagrams of a context.
RECV_BUFFER_SIZE: Final = 256 * 1024
DEFAULT_HIGH_WATER: Final = 64 * 1024
DEFAULT_LOW_WATER: Final = 16 * 1024
DEFAULT_BACKLOG: Final = 128
DEFAULT_ACCEPT_BATCH: Final = 32
DEFAULT_DATAGRAM_BATCH: Final = 32
#: How long accepting pauses after EMFILE and friends.
ACCEPT_RETRY_MS: Final = 100
#: ``recv`` flags that ask the length of the next datagram without taking it
#: (Linux: ``MSG_TRUNC`` makes ``recv`` return the whole length).  A module
#: global, read per call, so that a test can take ``MSG_TRUNC`` away.
#: Plain ints: ``&`` on a ``socket.MsgFlag`` goes through ``enum`` (~1 us).
_MSG_TRUNC: Final = int(getattr(socket, "MSG_TRUNC", 0))
_PEEK_LENGTH: int = int(socket.MSG_PEEK) | _MSG_TRUNC

_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
)
_CONNECT_PENDING: Final = frozenset((0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN))
#: ``connect`` errors that are *not* pending for a Unix-domain socket: there
#: EAGAIN means the listener's backlog is full and the socket is not connecting.
_UNIX_CONNECT_FULL: Final = frozenset((errno.EWOULDBLOCK, errno.EAGAIN))

# Stream states.
_CONNECTING: Final = 0
_OPEN: Final = 1
_CLOSED: Final = 2


class StreamClosed(RuntimeError):
    """A write or shutdown on a stream that is closed or closing.

    Raised instead of dropping the data: every byte ``write()`` accepted is
    either handed to the kernel in order or its loss is reported through
    ``on_close(exc)``.
    """


# ---------------------------------------------------------------------------
# Argument checks: each names the argument and what it accepts.
# ---------------------------------------------------------------------------


def _check_callback(cb: object, argname: str, *, optional: bool = False) -> Any:
    if cb is None and optional:
        return None
    if not callable(cb):
        accepted = "a callable or None" if optional else "a callable"
        raise TypeError(f"{argname} must be {accepted}, got {type(cb).__name__} {cb!r}")
    return cb


def _check_count(value: object, argname: str, minimum: int) -> int:
    if type(value) is not int:
        raise TypeError(f"{argname} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{argname} must be >= {minimum}, got {value}")
    return value


def _check_bool(value: object, argname: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"{argname} must be a bool (True or False), got {type(value).__name__} {value!r}"
        )
    return value


def _check_limits(high: object, low: object) -> tuple[int, int]:
    hi = DEFAULT_HIGH_WATER if high is None else _check_count(high, "high_water", 0)
    if low is None:
        lo = min(DEFAULT_LOW_WATER, hi // 4) if high is not None else DEFAULT_LOW_WATER
    else:
        lo = _check_count(low, "low_water", 0)
    if lo > hi:
        raise ValueError(f"low_water must be <= high_water, got low_water={lo} high_water={hi}")
    return hi, lo


_ADDRESS_HELP: Final = (
    "a (host, port) tuple for TCP/UDP over IPv4 or IPv6, or a str or path for a Unix-domain socket"
)


def _resolve(address: object, socktype: int, *, passive: bool, argname: str) -> tuple[int, Any]:
    """Return ``(family, sockaddr)`` for *address*, or raise naming *argname*."""
    if isinstance(address, (str, bytes, os.PathLike)):
        if not hasattr(socket, "AF_UNIX"):
            raise ValueError(f"{argname}: Unix-domain sockets do not exist on this platform")
        path = os.fspath(address)
        if not path:
            raise ValueError(f"{argname} must not be empty; it must be {_ADDRESS_HELP}")
        return socket.AF_UNIX, path
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(
            f"{argname} must be {_ADDRESS_HELP}; got {type(address).__name__} {address!r}"
        )
    host, port = address[0], address[1]
    if host is None:
        host = ""
    if not isinstance(host, str):
        raise TypeError(
            f"{argname}: host must be a str (a numeric address avoids a blocking name "
            f"lookup), got {type(host).__name__} {host!r}"
        )
    if type(port) is not int:
        raise TypeError(f"{argname}: port must be an int, got {type(port).__name__} {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{argname}: port must be in 0..65535, got {port}")
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host or None, port, 0, socktype, 0, flags)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"{argname} {address!r} is not a valid address: {exc}") from None
    if not infos:
        raise ValueError(f"{argname} {address!r} resolves to nothing")
    family = infos[0][0]
    sockaddr: Any = infos[0][4]
    if len(address) == 4 and family == socket.AF_INET6:
        sockaddr = (sockaddr[0], sockaddr[1], address[2], address[3])
    return family, sockaddr


_FAMILY_NAMES: Final[dict[int, str]] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _check_destination(family: int, address: object, connected: bool) -> Any:
    """Return *address* as ``sendto`` takes it on a socket of *family*, or raise naming it.

    Checks what ``sendto`` would otherwise refuse with a ``TypeError``,
    ``OverflowError`` or a resolver error that does not name the argument
    (or, for a datagram queued behind others, only when the queue flushes):
    the shape for the family, the types, the port range, an IP literal of
    the other family.  Host *names* are left to ``sendto`` (a lookup that
    blocks the loop; its failure is an ``OSError`` like a send's).
    """
    if address is None:
        if not connected:
            raise ValueError(
                "address must be given: this datagram socket has no remote_address "
                "(None means the connected peer)"
            )
        return None
    if family not in _FAMILY_NAMES:  # Unix-domain
        if not isinstance(address, (str, bytes, os.PathLike)):
            raise TypeError(
                "address must be a str or path on this Unix-domain datagram socket "
                f"(or None for the connected peer); got {type(address).__name__} {address!r}"
            )
        path = os.fspath(address)
        if not path:
            raise ValueError("address must not be empty; it must be a str or path")
        return path
    name = _FAMILY_NAMES[family]
    v6 = family == socket.AF_INET6
    shapes = "a (host, port)" + (" or (host, port, flowinfo, scope_id)" if v6 else "")
    if not isinstance(address, tuple) or len(address) not in ((2, 4) if v6 else (2,)):
        raise TypeError(
            f"address must be {shapes} tuple on this {name} datagram socket (or None for the "
            f"connected peer); got {type(address).__name__} {address!r}"
        )
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError(f"address: host must be a str, got {type(host).__name__} {host!r}")
    if type(port) is not int:
        raise TypeError(f"address: port must be an int, got {type(port).__name__} {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"address: port must be in 0..65535, got {port}")
    if len(address) == 4:
        for value, what, top in ((address[2], "flowinfo", 2**20), (address[3], "scope_id", 2**32)):
            if type(value) is not int:
                raise TypeError(
                    f"address: {what} must be an int, got {type(value).__name__} {value!r}"
                )
            if not 0 <= value < top:
                raise ValueError(f"address: {what} must be in 0..{top - 1}, got {value}")
    if v6:
        if host and ":" not in host and host[-1].isdigit():
            # Cheap test first: an IPv6 literal has a colon, a name rarely ends in a digit.
            try:
                socket.inet_aton(host)
            except OSError:
                pass
            else:
                raise ValueError(
                    f"address: host {host!r} is an IPv4 address and this is an IPv6 datagram "
                    f"socket (use the IPv4-mapped '::ffff:{host}')"
                )
    elif ":" in host:
        raise ValueError(
            f"address: host {host!r} is an IPv6 address and this is an IPv4 datagram socket"
        )
    if not host.isascii():
        try:
            host.encode("idna")
        except UnicodeError as exc:
            raise ValueError(f"address: host {host!r} is not a valid host name: {exc}") from None
    return address


def _check_socket(sock: object, argname: str, socktype: int) -> socket.socket:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{argname} must be a socket.socket, got {type(sock).__name__} {sock!r}")
    if sock.fileno() < 0:
        raise ValueError(f"{argname} is closed: {sock!r}")
    if sock.type != socktype:
        kind = "SOCK_STREAM" if socktype == socket.SOCK_STREAM else "SOCK_DGRAM"
        raise ValueError(f"{argname} must be a {kind} socket, got {sock!r}")
    return sock


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _unix_path(sock: socket.socket) -> tuple[str, int] | None:
    """``(path, inode)`` of a Unix socket bound to a filesystem path, else ``None``."""
    if getattr(socket, "AF_UNIX", None) != sock.family:
        return None
    name = sock.getsockname()
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not name or name[0] == "\0":
        return None
    try:
        return name, os.stat(name).st_ino
    except OSError:
        return None


def _unlink_if_ours(bound: tuple[str, int] | None) -> None:
    if bound is None:
        return
    path, ino = bound
    try:
        st = os.stat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == ino:
            os.unlink(path)
    except OSError:
        pass


def _as_bytes_like(data: object) -> memoryview:
    """Return *data* as something ``send`` and ``bytearray +=`` take, sized in bytes.

    A buffer that is not C-contiguous (``memoryview(b)[::2]``, a strided array)
    is copied, its bytes in logical order, as ``bytes(view)`` would give them:
    ``send`` and ``bytearray +=`` take only contiguous buffers.
    """
    if isinstance(data, str):
        raise TypeError("data must be a bytes-like object, got str (encode it first)")
    if isinstance(data, memoryview):
        view = data
    else:
        try:
            view = memoryview(data)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"data must be a bytes-like object (bytes, bytearray, memoryview), got "
                f"{type(data).__name__}"
            ) from None
    try:
        if view.c_contiguous:
            return view if view.format == "B" and view.ndim == 1 else view.cast("B")
        return memoryview(view.tobytes())
    except ValueError as exc:  # a released memoryview
        raise ValueError(f"data: {exc}") from None


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


class Stream:
    """A connected byte stream (TCP or Unix-domain), owned by its source.

    Made by :meth:`SocketSource.connect`, :meth:`SocketSource.stream`, or
    accepted by a :class:`Listener` (then call :meth:`start` in
    ``on_connection``).  See the module docstring for the semantics.
    """

    __slots__ = (
        "_closing",
        "_ctx",
        "_eof",
        "_eof_pending",
        "_exc",
        "_high",
        "_low",
        "_on_close",
        "_on_connect",
        "_on_data",
        "_on_drain",
        "_on_eof",
        "_rbuf",
        "_read_paused",
        "_recv_into",
        "_reg_read",
        "_reg_write",
        "_rview",
        "_send",
        "_sock",
        "_source",
        "_started",
        "_state",
        "_wbuf",
        "_write_paused",
        "_write_shut",
        "_writes_direct",
        "fd",
    )

    def __init__(
        self,
        source: SocketSource,
        sock: socket.socket,
        state: int,
        high_water: int,
        low_water: int,
    ) -> None:
        self._source = source
        self._ctx = source._ctx
        self._sock = sock
        #: The socket's file descriptor (for logs and tests; do not close it).
        self.fd = sock.fileno()
        self._recv_into = sock.recv_into
        self._send = sock.send
        self._rbuf = source._rbuf
        self._rview = source._rview
        self._state = state
        self._started = False
        self._closing = False
        self._eof = False
        self._eof_pending = False
        self._write_shut = False
        self._read_paused = False
        self._write_paused = False
        self._reg_read = False
        self._reg_write = False
        self._wbuf = bytearray()
        # The one flag write()'s fast path reads: open, nothing buffered, not
        # closing, no write_eof() yet.  _direct() recomputes it.
        self._writes_direct = state == _OPEN
        self._high = high_water
        self._low = low_water
        self._exc: BaseException | None = None
        self._on_data: DataCallback | None = None
        self._on_eof: EventCallback | None = None
        self._on_close: CloseCallback | None = None
        self._on_drain: EventCallback | None = None
        self._on_connect: EventCallback | None = None
        source._live[self] = None

    def __repr__(self) -> str:
        state = ("connecting", "open", "closed")[self._state]
        if self._closing and self._state != _CLOSED:
            state = "closing"
        return f"<Stream fd={self.fd} {state} buffered={len(self._wbuf)}>"

    # -- setup -----------------------------------------------------------------

    def start(
        self,
        on_data: DataCallback,
        *,
        on_eof: EventCallback | None = None,
        on_close: CloseCallback | None = None,
        on_drain: EventCallback | None = None,
    ) -> None:
        """Set the callbacks and start reading (for a stream a :class:`Listener` accepted).

        :param on_data: ``on_data(data: bytes)`` for every chunk received.
        :param on_eof: ``on_eof()`` when the peer shut down its write side;
            without it the stream then closes gracefully.
        :param on_close: ``on_close(exc)`` once, when the stream is closed;
            ``exc`` is ``None`` or the ``OSError`` that ended it.
        :param on_drain: ``on_drain()`` when the write buffer fell back to the
            low-water mark after :meth:`write` returned ``False``.
        """
        if self._started:
            raise RuntimeError("start() was already called for this stream")
        check_home_thread(self._ctx, "start")
        self._set_callbacks(on_data, on_eof, on_close, on_drain, None)
        if self._state != _CLOSED:
            self._update()

    def _set_callbacks(
        self,
        on_data: object,
        on_eof: object,
        on_close: object,
        on_drain: object,
        on_connect: object,
    ) -> None:
        self._on_data = _check_callback(on_data, "on_data")
        self._on_eof = _check_callback(on_eof, "on_eof", optional=True)
        self._on_close = _check_callback(on_close, "on_close", optional=True)
        self._on_drain = _check_callback(on_drain, "on_drain", optional=True)
        self._on_connect = _check_callback(on_connect, "on_connect", optional=True)
        self._started = True

    # -- introspection ---------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The socket (owned by the stream: do not close or read it yourself)."""
        return self._sock

    def fileno(self) -> int:
        """The socket's fd, or -1 once closed."""
        return self._sock.fileno()

    @property
    def sockname(self) -> Any:
        """The local address."""
        return self._sock.getsockname()

    @property
    def peername(self) -> Any:
        """The peer's address."""
        return self._sock.getpeername()

    @property
    def connected(self) -> bool:
        """True once the connection is established, until the stream closes."""
        return self._state == _OPEN

    @property
    def closed(self) -> bool:
        """True once the socket is closed (``on_close`` is then due or done)."""
        return self._state == _CLOSED

    @property
    def closing(self) -> bool:
        """True after :meth:`close` while buffered bytes are still being sent."""
        return self._closing and self._state != _CLOSED

    @property
    def exception(self) -> BaseException | None:
        """The error that closed the stream, if any."""
        return self._exc

    @property
    def at_eof(self) -> bool:
        """True once the peer shut down its write side."""
        return self._eof

    @property
    def reading(self) -> bool:
        """True while read interest is registered."""
        return self._reg_read

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by :meth:`write` and not yet taken by the kernel."""
        return len(self._wbuf)

    @property
    def writing_paused(self) -> bool:
        """True from a :meth:`write` that returned ``False`` until ``on_drain``."""
        return self._write_paused

    def get_write_limits(self) -> tuple[int, int]:
        """``(high_water, low_water)``."""
        return self._high, self._low

    def set_write_limits(self, high_water: int | None = None, low_water: int | None = None) -> None:
        """Set the write buffer's marks (default 64 KiB and 16 KiB, or high/4).

        Home thread, or hold ``ctx.acquire()``: :meth:`write` in the home
        thread reads both marks, and would otherwise see a new high mark with
        the old low one.
        """
        check_home_thread(self._ctx, "set_write_limits")
        self._high, self._low = _check_limits(high_water, low_water)

    # -- interest ------------------------------------------------------------------

    def _direct(self) -> None:
        self._writes_direct = (
            self._state == _OPEN and not self._wbuf and not self._closing and not self._eof_pending
        )

    def _update(self) -> None:
        """Register exactly the interest the state asks for (no call if unchanged)."""
        want_read = (
            self._state == _OPEN
            and self._started
            and not (self._read_paused or self._eof or self._closing)
        )
        want_write = self._state == _CONNECTING or bool(self._wbuf)
        if want_read == self._reg_read and want_write == self._reg_write:
            return
        self._ctx.set_fd_handler(
            self.fd,
            self._on_readable if want_read else None,
            self._on_writable if want_write else None,
        )
        self._reg_read = want_read
        self._reg_write = want_write

    def pause_reading(self) -> None:
        """Stop calling ``on_data`` until :meth:`resume_reading` (back-pressure)."""
        check_home_thread(self._ctx, "pause_reading")
        if not self._read_paused:
            self._read_paused = True
            if self._state != _CLOSED:
                self._update()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""
        check_home_thread(self._ctx, "resume_reading")
        if self._read_paused:
            self._read_paused = False
            if self._state != _CLOSED:
                self._update()

    # -- the hot path: readiness callbacks ---------------------------------------

    def _on_readable(self, _opaque: object) -> None:
        try:
            n = self._recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc, False)
            return
        if n:
            self._on_data(self._rview[:n].tobytes())  # type: ignore[misc]
        else:
            self._got_eof()

    def _on_writable(self, _opaque: object) -> None:
        if self._state != _OPEN:
            if self._state == _CONNECTING:
                self._connected()
            return
        buf = self._wbuf
        try:
            n = self._send(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc, False)
            return
        del buf[:n]
        if buf:
            if self._write_paused and len(buf) <= self._low:
                self._drained()
            return
        self._direct()
        self._update()
        if self._closing:
            self._finish(None, False)
            return
        if self._eof_pending and not self._write_shut:
            self._shutdown_write(False)
            if self._state == _CLOSED:
                return
        if self._write_paused:
            self._drained()

    def _drained(self) -> None:
        self._write_paused = False
        cb = self._on_drain
        if cb is not None:
            cb()

    def _got_eof(self) -> None:
        self._eof = True
        self._update()
        cb = self._on_eof
        if cb is None:
            self.close()
            return
        try:
            cb()
        except BaseException:
            # The stream carries on: what follows the callback still happens,
            # with on_close from a BH, so the callback's error leaves alone.
            if self._state == _OPEN and self._write_shut:
                self._finish(None, True)
            raise
        if self._state == _OPEN and self._write_shut:
            self._finish(None, False)  # both directions are finished

    def _connected(self) -> None:
        sock = self._sock
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._finish(OSError(err, os.strerror(err)), False)
            return
        # Writable with no error does not prove a connection: a socket that
        # never started connecting is writable at once too.  Without a peer
        # (ENOTCONN) the connect failed.
        try:
            sock.getpeername()
        except OSError as exc:
            code = exc.errno or errno.ENOTCONN
            self._finish(
                OSError(code, f"{os.strerror(code)} (the connect did not complete)"), False
            )
            return
        self._state = _OPEN
        self._direct()
        _set_nodelay(sock)
        self._update()
        cb = self._on_connect
        if cb is not None and not self._closing:
            try:
                cb()
            except BaseException:
                # As in _got_eof: the follow-up still happens, on_close from a BH.
                self._after_connect(True)
                raise
        self._after_connect(False)

    def _after_connect(self, deferred: bool) -> None:
        """Carry out a close() or write_eof() that came while connecting."""
        if self._state == _OPEN and not self._wbuf:
            if self._closing:
                self._finish(None, deferred)
            elif self._eof_pending and not self._write_shut:
                self._shutdown_write(deferred)

    def _shutdown_write(self, deferred: bool) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._finish(exc, deferred)
            return
        self._write_shut = True
        if self._eof:
            self._finish(None, deferred)

    # -- writing -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Send *data* after everything written before; never blocks.

        Returns ``False`` once the write buffer holds ``high_water`` bytes or
        more: stop writing until ``on_drain()``.  (More writes are still
        accepted and buffered; the mark is advice, not a limit.)

        :raises StreamClosed: the stream is closed, closing, or its write side
            was shut down by :meth:`write_eof`.
        :raises TypeError: *data* is not bytes-like.
        :raises ValueError: *data* is a released memoryview.

        A buffer that is not contiguous (``memoryview(b)[::2]``) is accepted
        and copied, its bytes in the order ``bytes(data)`` gives them.

        From a thread other than the home thread (without ``ctx.acquire()``)
        it raises ``RuntimeError`` before sending anything, even when the
        kernel would take the bytes at once.
        """
        check_home_thread(self._ctx, "write")
        if self._writes_direct:
            # The hot path: nothing queued, so try the kernel first.
            tp = type(data)
            if tp is bytes or tp is bytearray:
                try:
                    n = self._send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError as exc:
                    self._finish(exc, True)
                    return False
                if n == len(data):
                    return True
                return self._buffer(memoryview(data)[n:])
        return self._write_slow(data)

    def _write_slow(self, data: object) -> bool:
        if self._state == _CLOSED or self._closing or self._eof_pending:
            raise self._closed_error("write")
        view: memoryview = _as_bytes_like(data)
        if not self._writes_direct:
            return self._buffer(view)
        size = len(view)
        if not size:
            return True
        try:
            n = self._send(view)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._finish(exc, True)
            return False
        if n == size:
            return True
        return self._buffer(view[n:])

    def _buffer(self, data: Any) -> bool:
        wbuf = self._wbuf
        wbuf += data
        if self._writes_direct:
            self._writes_direct = False
            self._update()
        if len(wbuf) >= self._high:
            self._write_paused = True
            return False
        return True

    def writelines(self, chunks: Any) -> bool:
        """:meth:`write` each chunk in order; return the last result.

        Every chunk is checked before any is written, so a bad one
        (``TypeError``/``ValueError`` naming ``chunks[i]``) writes nothing.
        A send error met on the way ends the stream as in :meth:`write`
        (``on_close(exc)`` follows); the chunks after it are dropped with it
        and ``False`` is returned.
        """
        check_home_thread(self._ctx, "writelines")
        try:
            items = list(chunks)
        except TypeError:
            raise TypeError(
                "chunks must be an iterable of bytes-like objects, got "
                f"{type(chunks).__name__} {chunks!r}"
            ) from None
        for i, chunk in enumerate(items):
            tp = type(chunk)
            if tp is not bytes and tp is not bytearray:
                try:
                    items[i] = _as_bytes_like(chunk)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"chunks[{i}]: {exc}") from None
        ok = True
        for chunk in items:
            ok = self.write(chunk)
            if self._state == _CLOSED:
                return False
        return ok

    def write_eof(self) -> None:
        """Half-close: once the buffer drains, shut down the write side; keep reading.

        Idempotent.  Further :meth:`write` calls raise :class:`StreamClosed`.
        """
        check_home_thread(self._ctx, "write_eof")
        if self._state == _CLOSED or self._closing:
            raise self._closed_error("write_eof")
        if self._eof_pending:
            return
        self._eof_pending = True
        self._writes_direct = False
        if self._state == _OPEN and not self._wbuf:
            self._shutdown_write(True)

    def _closed_error(self, what: str) -> StreamClosed:
        if self._state == _CLOSED:
            why = f"it closed ({self._exc!r})" if self._exc is not None else "it is closed"
        elif self._closing:
            why = "close() was called"
        else:
            why = "write_eof() was called"
        return StreamClosed(f"{what}() on {self!r}: {why}")

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, send what is buffered, then close; ``on_close(None)`` follows.

        On a stream still connecting, the connect goes on only to send what
        was buffered; ``on_connect()`` does not run any more.  Idempotent.
        """
        check_home_thread(self._ctx, "close")
        if self._state == _CLOSED or self._closing:
            return
        self._closing = True
        self._writes_direct = False
        if self._state == _OPEN and not self._wbuf:
            self._finish(None, True)
        else:
            self._update()

    def abort(self) -> None:
        """Close now, discarding buffered bytes; ``on_close(None)`` follows.  Idempotent."""
        check_home_thread(self._ctx, "abort")
        if self._state != _CLOSED:
            self._finish(None, True)

    def _finish(self, exc: BaseException | None, deferred: bool) -> None:
        """Close the socket and report ``on_close(exc)`` once.

        *deferred*: report from a BH (we are inside a call the user made)
        rather than now (we are in our own readiness callback).
        """
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._writes_direct = False
        self._exc = exc
        self._wbuf.clear()
        self._source._live.pop(self, None)
        ctx = self._ctx
        try:
            if (self._reg_read or self._reg_write) and not ctx.closed:
                self._reg_read = self._reg_write = False
                ctx.set_fd_handler(self.fd, None)
        finally:
            self._sock.close()
        if self._on_close is not None and not ctx.closed:
            if deferred:
                ctx.bh_schedule_oneshot(self._report_close)
            else:
                self._report_close(None)

    def _report_close(self, _opaque: object) -> None:
        cb, self._on_close = self._on_close, None
        if cb is not None:
            cb(self._exc)

    def _discard(self) -> None:
        """Close without callbacks (the source is closing with its context)."""
        self._on_close = None
        self._finish(None, False)


# ---------------------------------------------------------------------------
# Listeners
# ---------------------------------------------------------------------------


class Listener:
    """A listening stream socket that accepts connections as they arrive.

    Made by :meth:`SocketSource.listen`; ``on_connection(stream)`` runs for
    each accepted :class:`Stream`, which the callback starts with
    :meth:`Stream.start` (or closes).
    """

    __slots__ = (
        "_accept",
        "_batch",
        "_bound",
        "_ctx",
        "_high",
        "_low",
        "_on_connection",
        "_registered",
        "_retry",
        "_sock",
        "_source",
        "accepted",
        "fd",
    )

    def __init__(
        self,
        source: SocketSource,
        sock: socket.socket,
        on_connection: ConnectionCallback,
        accept_batch: int,
        high_water: int,
        low_water: int,
        bound: tuple[str, int] | None,
    ) -> None:
        self._source = source
        self._ctx = source._ctx
        self._sock = sock
        self.fd = sock.fileno()
        self._accept = sock.accept
        self._on_connection = on_connection
        self._batch = accept_batch
        self._high = high_water
        self._low = low_water
        self._bound = bound
        self._retry: Any = None
        #: Connections accepted so far.
        self.accepted = 0
        self._ctx.set_fd_handler(self.fd, self._on_readable)
        self._registered = True
        source._live[self] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.address!r}"
        return f"<Listener {state} accepted={self.accepted}>"

    @property
    def address(self) -> Any:
        """The bound address (``(host, port)`` with the real port, or the path)."""
        return self._sock.getsockname()

    @property
    def socket(self) -> socket.socket:
        """The listening socket (owned by the listener)."""
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def _on_readable(self, _opaque: object) -> None:
        accept = self._accept
        source = self._source
        for _ in range(self._batch):
            try:
                conn, _addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._pause_accepting()
                raise
            conn.setblocking(False)
            _set_nodelay(conn)
            self.accepted += 1
            stream = Stream(source, conn, _OPEN, self._high, self._low)
            try:
                self._on_connection(stream)
            except BaseException:
                stream._discard()
                raise
            if self._sock.fileno() < 0:
                return  # on_connection closed the listener

    def _pause_accepting(self) -> None:
        if self._registered:
            self._ctx.set_fd_handler(self.fd, None)
            self._registered = False
        if self._retry is None:
            self._retry = self._ctx.timer_new_ms(Clock.REALTIME, self._resume_accepting)
        self._retry.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + ACCEPT_RETRY_MS)

    def _resume_accepting(self, _opaque: object) -> None:
        if not self.closed and not self._registered:
            self._ctx.set_fd_handler(self.fd, self._on_readable)
            self._registered = True

    def close(self) -> None:
        """Stop accepting and close the socket (streams already accepted stay).

        A Unix-domain socket file the listener created is removed.  Idempotent.
        """
        check_home_thread(self._ctx, "close")
        if self.closed:
            return
        self._source._live.pop(self, None)
        ctx = self._ctx
        try:
            if self._retry is not None:
                self._retry.delete()
            if self._registered and not ctx.closed:
                self._registered = False
                ctx.set_fd_handler(self.fd, None)
        finally:
            self._sock.close()
            _unlink_if_ours(self._bound)

    _discard = close


# ---------------------------------------------------------------------------
# Datagrams
# ---------------------------------------------------------------------------


class Datagram:
    """A datagram socket (UDP, or Unix-domain ``SOCK_DGRAM``).

    Made by :meth:`SocketSource.datagram`.  ``on_datagram(data, address)``
    runs for each datagram received (up to ``batch`` per readiness report);
    :meth:`send` queues in order when the kernel cannot take a datagram now.
    """

    __slots__ = (
        "_batch",
        "_bound",
        "_connected",
        "_ctx",
        "_family",
        "_on_datagram",
        "_on_error",
        "_peek",
        "_queue",
        "_rbuf",
        "_recvfrom_into",
        "_reg_write",
        "_rview",
        "_sock",
        "_source",
        "_unix",
        "fd",
        "received",
        "sent",
    )

    def __init__(
        self,
        source: SocketSource,
        sock: socket.socket,
        on_datagram: DatagramCallback,
        on_error: ErrorCallback | None,
        batch: int,
        bound: tuple[str, int] | None,
    ) -> None:
        self._source = source
        self._ctx = source._ctx
        self._sock = sock
        self.fd = sock.fileno()
        self._recvfrom_into = sock.recvfrom_into
        self._rbuf = source._rbuf
        self._rview = source._rview
        self._peek = source._peek
        # A Unix-domain datagram can outgrow the shared buffer (its bound is
        # the sender's SO_SNDBUF); a UDP payload (65,527 bytes at most) cannot.
        self._unix = sock.family not in _FAMILY_NAMES
        self._on_datagram = on_datagram
        self._on_error = on_error
        self._batch = batch
        self._bound = bound
        self._family = sock.family
        try:
            sock.getpeername()
        except OSError:
            self._connected = False
        else:
            self._connected = True
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._reg_write = False
        #: Datagrams received and sent so far.
        self.received = 0
        self.sent = 0
        self._ctx.set_fd_handler(self.fd, self._on_readable)
        source._live[self] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.address!r}"
        return f"<Datagram {state} queued={len(self._queue)}>"

    @property
    def address(self) -> Any:
        """The local address."""
        return self._sock.getsockname()

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    @property
    def queued(self) -> int:
        """Datagrams waiting for the kernel to take them."""
        return len(self._queue)

    def _error(self, exc: OSError) -> None:
        cb = self._on_error
        if cb is None:
            raise exc
        cb(exc)

    def _on_readable(self, _opaque: object) -> None:
        if self._unix:
            self._read_unix()
            return
        recvfrom_into = self._recvfrom_into
        buf = self._rbuf
        view = self._rview
        for _ in range(self._batch):
            try:
                n, addr = recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._error(exc)
                return
            self.received += 1
            self._on_datagram(bytes(view[:n]), addr)
            if self.closed:
                return

    def _read_unix(self) -> None:
        """Receive Unix-domain datagrams whole, however long.

        The next datagram's length is peeked first (``MSG_PEEK | MSG_TRUNC``:
        one more system call per datagram): one that fits is received into
        the shared buffer, a longer one into a buffer of its own size.  A
        kernel that does not say the length answers 0 or 1; then the receive
        checks ``MSG_TRUNC`` itself, and a datagram the kernel cut to the
        shared buffer is reported to ``on_error`` as ``EMSGSIZE``, never
        delivered cut.
        """
        sock = self._sock
        recvfrom_into = self._recvfrom_into
        peek = self._peek
        buf = self._rbuf
        view = self._rview
        room = len(buf)
        for _ in range(self._batch):
            flags = 0
            try:
                n = sock.recv_into(peek, 1, _PEEK_LENGTH)
                if n > room:
                    data, _anc, flags, addr = sock.recvmsg(n)
                else:
                    if n > 1:  # the kernel said the length: it fits
                        n, addr = recvfrom_into(buf)
                    else:  # 0 or 1 byte, or a kernel that does not say
                        n, _anc, flags, addr = sock.recvmsg_into((buf,))
                    data = view[:n].tobytes()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._error(exc)
                return
            if flags & _MSG_TRUNC:
                self._error(
                    OSError(
                        errno.EMSGSIZE,
                        f"a Unix-domain datagram longer than the {max(n, room)}-byte receive "
                        "buffer was cut by the kernel and dropped",
                    )
                )
            else:
                self.received += 1
                self._on_datagram(data, addr)
            if self.closed:
                return

    def _on_writable(self, _opaque: object) -> None:
        queue = self._queue
        sock = self._sock
        while queue:
            data, addr = queue[0]
            try:
                if addr is None:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                queue.popleft()  # undeliverable: report it, go on with the next
                self._error(exc)
                if self.closed:
                    return
                continue
            except Exception:
                # Not the kernel's refusal (send() checks addresses, so this
                # is a bug): drop the datagram, so that it is reported once
                # and cannot hold up the queue; the rest leaves at the next
                # writable report (write interest stays registered).
                queue.popleft()
                raise
            queue.popleft()
            self.sent += 1
        if self._reg_write:
            self._ctx.set_fd_handler(self.fd, self._on_readable)
            self._reg_write = False

    def send(self, data: bytes | bytearray | memoryview, address: Any = None) -> None:
        """Send one datagram, to *address* or (``None``) the connected peer.

        Queued, in order, when the kernel cannot take it now.  An error the
        kernel reports at once (``EMSGSIZE``, ``ECONNREFUSED`` on a connected
        socket) is raised; one met while flushing the queue goes to
        ``on_error``, and the queue goes on with the next datagram.

        *address* must suit the socket: a ``(host, port)`` tuple (IPv6 also
        ``(host, port, flowinfo, scope_id)``) with a host of the socket's
        family, or a str or path on a Unix-domain socket; ``None`` only on a
        connected socket.  Otherwise ``TypeError`` or ``ValueError`` naming
        *address* is raised and nothing is sent or queued.  From a thread
        other than the home thread (without ``ctx.acquire()``) it raises
        ``RuntimeError`` and sends nothing.
        """
        check_home_thread(self._ctx, "send")
        if self.closed:
            raise StreamClosed(f"send() on {self!r}")
        if not isinstance(data, bytes):
            data = bytes(_as_bytes_like(data))
        address = _check_destination(self._family, address, self._connected)
        queue = self._queue
        if not queue:
            try:
                if address is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                pass
            else:
                self.sent += 1
                return
        queue.append((data, address))
        if not self._reg_write:
            self._ctx.set_fd_handler(self.fd, self._on_readable, self._on_writable)
            self._reg_write = True

    def close(self) -> None:
        """Close the socket, dropping queued datagrams; removes a socket file it bound."""
        check_home_thread(self._ctx, "close")
        if self.closed:
            return
        self._source._live.pop(self, None)
        self._queue.clear()
        try:
            if not self._ctx.closed:
                self._ctx.set_fd_handler(self.fd, None)
        finally:
            self._sock.close()
            _unlink_if_ours(self._bound)

    _discard = close


# ---------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------


def _discard(obj: Stream | Listener | Datagram) -> None:
    obj._discard()


def _new_socket(family: int, socktype: int) -> socket.socket:
    sock = socket.socket(family, socktype)
    sock.setblocking(False)
    return sock


class SocketSource:
    """``ctx.sources.socket``: make listeners, streams and datagram sockets.

    Everything made here belongs to the context: closed (without callbacks)
    when the context closes.  The source owns the sockets handed to it.
    Methods belong to the home thread (or a thread holding ``ctx.acquire()``);
    from another, they raise ``RuntimeError`` naming the method, after
    checking their arguments and before they make a socket or change the one
    handed to them.
    """

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._rbuf = bytearray(RECV_BUFFER_SIZE)
        self._rview = memoryview(self._rbuf)
        self._peek = bytearray(1)
        self._live: dict[Any, None] = {}

    def __repr__(self) -> str:
        return f"<SocketSource open={len(self._live)}>"

    def _check_open(self) -> None:
        if self._ctx.closed:
            raise RuntimeError("this AioContext is closed")

    # -- listeners -----------------------------------------------------------------

    def listen(
        self,
        address: Any,
        on_connection: ConnectionCallback,
        *,
        backlog: int = DEFAULT_BACKLOG,
        accept_batch: int = DEFAULT_ACCEPT_BATCH,
        reuse_address: bool = True,
        high_water: int | None = None,
        low_water: int | None = None,
    ) -> Listener:
        """Listen on *address* (or adopt a bound ``socket.socket``); return the :class:`Listener`.

        :param on_connection: ``on_connection(stream)`` per accepted connection.
        :param backlog: the kernel's accept queue length (``listen(2)``).
        :param accept_batch: most connections accepted per readiness report,
            so a flood of connections cannot starve other handlers.
        :param reuse_address: set ``SO_REUSEADDR`` (TCP).
        :param high_water, low_water: write limits of the accepted streams.
        """
        self._check_open()
        _check_callback(on_connection, "on_connection")
        _check_count(backlog, "backlog", 0)
        _check_count(accept_batch, "accept_batch", 1)
        _check_bool(reuse_address, "reuse_address")
        high, low = _check_limits(high_water, low_water)
        if isinstance(address, socket.socket):
            sock = _check_socket(address, "address", socket.SOCK_STREAM)
            check_home_thread(self._ctx, "listen")
            sock.setblocking(False)
            sock.listen(backlog)
            bound = None
        else:
            family, sockaddr = _resolve(
                address, socket.SOCK_STREAM, passive=True, argname="address"
            )
            check_home_thread(self._ctx, "listen")
            sock = _new_socket(family, socket.SOCK_STREAM)
            try:
                if reuse_address and family != getattr(socket, "AF_UNIX", None):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                bound = _unix_path(sock)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
        try:
            return Listener(self, sock, on_connection, accept_batch, high, low, bound)
        except BaseException:
            sock.close()
            raise

    # -- streams -------------------------------------------------------------------

    def connect(
        self,
        address: Any,
        on_data: DataCallback,
        *,
        on_connect: EventCallback | None = None,
        on_eof: EventCallback | None = None,
        on_close: CloseCallback | None = None,
        on_drain: EventCallback | None = None,
        high_water: int | None = None,
        low_water: int | None = None,
    ) -> Stream:
        """Connect to *address* without blocking; return the :class:`Stream` at once.

        Writes made before the connection is established are buffered.
        ``on_connect()`` runs when it is; a failure (``ConnectionRefusedError``,
        ``FileNotFoundError`` for a missing Unix socket, ``BlockingIOError``
        (``EAGAIN``) for a Unix listener whose backlog is full) is reported as
        ``on_close(exc)``, with no ``on_connect()`` first.  The other
        callbacks are those of :meth:`Stream.start`.
        """
        self._check_open()
        high, low = _check_limits(high_water, low_water)
        for cb, name in (
            (on_connect, "on_connect"),
            (on_eof, "on_eof"),
            (on_close, "on_close"),
            (on_drain, "on_drain"),
        ):
            _check_callback(cb, name, optional=True)
        _check_callback(on_data, "on_data")
        family, sockaddr = _resolve(address, socket.SOCK_STREAM, passive=False, argname="address")
        check_home_thread(self._ctx, "connect")
        sock = _new_socket(family, socket.SOCK_STREAM)
        try:
            code = sock.connect_ex(sockaddr)
            stream = Stream(self, sock, _CONNECTING, high, low)
        except BaseException:
            sock.close()
            raise
        stream._set_callbacks(on_data, on_eof, on_close, on_drain, on_connect)
        if family == getattr(socket, "AF_UNIX", None) and code in _UNIX_CONNECT_FULL:
            # Not connecting at all: the listener's accept queue is full.
            why = f"{os.strerror(code)} (the listener's backlog is full; not connected)"
            stream._finish(OSError(code, why), True)
        elif code in _CONNECT_PENDING:
            try:
                stream._update()  # write interest: the writable report finishes the connect
            except BaseException:
                stream._discard()
                raise
        else:
            stream._finish(OSError(code, os.strerror(code)), True)
        return stream

    def stream(
        self,
        sock: socket.socket,
        on_data: DataCallback,
        *,
        on_eof: EventCallback | None = None,
        on_close: CloseCallback | None = None,
        on_drain: EventCallback | None = None,
        high_water: int | None = None,
        low_water: int | None = None,
    ) -> Stream:
        """Adopt a connected stream socket (``socketpair()`` end, accepted socket, ...).

        The stream owns *sock* from now on and makes it non-blocking.
        """
        self._check_open()
        _check_socket(sock, "sock", socket.SOCK_STREAM)
        high, low = _check_limits(high_water, low_water)
        for cb, name in ((on_eof, "on_eof"), (on_close, "on_close"), (on_drain, "on_drain")):
            _check_callback(cb, name, optional=True)
        _check_callback(on_data, "on_data")
        check_home_thread(self._ctx, "stream")
        sock.setblocking(False)
        stream = Stream(self, sock, _OPEN, high, low)
        stream._set_callbacks(on_data, on_eof, on_close, on_drain, None)
        try:
            stream._update()
        except BaseException:
            stream._discard()
            raise
        return stream

    # -- datagrams -----------------------------------------------------------------

    def datagram(
        self,
        on_datagram: DatagramCallback,
        *,
        local_address: Any = None,
        remote_address: Any = None,
        on_error: ErrorCallback | None = None,
        batch: int = DEFAULT_DATAGRAM_BATCH,
        reuse_address: bool = False,
    ) -> Datagram:
        """A datagram socket bound to *local_address* and/or connected to *remote_address*.

        At least one address is needed (it decides the family: IPv4, IPv6
        or Unix).  ``on_datagram(data, address)`` per datagram received;
        ``on_error(exc)`` for errors the kernel reports asynchronously (an
        ICMP port unreachable on a connected UDP socket); without
        ``on_error`` they go to the context's exception handler.
        """
        self._check_open()
        _check_callback(on_datagram, "on_datagram")
        _check_callback(on_error, "on_error", optional=True)
        _check_count(batch, "batch", 1)
        _check_bool(reuse_address, "reuse_address")
        if local_address is None and remote_address is None:
            raise ValueError("datagram() needs local_address, remote_address, or both")
        local = remote = None
        if local_address is not None:
            local = _resolve(
                local_address, socket.SOCK_DGRAM, passive=True, argname="local_address"
            )
        if remote_address is not None:
            remote = _resolve(
                remote_address, socket.SOCK_DGRAM, passive=False, argname="remote_address"
            )
        if local is not None and remote is not None and local[0] != remote[0]:
            raise ValueError(
                f"local_address {local_address!r} and remote_address {remote_address!r} "
                "are of different address families"
            )
        family = (local or remote)[0]  # type: ignore[index]
        check_home_thread(self._ctx, "datagram")
        sock = _new_socket(family, socket.SOCK_DGRAM)
        try:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bound = None
            if local is not None:
                sock.bind(local[1])
                bound = _unix_path(sock)
            if remote is not None:
                sock.connect(remote[1])
            return Datagram(self, sock, on_datagram, on_error, batch, bound)
        except BaseException:
            sock.close()
            raise

    # -- lifecycle -------------------------------------------------------------------

    @property
    def open_objects(self) -> list[Any]:
        """Listeners, streams and datagram sockets still open, oldest first."""
        return list(self._live)

    def close(self) -> None:
        """Close every socket of this source, without callbacks (the context is closing).

        Newest first; every socket is closed even if closing one raised (one
        that raised has still closed its socket), and the first error is
        raised at the end (:func:`aiocore.close_newest_first`).
        """
        try:
            close_newest_first(self._live, _discard)
        finally:
            self._live.clear()


def _factory(ctx: Any) -> SocketSource:
    return SocketSource(ctx)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("socket", _factory)
