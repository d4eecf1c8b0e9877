"""The ``socket`` source's streams and listeners, on every backend.

Each test would fail if its property broke: byte-exact content checks catch a
lost or reordered write, call counts catch a doubled ``on_close``, the
``no_fd_leak`` fixture catches a socket left open, and every loop is bounded
by :func:`run_until`.
"""

from __future__ import annotations

import array
import os
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins.socket_source import Listener, SocketSource, Stream, StreamClosed

from aiocore import EVENT_OUT, AioContext

from ._helpers import ipv6_loopback_reason, poll_for, run_until

LOOPBACK = ("127.0.0.1", 0)


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Record:
    """Everything one stream's callbacks saw."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks = 0
        self.eofs = 0
        self.closes: list[BaseException | None] = []
        self.drains = 0
        self.connects = 0

    def on_data(self, data: bytes) -> None:
        assert type(data) is bytes
        self.data += data
        self.chunks += 1

    def on_eof(self) -> None:
        self.eofs += 1

    def on_close(self, exc: BaseException | None) -> None:
        self.closes.append(exc)

    def on_drain(self) -> None:
        self.drains += 1

    def on_connect(self) -> None:
        self.connects += 1


def echo_listener(
    source: SocketSource, address: Any = LOOPBACK, **kw: Any
) -> tuple[Listener, list[Stream], list[Record]]:
    """An echo server with back-pressure: pause reading while writes are paused."""
    streams: list[Stream] = []
    records: list[Record] = []

    def on_connection(stream: Stream) -> None:
        rec = Record()

        def on_data(data: bytes) -> None:
            rec.on_data(data)
            if not stream.write(data):
                stream.pause_reading()

        def on_drain() -> None:
            rec.on_drain()
            stream.resume_reading()

        stream.start(on_data, on_close=rec.on_close, on_drain=on_drain)
        streams.append(stream)
        records.append(rec)

    return source.listen(address, on_connection, **kw), streams, records


def node_mask(ctx: AioContext, fd: int) -> int:
    node = ctx._table.nodes.get(fd)
    return 0 if node is None else node.mask


# -- the echo server ----------------------------------------------------------------


def test_echo_100_clients_10_mb_byte_exact(no_fd_leak: None, ctx: AioContext) -> None:
    """100 concurrent clients, 100 KiB each (10 MiB in total), each echoed byte-exact."""
    source = ctx.sources.socket
    srv, _streams, server_records = echo_listener(source, backlog=128)
    n_clients, size = 100, 100 * 1024
    clients: list[Stream] = []
    records: list[Record] = []
    for i in range(n_clients):
        rec = Record()
        data = payload(i, size)

        def on_data(chunk: bytes, rec: Record = rec, data: bytes = data) -> None:
            rec.on_data(chunk)
            if len(rec.data) >= len(data):
                clients[records.index(rec)].close()

        stream = source.connect(
            srv.address,
            on_data,
            on_connect=rec.on_connect,
            on_close=rec.on_close,
        )
        clients.append(stream)
        records.append(rec)
        # Half the clients write before the connection is established (buffered).
        if i % 2 == 0:
            stream.write(data)
        else:
            stream.write(data[:1000])
            stream.write(memoryview(data)[1000:])
    run_until(ctx, lambda: all(r.closes for r in records), timeout=60, what="all echoes")
    for i, rec in enumerate(records):
        assert rec.connects == 1
        assert bytes(rec.data) == payload(i, size), f"client {i}: echo differs"
        assert rec.closes == [None]
    # The server saw every client finish (end of file -> graceful close).
    run_until(
        ctx, lambda: len(server_records) == n_clients and all(r.closes for r in server_records)
    )
    assert sum(len(r.data) for r in server_records) == n_clients * size
    assert all(r.closes == [None] for r in server_records)
    assert srv.accepted == n_clients
    assert source.open_objects == [srv]
    srv.close()
    assert ctx.handler_fds() == []


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "unix"])
def test_echo_on_each_address_family(
    no_fd_leak: None, ctx: AioContext, family: str, tmp_path: Path
) -> None:
    address: Any
    if family == "ipv6":
        reason = ipv6_loopback_reason()
        if reason is not None:
            pytest.skip(reason)
        address = ("::1", 0)
    elif family == "unix":
        address = str(tmp_path / "echo.sock")
    else:
        address = LOOPBACK
    source = ctx.sources.socket
    srv, _, _ = echo_listener(source, address)
    if family == "unix":
        assert srv.address == address
    elif family == "ipv6":
        assert srv.address[0] == "::1"
    rec = Record()
    cli = source.connect(srv.address, rec.on_data, on_close=rec.on_close)
    cli.write(b"hello, ")
    cli.write(bytearray(b"world"))
    run_until(ctx, lambda: bytes(rec.data) == b"hello, world")
    cli.close()
    run_until(ctx, lambda: bool(rec.closes))
    srv.close()
    if family == "unix":
        assert not os.path.exists(address), "the listener's socket file is removed on close"
    poll_for(ctx, 0.01)


def test_unix_abstract_namespace(no_fd_leak: None, ctx: AioContext) -> None:
    name = f"\0aiocore-test-{os.getpid()}-{id(ctx)}"
    source = ctx.sources.socket
    srv, _, _ = echo_listener(source, name)
    rec = Record()
    cli = source.connect(name, rec.on_data)
    cli.write(b"abstract")
    run_until(ctx, lambda: bytes(rec.data) == b"abstract")
    cli.abort()
    srv.close()
    poll_for(ctx, 0.01)


# -- flow control -------------------------------------------------------------------


def test_slow_reader_hits_high_water_and_resumes_on_drain(
    no_fd_leak: None, ctx: AioContext
) -> None:
    """The writer stops at the high-water mark, resumes on drain; nothing lost."""
    source = ctx.sources.socket
    total = 4 * 1024 * 1024
    chunk = 16 * 1024
    data = payload(7, total)
    state: dict[str, Any] = {"sent": 0, "false_returns": 0, "max_buffered": 0, "drains": 0}
    server: list[Stream] = []

    def pump() -> None:
        s = server[0]
        while state["sent"] < total:
            piece = data[state["sent"] : state["sent"] + chunk]
            state["sent"] += len(piece)
            ok = s.write(piece)
            state["max_buffered"] = max(state["max_buffered"], s.write_buffer_size)
            if not ok:
                state["false_returns"] += 1
                assert s.writing_paused
                assert s.write_buffer_size >= s.get_write_limits()[0]
                # While bytes are queued, write interest is registered.
                assert node_mask(ctx, s.fd) & EVENT_OUT
                return
        s.close()

    def on_drain() -> None:
        s = server[0]
        state["drains"] += 1
        assert not s.writing_paused
        assert s.write_buffer_size <= s.get_write_limits()[1]
        pump()

    def on_connection(stream: Stream) -> None:
        server.append(stream)
        stream.set_write_limits(high_water=64 * 1024, low_water=16 * 1024)
        stream.start(lambda _d: None, on_drain=on_drain)
        pump()

    srv = source.listen(LOOPBACK, on_connection)
    rec = Record()
    reader = source.connect(srv.address, rec.on_data, on_close=rec.on_close)
    reader.pause_reading()  # slow reader: reads nothing at first
    run_until(ctx, lambda: state["false_returns"] >= 1, what="writer to hit high water")
    assert state["drains"] == 0
    # Nothing drains while the reader sleeps.
    poll_for(ctx, 0.05)
    assert state["drains"] == 0
    reader.resume_reading()
    run_until(ctx, lambda: bool(rec.closes), timeout=30, what="all data and close")
    assert bytes(rec.data) == data
    assert state["drains"] >= 1
    assert state["drains"] == state["false_returns"]
    # The buffer stayed bounded by the mark plus one chunk.
    assert state["max_buffered"] < 64 * 1024 + chunk
    srv.close()


def test_write_interest_only_while_buffer_non_empty(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        s = ctx.sources.socket.stream(a, lambda _d: None)
        assert node_mask(ctx, s.fd) & EVENT_OUT == 0
        assert s.write(b"x" * 10)  # taken by the kernel at once: no interest
        assert node_mask(ctx, s.fd) & EVENT_OUT == 0
        assert s.write_buffer_size == 0
        s.write(b"y" * 500_000)  # more than the socket buffers hold
        assert s.write_buffer_size > 0
        assert node_mask(ctx, s.fd) & EVENT_OUT
        b.setblocking(False)
        got = bytearray()

        def drain_peer() -> bool:
            try:
                while True:
                    got.extend(b.recv(1 << 16))
            except BlockingIOError:
                pass
            return s.write_buffer_size == 0

        run_until(ctx, drain_peer)
        assert node_mask(ctx, s.fd) & EVENT_OUT == 0
        s.abort()
    finally:
        b.close()


def test_no_write_lost_or_reordered_under_partial_sends(no_fd_leak: None, ctx: AioContext) -> None:
    """Thousands of writes of every bytes-like type, a tiny peer buffer: exact order."""
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    b.setblocking(False)
    rng = random.Random(3)
    expected = bytearray()
    got = bytearray()
    try:
        s = ctx.sources.socket.stream(a, lambda _d: None)
        for i in range(3000):
            piece = struct.pack("!I", i) + bytes(rng.randrange(0, 200))
            kind = i % 3
            item: Any = piece if kind == 0 else bytearray(piece) if kind == 1 else memoryview(piece)
            s.write(item)
            expected += piece
            if i % 97 == 0:  # read a little now and then, so sends are partial
                try:
                    got.extend(b.recv(700))
                except BlockingIOError:
                    pass
                ctx.poll(False)

        def drained() -> bool:
            try:
                while True:
                    chunk = b.recv(1 << 16)
                    if not chunk:
                        return True
                    got.extend(chunk)
            except BlockingIOError:
                pass
            return len(got) >= len(expected)

        run_until(ctx, drained)
        assert got == expected
        s.close()
        run_until(ctx, lambda: s.closed)
    finally:
        b.close()


# -- end of stream, errors ----------------------------------------------------------


def _reset_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_peer_reset_is_reported_once(no_fd_leak: None, ctx: AioContext) -> None:
    source = ctx.sources.socket
    accepted: list[Stream] = []
    rec = Record()

    def on_connection(stream: Stream) -> None:
        stream.start(rec.on_data, on_eof=rec.on_eof, on_close=rec.on_close)
        accepted.append(stream)

    srv = source.listen(LOOPBACK, on_connection)
    peer = socket.create_connection(srv.address)
    run_until(ctx, lambda: bool(accepted))
    peer.sendall(b"last words")
    run_until(ctx, lambda: bytes(rec.data) == b"last words")
    _reset_socket(peer)  # SO_LINGER 0: RST instead of FIN
    run_until(ctx, lambda: bool(rec.closes))
    poll_for(ctx, 0.05)
    assert len(rec.closes) == 1
    assert isinstance(rec.closes[0], ConnectionResetError)
    assert rec.eofs == 0
    stream = accepted[0]
    assert stream.closed
    assert stream.exception is rec.closes[0]
    assert stream.fd not in ctx.handler_fds()
    with pytest.raises(StreamClosed, match="ConnectionResetError"):
        stream.write(b"too late")
    stream.close()  # harmless
    stream.abort()
    poll_for(ctx, 0.02)
    assert len(rec.closes) == 1
    srv.close()


def test_reset_found_by_a_write_is_reported_once_and_later(
    no_fd_leak: None, ctx: AioContext
) -> None:
    source = ctx.sources.socket
    accepted: list[Stream] = []
    rec = Record()

    def on_connection(stream: Stream) -> None:
        stream.start(rec.on_data, on_close=rec.on_close)
        stream.pause_reading()  # only the write can find the reset
        accepted.append(stream)

    srv = source.listen(LOOPBACK, on_connection)
    peer = socket.create_connection(srv.address)
    run_until(ctx, lambda: bool(accepted))
    _reset_socket(peer)
    stream = accepted[0]
    for _ in range(10):  # the first write may still succeed into the socket buffer
        if stream.closed:
            break
        stream.write(b"x" * 1000)
        poll_for(ctx, 0.005)
    assert stream.closed
    # Reported from a BH, never inside write(): by now it ran exactly once.
    run_until(ctx, lambda: bool(rec.closes))
    poll_for(ctx, 0.02)
    assert len(rec.closes) == 1
    assert isinstance(rec.closes[0], (ConnectionResetError, BrokenPipeError))
    srv.close()


def test_on_close_never_runs_inside_a_call(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
    s.close()
    assert s.closed  # nothing buffered: closed at once...
    assert rec.closes == []  # ...but reported from the loop
    ctx.poll(False)
    assert rec.closes == [None]
    b.close()


def test_half_close_both_ways(no_fd_leak: None, ctx: AioContext) -> None:
    """Client writes then shuts its write side; server answers after EOF; both close once."""
    source = ctx.sources.socket
    srec = Record()
    crec = Record()

    def on_connection(stream: Stream) -> None:
        def on_eof() -> None:
            srec.on_eof()
            # The peer finished sending; we can still write.
            stream.write(bytes(srec.data).upper())
            stream.write_eof()

        stream.start(srec.on_data, on_eof=on_eof, on_close=srec.on_close)

    srv = source.listen(LOOPBACK, on_connection)
    cli = source.connect(srv.address, crec.on_data, on_eof=crec.on_eof, on_close=crec.on_close)
    cli.write(b"ping ")
    cli.write(b"pong")
    cli.write_eof()
    cli.write_eof()  # idempotent
    with pytest.raises(StreamClosed, match="write_eof"):
        cli.write(b"more")
    run_until(ctx, lambda: bool(crec.closes) and bool(srec.closes))
    assert bytes(srec.data) == b"ping pong"
    assert bytes(crec.data) == b"PING PONG"  # read after our own write_eof
    assert srec.eofs == 1 and crec.eofs == 1
    assert srec.closes == [None] and crec.closes == [None]
    srv.close()


def test_half_close_against_a_plain_socket(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_eof=rec.on_eof, on_close=rec.on_close)
    s.write(b"request")
    s.write_eof()
    run_until(ctx, lambda: not s.connected or s.write_buffer_size == 0)
    assert b.recv(100) == b"request"
    assert b.recv(100) == b""  # the peer sees end of file
    b.sendall(b"response")  # and can still answer
    b.shutdown(socket.SHUT_WR)
    run_until(ctx, lambda: bool(rec.closes))
    assert bytes(rec.data) == b"response"
    assert rec.eofs == 1
    assert rec.closes == [None]
    b.close()


def test_peer_eof_without_on_eof_closes_gracefully_after_flushing(
    no_fd_leak: None, ctx: AioContext
) -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
    b.shutdown(socket.SHUT_WR)
    run_until(ctx, lambda: bool(rec.closes))
    assert s.closed and rec.closes == [None]
    assert b.recv(10) == b""
    b.close()


def test_close_flushes_buffered_bytes_first(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
    data = payload(1, 300_000)
    s.write(data)
    s.close()
    assert s.closing and not s.closed
    with pytest.raises(StreamClosed, match=r"close\(\) was called"):
        s.write(b"x")
    b.setblocking(False)
    got = bytearray()

    def read() -> bool:
        try:
            while True:
                chunk = b.recv(1 << 16)
                if not chunk:
                    return True
                got.extend(chunk)
        except BlockingIOError:
            return False

    run_until(ctx, read)
    assert got == data
    run_until(ctx, lambda: bool(rec.closes))
    assert rec.closes == [None]
    b.close()


def test_abort_discards_buffer(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
    s.write(b"z" * 300_000)
    assert s.write_buffer_size > 0
    s.abort()
    assert s.closed and s.write_buffer_size == 0
    assert s.fd not in ctx.handler_fds()
    ctx.poll(False)
    assert rec.closes == [None]
    b.close()


def test_connect_refused_is_reported_once(no_fd_leak: None, ctx: AioContext) -> None:
    with socket.socket() as probe:
        probe.bind(LOOPBACK)
        port = probe.getsockname()[1]  # nobody listens here once closed
    rec = Record()
    s = ctx.sources.socket.connect(
        ("127.0.0.1", port), rec.on_data, on_connect=rec.on_connect, on_close=rec.on_close
    )
    s.write(b"never sent")
    run_until(ctx, lambda: bool(rec.closes))
    poll_for(ctx, 0.02)
    assert len(rec.closes) == 1
    assert isinstance(rec.closes[0], ConnectionRefusedError)
    assert rec.connects == 0
    assert s.closed


def test_connect_to_missing_unix_socket(no_fd_leak: None, ctx: AioContext, tmp_path: Path) -> None:
    rec = Record()
    s = ctx.sources.socket.connect(str(tmp_path / "nobody"), rec.on_data, on_close=rec.on_close)
    run_until(ctx, lambda: bool(rec.closes))
    assert isinstance(rec.closes[0], FileNotFoundError)
    assert s.closed


def test_callback_errors_go_to_the_exception_handler(no_fd_leak: None, ctx: AioContext) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    a, b = socket.socketpair()
    seen: list[bytes] = []

    def on_data(data: bytes) -> None:
        seen.append(data)
        if len(seen) == 1:
            raise ValueError("bad data")

    s = ctx.sources.socket.stream(a, on_data)
    b.sendall(b"one")
    run_until(ctx, lambda: len(seen) == 1)
    b.sendall(b"two")
    run_until(ctx, lambda: len(seen) == 2)
    assert [type(e) for e in errors] == [ValueError]
    s.abort()
    b.close()


# -- listeners ----------------------------------------------------------------------


def test_accept_batch_caps_work_per_wakeup_without_starving_others(
    no_fd_leak: None, ctx: AioContext
) -> None:
    source = ctx.sources.socket
    accepted: list[Stream] = []

    def on_connection(stream: Stream) -> None:
        accepted.append(stream)
        stream.start(lambda _d: None)

    srv = source.listen(LOOPBACK, on_connection, accept_batch=4, backlog=64)
    peers = [socket.create_connection(srv.address) for _ in range(10)]
    r, w = os.pipe()
    other: list[int] = []
    try:
        ctx.set_fd_handler(r, lambda fd: other.append(len(os.read(fd, 10))), opaque=r)
        os.write(w, b"x")
        ctx.poll(False)  # registration notify
        run_until(ctx, lambda: bool(accepted) or bool(other))
        # One wake-up accepted at most 4, and the pipe was served alongside.
        assert len(accepted) == 4
        assert other == [1]
        run_until(ctx, lambda: len(accepted) == 10)
        assert srv.accepted == 10
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)
        for p in peers:
            p.close()
        for s in accepted:
            s.abort()
        srv.close()
    poll_for(ctx, 0.01)


def test_on_connection_that_raises_closes_that_stream_only(
    no_fd_leak: None, ctx: AioContext
) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    source = ctx.sources.socket
    good: list[Stream] = []

    def on_connection(stream: Stream) -> None:
        if not errors and not good:
            raise RuntimeError("refuse the first")
        stream.start(lambda _d: None)
        good.append(stream)

    srv = source.listen(LOOPBACK, on_connection)
    p1 = socket.create_connection(srv.address)
    p1.settimeout(5)
    run_until(ctx, lambda: bool(errors))
    assert p1.recv(10) == b""  # its stream was closed
    p2 = socket.create_connection(srv.address)
    run_until(ctx, lambda: bool(good))
    assert [type(e) for e in errors] == [RuntimeError]
    p1.close()
    p2.close()
    good[0].abort()
    srv.close()
    poll_for(ctx, 0.01)


def test_listen_adopts_a_bound_socket(no_fd_leak: None, ctx: AioContext) -> None:
    sock = socket.socket()
    sock.bind(LOOPBACK)
    srv, _, _ = echo_listener(ctx.sources.socket, sock)
    assert srv.socket is sock
    rec = Record()
    cli = ctx.sources.socket.connect(srv.address, rec.on_data)
    cli.write(b"adopted")
    run_until(ctx, lambda: bytes(rec.data) == b"adopted")
    cli.abort()
    srv.close()
    assert sock.fileno() == -1
    poll_for(ctx, 0.01)


def test_start_twice_is_an_error(no_fd_leak: None, ctx: AioContext) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    streams: list[Stream] = []

    def on_connection(stream: Stream) -> None:
        stream.start(lambda _d: None)
        streams.append(stream)
        stream.start(lambda _d: None)

    srv = ctx.sources.socket.listen(LOOPBACK, on_connection)
    p = socket.create_connection(srv.address)
    run_until(ctx, lambda: bool(errors))
    assert "start() was already called" in str(errors[0])
    p.close()
    srv.close()
    poll_for(ctx, 0.01)


# -- lifecycle ----------------------------------------------------------------------


def test_everything_closed_with_the_context_without_callbacks(
    no_fd_leak: None, backend: str, registry: Any, tmp_path: Path
) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    source = ctx.sources.socket
    srv, _, server_records = echo_listener(source)
    usrv, _, _ = echo_listener(source, str(tmp_path / "u.sock"))
    rec = Record()
    cli = source.connect(srv.address, rec.on_data, on_close=rec.on_close)
    cli.write(b"hi")
    run_until(ctx, lambda: bytes(rec.data) == b"hi")
    dgram = source.datagram(lambda _d, _a: None, local_address=LOOPBACK)
    assert len(source.open_objects) == 5
    ctx.close()
    assert cli.closed and srv.closed and usrv.closed and dgram.closed
    assert rec.closes == []
    assert all(r.closes == [] for r in server_records)
    assert not (tmp_path / "u.sock").exists()


def test_source_is_made_once_per_context(ctx: AioContext) -> None:
    assert ctx.sources.socket is ctx.sources.socket
    assert isinstance(ctx.sources.socket, SocketSource)
    assert "socket" in dir(ctx.sources)


# -- bad inputs: clear errors naming the argument, nothing changed ------------------


#: Sockets a bad call was handed.  A call that refuses a socket leaves it to
#: the caller, so :func:`test_bad_inputs` closes these itself.
_HANDED: list[socket.socket] = []


def _closed_socket() -> socket.socket:
    s = socket.socket()
    s.close()
    return s


def _udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _HANDED.append(s)
    return s


BAD_CALLS: list[tuple[str, Callable[[SocketSource], Any], type[Exception], str]] = [
    (
        "port range",
        lambda s: s.listen(("127.0.0.1", 70000), print),
        ValueError,
        r"address: port must be in 0\.\.65535, got 70000",
    ),
    (
        "bad host",
        lambda s: s.listen(("999.1.2.3", 0), print),
        ValueError,
        r"address \('999\.1\.2\.3', 0\) is not a valid address",
    ),
    (
        "int address",
        lambda s: s.listen(8080, print),
        TypeError,
        r"address must be a \(host, port\) tuple .* or a str or path for a Unix-domain socket; "
        r"got int 8080",
    ),
    (
        "short tuple",
        lambda s: s.connect(("127.0.0.1",), print),
        TypeError,
        r"address must be a \(host, port\) tuple",
    ),
    ("host type", lambda s: s.connect((127, 80), print), TypeError, "address: host must be a str"),
    (
        "port type",
        lambda s: s.connect(("127.0.0.1", "80"), print),
        TypeError,
        "address: port must be an int, got str",
    ),
    ("empty path", lambda s: s.listen("", print), ValueError, "address must not be empty"),
    (
        "on_connection",
        lambda s: s.listen(LOOPBACK, "cb"),
        TypeError,
        "on_connection must be a callable, got str",
    ),
    (
        "on_data",
        lambda s: s.connect(LOOPBACK, None),
        TypeError,
        "on_data must be a callable, got NoneType",
    ),
    (
        "on_close",
        lambda s: s.connect(LOOPBACK, print, on_close=1),
        TypeError,
        "on_close must be a callable or None, got int",
    ),
    (
        "backlog",
        lambda s: s.listen(LOOPBACK, print, backlog=-1),
        ValueError,
        "backlog must be >= 0, got -1",
    ),
    (
        "accept_batch",
        lambda s: s.listen(LOOPBACK, print, accept_batch=0),
        ValueError,
        "accept_batch must be >= 1, got 0",
    ),
    (
        "high_water",
        lambda s: s.listen(LOOPBACK, print, high_water=-1),
        ValueError,
        "high_water must be >= 0, got -1",
    ),
    (
        "low > high",
        lambda s: s.listen(LOOPBACK, print, high_water=10, low_water=20),
        ValueError,
        "low_water must be <= high_water, got low_water=20 high_water=10",
    ),
    ("closed socket", lambda s: s.stream(_closed_socket(), print), ValueError, "sock is closed"),
    (
        "udp as stream",
        lambda s: s.stream(_udp_socket(), print),
        ValueError,
        "sock must be a SOCK_STREAM socket",
    ),
    (
        "not a socket",
        lambda s: s.stream(3, print),
        TypeError,
        "sock must be a socket.socket, got int",
    ),
    (
        "listen closed socket",
        lambda s: s.listen(_closed_socket(), print),
        ValueError,
        "address is closed",
    ),
    (
        "no datagram address",
        lambda s: s.datagram(print),
        ValueError,
        "datagram\\(\\) needs local_address, remote_address, or both",
    ),
    (
        "on_datagram",
        lambda s: s.datagram(None, local_address=LOOPBACK),
        TypeError,
        "on_datagram must be a callable, got NoneType",
    ),
    (
        "datagram port",
        lambda s: s.datagram(print, remote_address=("127.0.0.1", -1)),
        ValueError,
        "remote_address: port must be in 0..65535, got -1",
    ),
    (
        "batch",
        lambda s: s.datagram(print, local_address=LOOPBACK, batch=0),
        ValueError,
        "batch must be >= 1, got 0",
    ),
    (
        "datagram reuse_address",
        lambda s: s.datagram(print, local_address=LOOPBACK, reuse_address="no"),
        TypeError,
        r"reuse_address must be a bool \(True or False\), got str 'no'",
    ),
    (
        "listen reuse_address",
        lambda s: s.listen(LOOPBACK, print, reuse_address=1),
        TypeError,
        r"reuse_address must be a bool \(True or False\), got int 1",
    ),
    (
        "families",
        lambda s: s.datagram(print, local_address=LOOPBACK, remote_address="/x"),
        ValueError,
        "are of different address families",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "exc", "message"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS]
)
def test_bad_inputs(
    no_fd_leak: None,
    ctx: AioContext,
    name: str,
    call: Callable[[SocketSource], Any],
    exc: type[Exception],
    message: str,
) -> None:
    source = ctx.sources.socket
    _HANDED.clear()
    try:
        with pytest.raises(exc, match=message):
            call(source)
        assert source.open_objects == []
        assert ctx.handler_fds() == []
        # A refused socket is still the caller's: not closed, still blocking.
        for sock in _HANDED:
            assert sock.fileno() >= 0 and sock.getblocking()
    finally:
        for sock in _HANDED:
            sock.close()
        _HANDED.clear()


def test_bad_write_inputs(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    s = ctx.sources.socket.stream(a, print)
    with pytest.raises(TypeError, match=r"data must be a bytes-like object, got str \(encode it"):
        s.write("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data must be a bytes-like object .* got int"):
        s.write(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="high_water must be an int"):
        s.set_write_limits(high_water="big")  # type: ignore[arg-type]
    assert s.get_write_limits() == (64 * 1024, 16 * 1024)
    assert s.write_buffer_size == 0
    s.abort()
    b.close()


def test_write_copies_a_buffer_that_is_not_contiguous(no_fd_leak: None, ctx: AioContext) -> None:
    """A strided memoryview is written as bytes(view) gives it (it raised BufferError)."""
    a, b = socket.socketpair()
    b.settimeout(5)
    try:
        s = ctx.sources.socket.stream(a, print)
        items: list[Any] = [
            memoryview(b"abcdef")[::2],
            memoryview(array.array("H", [1, 2, 3, 4]))[::2],
            memoryview(bytearray(b"0123456789"))[::-3],
        ]
        expected = b"".join(bytes(m) for m in items)
        assert s.write(items[0])
        assert s.writelines(items[1:])
        s.write_eof()
        got = bytearray()
        while chunk := b.recv(100):
            got += chunk
        assert got == expected
        s.abort()
    finally:
        b.close()


def test_write_refuses_a_released_memoryview_by_name(no_fd_leak: None, ctx: AioContext) -> None:
    a, b = socket.socketpair()
    try:
        s = ctx.sources.socket.stream(a, print)
        view = memoryview(b"gone")
        view.release()
        with pytest.raises(ValueError, match="data: operation forbidden on released memoryview"):
            s.write(view)
        assert s.write_buffer_size == 0
        s.abort()
    finally:
        b.close()


def test_writelines_checks_every_chunk_before_writing_any(
    no_fd_leak: None, ctx: AioContext
) -> None:
    """A bad chunk used to raise after the chunks before it were sent."""
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        s = ctx.sources.socket.stream(a, print)
        with pytest.raises(TypeError, match=r"chunks\[1\]: data must be a bytes-like .* got str"):
            s.writelines([b"sent?", "text", b"more"])
        released = memoryview(b"gone")
        released.release()
        with pytest.raises(ValueError, match=r"chunks\[2\]: data: operation forbidden on rel"):
            s.writelines([b"a", memoryview(b"b"), released])
        with pytest.raises(
            TypeError, match="chunks must be an iterable of bytes-like objects, got int"
        ):
            s.writelines(5)
        assert s.write_buffer_size == 0
        with pytest.raises(BlockingIOError):
            b.recv(100)  # nothing was sent
        assert s.writelines(iter([b"one ", memoryview(b"two")[::1], bytearray(b" three")]))
        b.settimeout(5)
        assert b.recv(100) == b"one two three"
        s.abort()
    finally:
        b.close()


def test_writelines_stops_at_a_send_error_without_raising(
    no_fd_leak: None, ctx: AioContext
) -> None:
    """A send error ends the stream through on_close, as write() does; the
    chunks after it used to raise StreamClosed from inside writelines()."""
    a, b = socket.socketpair()
    b.close()  # the first send fails with EPIPE
    rec = Record()
    s = ctx.sources.socket.stream(a, rec.on_data, on_close=rec.on_close)
    assert s.writelines([b"first", b"second", b"third"]) is False
    assert s.closed
    assert rec.closes == []  # reported from a BH, not inside the call
    run_until(ctx, lambda: bool(rec.closes))
    poll_for(ctx, 0.02)
    assert len(rec.closes) == 1
    assert isinstance(rec.closes[0], BrokenPipeError)


def test_methods_after_context_close_raise(backend: str, registry: Any) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    source = ctx.sources.socket
    ctx.close()
    with pytest.raises(RuntimeError, match="closed"):
        source.listen(LOOPBACK, print)
    with pytest.raises(RuntimeError, match="closed"):
        ctx.sources  # noqa: B018


def test_listener_closed_from_on_connection_stops_accepting(
    no_fd_leak: None, ctx: AioContext
) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    accepted: list[Stream] = []
    holder: list[Listener] = []

    def on_connection(stream: Stream) -> None:
        accepted.append(stream)
        stream.abort()
        holder[0].close()

    holder.append(ctx.sources.socket.listen(LOOPBACK, on_connection))
    peers = [socket.create_connection(holder[0].address) for _ in range(3)]
    run_until(ctx, lambda: holder[0].closed)
    poll_for(ctx, 0.02)
    assert len(accepted) == 1
    assert errors == []  # no accept() on the closed socket
    for p in peers:
        p.close()


def test_stream_introspection(no_fd_leak: None, ctx: AioContext) -> None:
    source = ctx.sources.socket
    srv, _, _ = echo_listener(source)
    rec = Record()
    cli = source.connect(srv.address, rec.on_data, on_connect=rec.on_connect)
    assert not cli.connected
    run_until(ctx, lambda: cli.connected)
    assert cli.peername == srv.address
    assert cli.sockname[0] == "127.0.0.1"
    assert cli.fileno() == cli.fd == cli.socket.fileno()
    assert cli.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
    run_until(ctx, lambda: bytes(rec.data) == b"abc")
    assert cli.reading and not cli.at_eof and not cli.closing and cli.exception is None
    assert "open" in repr(cli) and "Listener" in repr(srv)
    cli.pause_reading()
    assert not cli.reading
    cli.resume_reading()
    assert cli.reading
    cli.abort()
    assert "closed" in repr(cli)
    srv.close()
    poll_for(ctx, 0.01)
