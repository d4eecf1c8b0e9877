"""The ``socket`` source's datagram sockets: UDP (IPv4, IPv6) and Unix-domain."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins.socket_source import Datagram, StreamClosed

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
