"""The ``socket`` source's datagram sockets: UDP (IPv4, IPv6) and Unix-domain."""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins import socket_source
from aiocore_plugins.socket_source import RECV_BUFFER_SIZE, Datagram, StreamClosed

from aiocore import EVENT_OUT, AioContext

from ._helpers import ipv6_loopback_reason, poll_for, run_until


def _host(family: str) -> str:
    if family == "ipv6":
        reason = ipv6_loopback_reason()
        if reason is not None:
            pytest.skip(reason)
        return "::1"
    return "127.0.0.1"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_udp_echo_keeps_boundaries_and_order(
    no_fd_leak: None, ctx: AioContext, family: str
) -> None:
    host = _host(family)
    source = ctx.sources.socket
    server: list[Datagram] = []

    def echo(data: bytes, addr: Any) -> None:
        server[0].send(data, addr)

    server.append(source.datagram(echo, local_address=(host, 0)))
    got: list[bytes] = []
    client = source.datagram(lambda d, _a: got.append(d), remote_address=server[0].address)
    sent = [bytes([i]) * (i + 1) for i in range(100)]
    for d in sent:
        client.send(d)
    run_until(ctx, lambda: len(got) == len(sent))
    # Loopback UDP does not reorder or drop 100 small datagrams.
    assert got == sent
    assert client.sent == 100 and server[0].received == 100
    client.close()
    server[0].close()
    poll_for(ctx, 0.01)


def test_connected_udp_refused_goes_to_on_error(no_fd_leak: None, ctx: AioContext) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors: list[OSError] = []
    d = ctx.sources.socket.datagram(
        lambda _d, _a: None, remote_address=("127.0.0.1", port), on_error=errors.append
    )
    d.send(b"anyone?")  # ICMP port unreachable comes back as ECONNREFUSED
    run_until(ctx, lambda: bool(errors))
    assert isinstance(errors[0], ConnectionRefusedError)
    assert not d.closed  # not fatal
    d.close()
    with pytest.raises(StreamClosed):
        d.send(b"x")


def test_unix_datagram_queue_flushes_in_order(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    """A receiver that does not read makes sends queue; they leave in order later."""
    recv_path = str(tmp_path / "recv.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(recv_path)
    receiver.setblocking(False)
    try:
        d = ctx.sources.socket.datagram(
            lambda _d, _a: None, local_address=str(tmp_path / "send.sock"), remote_address=recv_path
        )
        sent = [f"datagram {i:04d}".encode() * 20 for i in range(300)]
        for item in sent:
            d.send(item)
        # The receiver's queue is bounded (net.unix.max_dgram_qlen): some queued here.
        assert d.queued > 0
        assert ctx._table.nodes[d.fd].mask & EVENT_OUT
        got: list[bytes] = []

        def read() -> bool:
            try:
                while True:
                    got.append(receiver.recv(65536))
            except BlockingIOError:
                pass
            return len(got) == len(sent)

        run_until(ctx, read)
        assert got == sent
        assert d.queued == 0
        assert ctx._table.nodes[d.fd].mask & EVENT_OUT == 0  # write interest dropped
        d.close()
        assert not (tmp_path / "send.sock").exists()
    finally:
        receiver.close()


def test_unix_datagram_exchange(no_fd_leak: None, ctx: AioContext, tmp_path: Path) -> None:
    source = ctx.sources.socket
    got: list[tuple[bytes, Any]] = []
    a = source.datagram(lambda d, addr: got.append((d, addr)), local_address=str(tmp_path / "a"))
    b = source.datagram(lambda _d, _a: None, local_address=str(tmp_path / "b"))
    b.send(b"to a", str(tmp_path / "a"))
    run_until(ctx, lambda: bool(got))
    assert got == [(b"to a", str(tmp_path / "b"))]
    a.close()
    b.close()


def test_datagram_batch_caps_reads_per_wakeup(no_fd_leak: None, ctx: AioContext) -> None:
    got: list[bytes] = []
    d = ctx.sources.socket.datagram(
        lambda data, _a: got.append(data), local_address=("127.0.0.1", 0), batch=3
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(10):
            s.sendto(bytes([i]), d.address)
        ctx.poll(False)
        run_until(ctx, lambda: bool(got))
        assert len(got) == 3
        run_until(ctx, lambda: len(got) == 10)
    assert got == [bytes([i]) for i in range(10)]
    d.close()


def test_datagram_callback_error_without_on_error_goes_to_handler(
    no_fd_leak: None, ctx: AioContext
) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = ctx.sources.socket.datagram(lambda _d, _a: None, remote_address=("127.0.0.1", port))
    d.send(b"x")
    run_until(ctx, lambda: bool(errors))
    assert isinstance(errors[0], ConnectionRefusedError)
    d.close()


def test_bad_send_inputs(no_fd_leak: None, ctx: AioContext) -> None:
    d = ctx.sources.socket.datagram(lambda _d, _a: None, local_address=("127.0.0.1", 0))
    with pytest.raises(TypeError, match="data must be a bytes-like object, got str"):
        d.send("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"address must be a \(host, port\) tuple"):
        d.send(b"x", 5)
    assert d.queued == 0
    d.close()


def test_send_copies_a_buffer_that_is_not_contiguous(no_fd_leak: None, ctx: AioContext) -> None:
    got: list[bytes] = []
    source = ctx.sources.socket
    rx = source.datagram(lambda data, _a: got.append(data), local_address=("127.0.0.1", 0))
    tx = source.datagram(lambda _d, _a: None, remote_address=rx.address)
    tx.send(memoryview(b"abcdef")[::2])
    run_until(ctx, lambda: bool(got))
    assert got == [b"ace"]
    view = memoryview(b"gone")
    view.release()
    with pytest.raises(ValueError, match="data: operation forbidden on released memoryview"):
        tx.send(view)
    assert tx.queued == 0 and tx.sent == 1
    tx.close()
    rx.close()


# -- send(): the address must suit the socket; the queue never stalls ---------------

_BAD_IP_ADDRESSES: list[tuple[str, Any, type[Exception], str]] = [
    ("ipv4", ("::1", 9), ValueError, r"address: host '::1' is an IPv6 address .* IPv4 datagram"),
    ("ipv4", "/tmp/x", TypeError, r"address must be a \(host, port\) tuple on this IPv4"),
    ("ipv4", ("127.0.0.1", 9, 0, 0), TypeError, r"address must be a \(host, port\) tuple"),
    ("ipv4", ("127.0.0.1", "9"), TypeError, "address: port must be an int, got str '9'"),
    ("ipv4", ("127.0.0.1", 70000), ValueError, r"address: port must be in 0\.\.65535, got 70000"),
    ("ipv4", ("127.0.0.1", True), TypeError, "address: port must be an int, got bool"),
    ("ipv4", (b"127.0.0.1", 9), TypeError, "address: host must be a str, got bytes"),
    ("ipv4", ("\udcff", 9), ValueError, "address: host .* is not a valid host name"),
    ("ipv4", None, ValueError, "address must be given: this datagram socket has no remote_addr"),
    ("ipv6", ("127.0.0.1", 9), ValueError, r"is an IPv4 address .* '::ffff:127\.0\.0\.1'"),
    ("ipv6", ("::1", 9, "x", 0), TypeError, "address: flowinfo must be an int, got str"),
    ("ipv6", ("::1", 9, 2**40, 0), ValueError, r"address: flowinfo must be in 0\.\.1048575"),
    ("ipv6", ("::1", 9, 0, -1), ValueError, r"address: scope_id must be in 0\.\.4294967295"),
    ("ipv6", ("::1",), TypeError, r"or \(host, port, flowinfo, scope_id\) tuple on this IPv6"),
]


@pytest.mark.parametrize(
    ("family", "address", "exc", "message"),
    _BAD_IP_ADDRESSES,
    ids=[f"{c[0]}-{c[1]!r}" for c in _BAD_IP_ADDRESSES],
)
def test_send_refuses_an_address_the_socket_cannot_use(
    no_fd_leak: None, ctx: AioContext, family: str, address: Any, exc: type[Exception], message: str
) -> None:
    """Refused by name before anything is sent or queued (sendto() raised an
    unnamed TypeError/OverflowError, or a resolver error, for these)."""
    d = ctx.sources.socket.datagram(lambda _d, _a: None, local_address=(_host(family), 0))
    try:
        with pytest.raises(exc, match=message):
            d.send(b"x", address)
        assert d.queued == 0 and d.sent == 0
        assert ctx._table.nodes[d.fd].mask & EVENT_OUT == 0
    finally:
        d.close()


def _unread_unix_receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "recv.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    return receiver, path


def _read_all(receiver: socket.socket, got: list[bytes]) -> None:
    try:
        while True:
            got.append(receiver.recv(65536))
    except BlockingIOError:
        pass


def test_unix_send_refuses_an_ip_address_even_behind_a_queue(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    """A tuple on a Unix-domain socket used to be queued behind the others, and
    its TypeError in the flush stalled the queue for good; now send() refuses it
    by name, nothing is queued, and every good datagram arrives once, in order."""
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    receiver, path = _unread_unix_receiver(tmp_path)
    try:
        d = ctx.sources.socket.datagram(
            lambda _d, _a: None,
            local_address=str(tmp_path / "send.sock"),
            remote_address=path,
            on_error=errors.append,
        )
        sent = [b"good %d" % i for i in range(200)]
        for item in sent[:100]:
            d.send(item)
        queued = d.queued
        assert queued > 0  # the receiver's queue is full: the rest waits here
        for bad, exc, message in (
            (("127.0.0.1", 9), TypeError, "address must be a str or path on this Unix-domain"),
            ("", ValueError, "address must not be empty"),
            (7, TypeError, "address must be a str or path .* got int 7"),
        ):
            with pytest.raises(exc, match=message):
                d.send(b"bad", bad)
            assert d.queued == queued
        for item in sent[100:]:
            d.send(item, Path(path))  # a path object is an address too
        got: list[bytes] = []

        def read() -> bool:
            _read_all(receiver, got)
            return len(got) >= len(sent) and d.queued == 0

        run_until(ctx, read, timeout=5)
        poll_for(ctx, 0.01)
        _read_all(receiver, got)
        assert got == sent
        assert errors == []
        assert ctx._table.nodes[d.fd].mask & EVENT_OUT == 0
        d.close()
    finally:
        receiver.close()


def test_unix_send_without_address_on_an_unconnected_socket_is_refused(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    d = ctx.sources.socket.datagram(lambda _d, _a: None, local_address=str(tmp_path / "a"))
    try:
        with pytest.raises(ValueError, match="address must be given"):
            d.send(b"x")
        assert d.queued == 0 and d.sent == 0
    finally:
        d.close()


def test_flush_drops_a_datagram_sendto_refuses_reports_it_once_and_goes_on(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    """Belt and braces behind send()'s check: a queued datagram that sendto()
    refuses with something other than an OSError is dropped and reported once
    (it used to stay at the head: the error on every poll, the rest stuck)."""
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: errors.append(e))
    on_error: list[OSError] = []
    receiver, path = _unread_unix_receiver(tmp_path)
    try:
        d = ctx.sources.socket.datagram(
            lambda _d, _a: None,
            local_address=str(tmp_path / "send.sock"),
            remote_address=path,
            on_error=on_error.append,
        )
        sent = [b"good %d" % i for i in range(100)]
        for item in sent[:50]:
            d.send(item)
        assert d.queued > 0
        d._queue.append((b"bad", ("127.0.0.1", 9)))  # what send() used to let through
        for item in sent[50:]:
            d.send(item)
        got: list[bytes] = []

        def read() -> bool:
            _read_all(receiver, got)
            return len(got) >= len(sent) and d.queued == 0

        run_until(ctx, read, timeout=5)
        poll_for(ctx, 0.01)
        _read_all(receiver, got)
        assert got == sent
        assert [type(e) for e in errors] == [TypeError]
        assert on_error == []
        assert d.sent == len(sent)
        assert ctx._table.nodes[d.fd].mask & EVENT_OUT == 0
        d.close()
    finally:
        receiver.close()


# -- Unix-domain datagrams longer than the shared receive buffer ---------------------


def _big_sender(want: int) -> socket.socket:
    """An unbound Unix datagram socket that can send *want* bytes at once, or a skip."""
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * want)
    # Linux refuses a datagram above SO_SNDBUF - 32; SO_SNDBUF is capped by wmem_max.
    room = sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 1024
    if room < want:
        sender.close()
        pytest.skip(f"a Unix datagram of {want} bytes does not fit SO_SNDBUF here ({room})")
    return sender


def _wait_for_one_more(ctx: AioContext, before: int, got: list[Any], errors: list[Any]) -> None:
    run_until(ctx, lambda: len(got) + len(errors) > before, timeout=10)


def test_unix_datagram_longer_than_the_buffer_arrives_whole(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path
) -> None:
    """Every Unix datagram is delivered whole and once, in order, whatever its size
    (one over 256 KiB used to be cut to 256 KiB without a word)."""
    rng = random.Random(4)
    sizes = [10, RECV_BUFFER_SIZE + 44 * 1024, RECV_BUFFER_SIZE, RECV_BUFFER_SIZE + 1, 0, 1, 7]
    sent = [rng.randbytes(n) for n in sizes]
    got: list[tuple[bytes, Any]] = []
    errors: list[OSError] = []
    path = str(tmp_path / "big.sock")
    d = ctx.sources.socket.datagram(
        lambda data, addr: got.append((data, addr)), local_address=path, on_error=errors.append
    )
    sender = _big_sender(max(sizes))
    try:
        d.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * max(sizes))
        sender.settimeout(10)
        for item in sent:  # one at a time: the kernel charges the sender until read
            before = len(got) + len(errors)
            sender.sendto(item, path)
            _wait_for_one_more(ctx, before, got, errors)
        poll_for(ctx, 0.01)
        assert errors == []
        assert [len(g[0]) for g in got] == sizes
        assert [g[0] for g in got] == sent
        assert d.received == len(sent)
    finally:
        sender.close()
        d.close()


def test_unix_datagram_cut_by_a_kernel_that_hides_the_length_is_reported(
    no_fd_leak: None, ctx: AioContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where recv cannot peek the length (no MSG_TRUNC), a datagram the kernel cuts
    is reported as EMSGSIZE, never delivered cut; the next ones still arrive."""
    monkeypatch.setattr(socket_source, "_PEEK_LENGTH", int(socket.MSG_PEEK))
    got: list[bytes] = []
    errors: list[OSError] = []
    path = str(tmp_path / "big.sock")
    d = ctx.sources.socket.datagram(
        lambda data, _a: got.append(data), local_address=path, on_error=errors.append
    )
    big = RECV_BUFFER_SIZE + 1000
    sender = _big_sender(big)
    try:
        d.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * big)
        sender.settimeout(10)
        for item in (b"before", b"x" * big, b"after"):
            before = len(got) + len(errors)
            sender.sendto(item, path)
            _wait_for_one_more(ctx, before, got, errors)
        poll_for(ctx, 0.01)
        assert got == [b"before", b"after"]
        assert len(errors) == 1
        assert errors[0].errno == errno.EMSGSIZE
        assert f"longer than the {RECV_BUFFER_SIZE}-byte receive buffer" in str(errors[0])
        assert d.received == 2
    finally:
        sender.close()
        d.close()
