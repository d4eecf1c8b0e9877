"""Regression tests for the ``socket`` source's streams, on every backend.

Each test fails on the defect it names: ``on_connect()`` for a connection
that does not exist, ``on_connect()`` after ``close()``, or a raising
``on_eof()``/``on_connect()`` that made the stream skip the work that follows
it (closing once both directions are done, a half-close asked for while
connecting).
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins import socket_source
from aiocore_plugins.socket_source import Stream

from aiocore import AioContext

from ._helpers import poll_for, run_until
from .test_socket_streams import LOOPBACK, Record


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix-domain sockets here")
def test_unix_connect_to_full_backlog_fails_without_on_connect(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    """A Unix listener whose accept queue is full: connect() gives EAGAIN.

    The socket is then not connecting at all; the stream must report the
    failure as ``on_close(exc)`` with no ``on_connect()`` first (it used to
    call ``on_connect()`` and then ``on_close(EINVAL)``).
    """
    path = str(tmp_path / "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(path)
        srv.listen(0)  # never accepts: Linux queues one connection, then EAGAIN
        records = [Record() for _ in range(3)]
        streams = [
            ctx.sources.socket.connect(
                path, r.on_data, on_connect=r.on_connect, on_close=r.on_close
            )
            for r in records
        ]
        run_until(ctx, lambda: all(r.connects or r.closes for r in records))
        poll_for(ctx, 0.02)
        failed = [(s, r) for s, r in zip(streams, records, strict=True) if r.closes]
        assert failed, "the backlog of 0 held every connection"
        for s, r in failed:
            assert r.connects == 0, "on_connect() ran for a connect that failed"
            assert len(r.closes) == 1
            exc = r.closes[0]
            assert isinstance(exc, OSError)
            if sys.platform == "linux":
                assert exc.errno == errno.EAGAIN
            assert s.closed and not s.connected
            with pytest.raises(socket_source.StreamClosed):
                s.write(b"lost")
        for s, r in zip(streams, records, strict=True):
            if r.connects:
                assert r.closes == [] and s.connected
                assert s.peername == path
                s.abort()
        poll_for(ctx, 0.01)
    finally:
        srv.close()


class _NeverConnects(socket.socket):
    """A socket whose ``connect_ex`` claims EINPROGRESS but never connects."""

    def connect_ex(self, address: Any) -> int:
        return errno.EINPROGRESS


def test_writable_socket_without_peer_is_a_failed_connect(
    no_fd_leak: None, ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writable with SO_ERROR 0 but no peer (ENOTCONN) is not a connection."""

    def new_socket(family: int, socktype: int) -> socket.socket:
        sock = _NeverConnects(family, socktype)
        sock.setblocking(False)
        return sock

    with socket.socket() as lst:
        lst.bind(LOOPBACK)
        lst.listen()
        monkeypatch.setattr(socket_source, "_new_socket", new_socket)
        rec = Record()
        s = ctx.sources.socket.connect(
            lst.getsockname(), rec.on_data, on_connect=rec.on_connect, on_close=rec.on_close
        )
        run_until(ctx, lambda: bool(rec.closes or rec.connects))
        poll_for(ctx, 0.02)
        assert rec.connects == 0
        assert len(rec.closes) == 1
        exc = rec.closes[0]
        assert isinstance(exc, OSError) and exc.errno == errno.ENOTCONN
        assert s.closed


@pytest.mark.parametrize("buffered", [b"", b"sent after connecting"])
def test_close_while_connecting_does_not_run_on_connect(
    no_fd_leak: None, ctx: AioContext, buffered: bytes
) -> None:
    """close() before the connect completes: no on_connect(), one on_close(None).

    What was written before close() is still sent (close() is graceful).
    """
    accepted: list[Stream] = []
    got = Record()

    def on_connection(stream: Stream) -> None:
        stream.start(got.on_data, on_close=got.on_close)
        accepted.append(stream)

    srv = ctx.sources.socket.listen(LOOPBACK, on_connection)
    rec = Record()
    s = ctx.sources.socket.connect(
        srv.address, rec.on_data, on_connect=rec.on_connect, on_close=rec.on_close
    )
    assert not s.connected
    if buffered:
        s.write(buffered)
    s.close()
    assert s.closing
    run_until(ctx, lambda: bool(rec.closes) and bool(got.closes))
    poll_for(ctx, 0.02)
    assert rec.connects == 0, "on_connect() ran after close()"
    assert rec.closes == [None]
    assert bytes(got.data) == buffered
    assert got.closes == [None]
    srv.close()


class _Boom(Exception):
    pass


def test_raising_on_eof_still_closes_a_stream_whose_both_directions_are_done(
    no_fd_leak: None, ctx: AioContext
) -> None:
    """write_eof(), then the peer's EOF: the stream closes itself even though
    on_eof() raised (it used to stay open, unregistered, until ctx.close())."""
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    a, b = socket.socketpair()
    b.settimeout(5)
    rec = Record()

    def on_eof() -> None:
        rec.on_eof()
        raise _Boom("bug in on_eof")

    try:
        s = ctx.sources.socket.stream(a, rec.on_data, on_eof=on_eof, on_close=rec.on_close)
        s.write_eof()
        assert b.recv(10) == b""  # our write side is shut
        b.shutdown(socket.SHUT_WR)
        run_until(ctx, lambda: bool(rec.closes), timeout=5)
        poll_for(ctx, 0.02)
        assert rec.eofs == 1
        assert [type(e) for e in errors] == [_Boom]  # reported once
        assert rec.closes == [None]
        assert s.closed and s.fd not in ctx.handler_fds()
        assert socket_source.Stream not in {type(o) for o in ctx.sources.socket.open_objects}
    finally:
        b.close()


@pytest.mark.parametrize("buffered", [b"", b"written before connecting"])
def test_raising_on_connect_still_carries_out_a_write_eof_made_while_connecting(
    no_fd_leak: None, ctx: AioContext, buffered: bytes
) -> None:
    """write_eof() before the connect completes, and on_connect() raises: the
    write side is still shut once connected, so the peer reads end of file
    (with nothing buffered it was never shut: the peer waited forever)."""
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    accepted: list[Stream] = []
    got = Record()

    def on_connection(stream: Stream) -> None:
        def on_eof() -> None:
            got.on_eof()
            stream.close()

        stream.start(got.on_data, on_eof=on_eof, on_close=got.on_close)
        accepted.append(stream)

    srv = ctx.sources.socket.listen(LOOPBACK, on_connection)
    rec = Record()

    def on_connect() -> None:
        rec.on_connect()
        raise _Boom("bug in on_connect")

    s = ctx.sources.socket.connect(
        srv.address, rec.on_data, on_connect=on_connect, on_close=rec.on_close
    )
    assert not s.connected
    if buffered:
        s.write(buffered)
    s.write_eof()
    run_until(ctx, lambda: got.eofs == 1 and bool(rec.closes), timeout=5)
    poll_for(ctx, 0.02)
    assert rec.connects == 1
    assert [type(e) for e in errors] == [_Boom]  # reported once
    assert bytes(got.data) == buffered
    assert got.eofs == 1 and got.closes == [None]
    assert rec.closes == [None]  # the server closed after our EOF; so did we
    assert s.closed
    srv.close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix-domain sockets here")
@pytest.mark.parametrize("how", ["reading paused", "closing"])
def test_write_only_stream_hears_a_peer_hang_up(
    no_fd_leak: None, ctx: AioContext, how: str
) -> None:
    """A stream with only write interest (reading paused, or close() waiting
    for the buffer to drain) whose Unix-domain peer does shutdown(SHUT_RDWR):
    the fd reports HUP without OUT.  HUP used to run only io_read, which such
    a stream does not register: the stream never closed and the loop spun.
    The core now hands that HUP to io_write; the send fails with EPIPE and
    the stream reports it once through on_close."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        rec = Record()
        s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
        if how == "reading paused":
            s.pause_reading()
        for _ in range(100):  # until the kernel's buffers are full
            if not s.write(b"x" * 65536):
                break
        assert s.write_buffer_size > 0
        poll_for(ctx, 0.02)
        b.shutdown(socket.SHUT_RDWR)  # our unread bytes stay in b: no POLLOUT
        run_until(ctx, lambda: bool(rec.closes), timeout=5)
        poll_for(ctx, 0.02)
        assert len(rec.closes) == 1
        assert isinstance(rec.closes[0], BrokenPipeError)
        assert s.closed and s.fd not in ctx.handler_fds()
        assert s.write_buffer_size == 0
    finally:
        b.close()
