"""A source method called from the wrong thread is refused by name, and changes nothing.

The sources' methods belong to the context's home thread (or to a thread
holding ``ctx.acquire()``).  Called from another thread, each method that
registers, changes or removes handlers must raise ``RuntimeError`` naming
*itself*, before it makes or changes anything.

It used to be refused by the ``set_fd_handler()`` it made on the user's
behalf, so the message named a method the user never called
("set_fd_handler() from a thread other than ..."), and only after the
method had acted: ``listen()`` and ``stream()`` closed the socket the user
handed them, ``connect()`` had already reached the peer, ``write()`` left
bytes buffered with no write interest (a stall), ``close()``, ``cancel()``
and ``detach()`` marked the handle closed and closed its fd with its handler
still registered.  Some were not refused at all: a ``write()`` the kernel
took whole, ``write_eof()``, a timer on the timer lists.

Each case below makes the object in the home thread, calls the method from
another thread and checks (a) the exact message, (b) that no fd was opened
or closed and no handler record changed, (c) that the object's own state is
as before; then the home thread makes the same call, which must work.  The
same calls from another thread holding ``ctx.acquire()`` must work too.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins.shmring_source import ShmRing, shmring_unavailable_reason
from aiocore_plugins.socket_source import Stream
from aiocore_plugins.timer_source import timerfd_unavailable_reason

from aiocore import AioContext
from aiocore.testing import open_fds

from ._helpers import run_until

WRONG_THREAD = (
    "{}() from a thread other than the context's home thread requires holding ctx.acquire()"
)
HAS_UNIX = hasattr(socket, "AF_UNIX")


def in_other_thread(fn: Callable[[], object], *, holding: AioContext | None = None) -> Any:
    """Call *fn()* in a new thread (holding *holding*'s lock if given); return what it raised."""
    box: list[BaseException | None] = []

    def run() -> None:
        if holding is not None:
            holding.acquire()
        try:
            fn()
        except BaseException as exc:
            box.append(exc)
        else:
            box.append(None)
        finally:
            if holding is not None:
                holding.release()

    t = threading.Thread(target=run, name="not-the-home-thread")
    t.start()
    t.join(10)
    assert not t.is_alive(), "the call from another thread hung"
    return box[0]


class Peers:
    """The test's own sockets and rings: closed at the end, after the context."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._closers: list[Callable[[], object]] = []

    def keep(self, closer: Callable[[], object]) -> None:
        self._closers.append(closer)

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        self.keep(a.close)
        self.keep(b.close)
        return a, b

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()


def peer_sees(sock: socket.socket) -> object:
    """What *sock* could read now, without taking it: a byte count, ``"eof"`` or ``None``."""
    try:
        data = sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    return len(data) if data else "eof"


def acceptable(server: socket.socket) -> bool:
    """True if a connection waits in *server*'s accept queue."""
    return bool(select.select([server], [], [], 0)[0])


#: What a case's setup returns: the call another thread makes, and a snapshot
#: of the object's state that the refused call must leave as it was.
Setup = tuple[Callable[[], object], Callable[[], object]]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    setup: Callable[[AioContext, Peers], Setup]
    needs: str | None = None  # "unix", "timerfd", "shmring": skipped where missing


def _nothing(*_args: object) -> None:
    pass


# -- the socket source ---------------------------------------------------------


def _listen(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    return lambda: src.listen(("127.0.0.1", 0), _nothing), lambda: src.open_objects


def _listen_adopting(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    sock = socket.socket()
    peers.keep(sock.close)
    sock.bind(("127.0.0.1", 0))

    def state() -> object:
        # Refused, it used to make the socket non-blocking, listen, then close it.
        return (
            src.open_objects,
            sock.fileno() >= 0,
            sock.fileno() >= 0 and sock.getblocking(),
            sock.fileno() >= 0 and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        )

    return lambda: src.listen(sock, _nothing), state


def _connect(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    server = socket.socket()
    peers.keep(server.close)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    address = server.getsockname()
    # Refused, it used to have reached the server already.
    return lambda: src.connect(address, _nothing), lambda: (src.open_objects, acceptable(server))


def _stream(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    a, _b = peers.socketpair()

    def state() -> object:
        # Refused, it used to make the socket non-blocking, then close it.
        return src.open_objects, a.fileno() >= 0, a.fileno() >= 0 and a.getblocking()

    return lambda: src.stream(a, _nothing), state


def _datagram(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    call = lambda: src.datagram(_nothing, local_address=("127.0.0.1", 0))  # noqa: E731
    return call, lambda: src.open_objects


def _started_stream(ctx: AioContext, peers: Peers) -> tuple[Stream, socket.socket]:
    a, b = peers.socketpair()
    return ctx.sources.socket.stream(a, _nothing), b


def _stream_state(s: Stream) -> object:
    return (
        s.reading,
        s.closed,
        s.closing,
        s.write_buffer_size,
        s.writing_paused,
        s.at_eof,
        s.fileno(),
        s in s._source.open_objects,
    )


def _start(ctx: AioContext, peers: Peers) -> Setup:
    accepted: list[Stream] = []
    ctx.sources.socket.listen(("127.0.0.1", 0), accepted.append)
    listener = ctx.sources.socket.open_objects[-1]
    client = socket.create_connection(listener.address)
    peers.keep(client.close)
    run_until(ctx, lambda: bool(accepted), what="a connection accepted")
    s = accepted[0]
    # Refused, start() must not count as called: the home thread's call works.
    return lambda: s.start(_nothing), lambda: (_stream_state(s), s._started)


def _pause_reading(ctx: AioContext, peers: Peers) -> Setup:
    s, _b = _started_stream(ctx, peers)
    return s.pause_reading, lambda: (_stream_state(s), s._read_paused)


def _resume_reading(ctx: AioContext, peers: Peers) -> Setup:
    s, _b = _started_stream(ctx, peers)
    s.pause_reading()
    return s.resume_reading, lambda: (_stream_state(s), s._read_paused)


def _set_write_limits(ctx: AioContext, peers: Peers) -> Setup:
    s, _b = _started_stream(ctx, peers)
    return lambda: s.set_write_limits(high_water=1024), lambda: (_stream_state(s), s._high, s._low)


def _write(ctx: AioContext, peers: Peers) -> Setup:
    # The kernel would take it whole, so no handler would change; refused
    # all the same, or whether a call is allowed would depend on the peer.
    s, b = _started_stream(ctx, peers)
    return lambda: s.write(b"lost"), lambda: (_stream_state(s), peer_sees(b))


def _full_stream(ctx: AioContext, peers: Peers) -> tuple[Stream, socket.socket]:
    a, b = peers.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s = ctx.sources.socket.stream(a, _nothing)
    try:
        while True:
            s.socket.send(b"x" * 4096)  # behind the stream's back: the kernel is full
    except BlockingIOError:
        pass
    assert s.write_buffer_size == 0 and not s._reg_write
    return s, b


def _write_buffering(ctx: AioContext, peers: Peers) -> Setup:
    # The kernel takes nothing: write() must buffer and register write
    # interest.  Refused by set_fd_handler(), it used to leave the bytes
    # buffered with no write interest: they would never leave.
    s, b = _full_stream(ctx, peers)
    return lambda: s.write(b"y"), lambda: (_stream_state(s), peer_sees(b))


def _writelines(ctx: AioContext, peers: Peers) -> Setup:
    s, b = _started_stream(ctx, peers)
    return lambda: s.writelines([b"lo", b"st"]), lambda: (_stream_state(s), peer_sees(b))


def _writelines_buffering(ctx: AioContext, peers: Peers) -> Setup:
    s, b = _full_stream(ctx, peers)
    return lambda: s.writelines([b"y", b"z"]), lambda: (_stream_state(s), peer_sees(b))


def _write_eof(ctx: AioContext, peers: Peers) -> Setup:
    s, b = _started_stream(ctx, peers)
    return s.write_eof, lambda: (_stream_state(s), s._eof_pending, peer_sees(b))


def _stream_close(ctx: AioContext, peers: Peers) -> Setup:
    # Refused by set_fd_handler(), close() used to mark the stream closed and
    # close its socket with the handler still registered.
    s, b = _started_stream(ctx, peers)
    return s.close, lambda: (_stream_state(s), peer_sees(b))


def _stream_abort(ctx: AioContext, peers: Peers) -> Setup:
    s, b = _started_stream(ctx, peers)
    return s.abort, lambda: (_stream_state(s), peer_sees(b))


def _listener_close(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.socket
    listener = src.listen(("127.0.0.1", 0), _nothing)
    return listener.close, lambda: (listener.closed, listener.fileno(), src.open_objects)


def _udp_pair(ctx: AioContext, peers: Peers) -> tuple[Any, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peers.keep(receiver.close)
    receiver.bind(("127.0.0.1", 0))
    d = ctx.sources.socket.datagram(_nothing, remote_address=receiver.getsockname())
    return d, receiver


def _send(ctx: AioContext, peers: Peers) -> Setup:
    d, receiver = _udp_pair(ctx, peers)
    return lambda: d.send(b"lost"), lambda: (d.sent, d.queued, d.closed, peer_sees(receiver))


def _send_queueing(ctx: AioContext, peers: Peers) -> Setup:
    # The receiver's queue is full: send() must queue and register write
    # interest.  Refused by set_fd_handler(), it used to leave the datagram
    # queued with no write interest.
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peers.keep(receiver.close)
    recv_path = str(peers.tmp_path / "recv.sock")
    receiver.bind(recv_path)
    d = ctx.sources.socket.datagram(
        _nothing, local_address=str(peers.tmp_path / "send.sock"), remote_address=recv_path
    )
    try:
        while True:
            d.socket.send(b"x" * 512)  # behind the source's back: the receiver is full
    except BlockingIOError:
        pass
    return lambda: d.send(b"y"), lambda: (d.sent, d.queued, d.closed)


def _datagram_close(ctx: AioContext, peers: Peers) -> Setup:
    d, _receiver = _udp_pair(ctx, peers)
    src = ctx.sources.socket
    return d.close, lambda: (d.closed, d.fileno(), src.open_objects)


# -- the timer source ------------------------------------------------------------


def _timer_cases() -> list[Case]:
    cases = []
    for mechanism in ("timerfd", "timer-list"):
        needs = "timerfd" if mechanism == "timerfd" else None

        def after(ctx: AioContext, peers: Peers, m: str = mechanism) -> Setup:
            src = ctx.sources.timer
            return lambda: src.after(10**9, _nothing, mechanism=m), lambda: src.timers

        def at(ctx: AioContext, peers: Peers, m: str = mechanism) -> Setup:
            src = ctx.sources.timer
            deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 10**9
            return lambda: src.at(deadline, _nothing, mechanism=m), lambda: src.timers

        def periodic(ctx: AioContext, peers: Peers, m: str = mechanism) -> Setup:
            src = ctx.sources.timer
            return lambda: src.periodic(10**9, _nothing, mechanism=m), lambda: src.timers

        def cancel(ctx: AioContext, peers: Peers, m: str = mechanism) -> Setup:
            # Refused by set_fd_handler(), cancel() used to mark the timer
            # inactive and close its timerfd with the handler still registered.
            src = ctx.sources.timer
            t = src.periodic(10**9, _nothing, mechanism=m)
            fd = t.fileno() if m == "timerfd" else None
            return t.cancel, lambda: (t.active, src.timers, fd and t.fileno())

        cases += [
            Case(f"timer.after[{mechanism}]", "after", after, needs),
            Case(f"timer.at[{mechanism}]", "at", at, needs),
            Case(f"timer.periodic[{mechanism}]", "periodic", periodic, needs),
            Case(f"TimerHandle.cancel[{mechanism}]", "cancel", cancel, needs),
        ]
    return cases


# -- the notifier and shmring sources ----------------------------------------------


def _new(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.notifier
    return lambda: src.new(_nothing), lambda: src.wakeups


def _wakeup_close(ctx: AioContext, peers: Peers) -> Setup:
    # Refused by set_fd_handler(), close() used to mark the wake-up closed and
    # close its notifier with the handler still registered.
    src = ctx.sources.notifier
    w = src.new(_nothing)
    fd = w.fileno()
    return w.close, lambda: (w.closed, src.wakeups, not w.closed and w.fileno() == fd)


def _ring(peers: Peers) -> ShmRing:
    ring = ShmRing(capacity=8)
    peers.keep(ring.close)  # after the context closed, which detaches it
    return ring


def _attach(ctx: AioContext, peers: Peers) -> Setup:
    src = ctx.sources.shmring
    ring = _ring(peers)
    return lambda: src.attach(ring, _nothing), lambda: (src.attachments, ring._attached_pid)


def _detach(ctx: AioContext, peers: Peers) -> Setup:
    # Refused by set_event_notifier(), detach() used to forget the ring with
    # its handler still registered.
    src = ctx.sources.shmring
    ring = _ring(peers)
    attachment = src.attach(ring, _nothing)
    return attachment.detach, lambda: (
        attachment.ring is ring,
        src.attachments,
        ring._attached_pid,
        ring.consumer_polling,
    )


CASES = [
    Case("socket.listen", "listen", _listen),
    Case("socket.listen[adopting a socket]", "listen", _listen_adopting),
    Case("socket.connect", "connect", _connect),
    Case("socket.stream", "stream", _stream),
    Case("socket.datagram", "datagram", _datagram),
    Case("Stream.start", "start", _start),
    Case("Stream.pause_reading", "pause_reading", _pause_reading),
    Case("Stream.resume_reading", "resume_reading", _resume_reading),
    Case("Stream.set_write_limits", "set_write_limits", _set_write_limits),
    Case("Stream.write", "write", _write),
    Case("Stream.write[must buffer]", "write", _write_buffering),
    Case("Stream.writelines", "writelines", _writelines),
    Case("Stream.writelines[must buffer]", "writelines", _writelines_buffering),
    Case("Stream.write_eof", "write_eof", _write_eof),
    Case("Stream.close", "close", _stream_close),
    Case("Stream.abort", "abort", _stream_abort),
    Case("Listener.close", "close", _listener_close),
    Case("Datagram.send", "send", _send),
    Case("Datagram.send[must queue]", "send", _send_queueing, "unix"),
    Case("Datagram.close", "close", _datagram_close),
    *_timer_cases(),
    Case("notifier.new", "new", _new),
    Case("Wakeup.close", "close", _wakeup_close),
    Case("shmring.attach", "attach", _attach, "shmring"),
    Case("RingAttachment.detach", "detach", _detach, "shmring"),
]


def _skip_unless_possible(case: Case) -> None:
    if case.needs == "unix" and not HAS_UNIX:
        pytest.skip("no Unix-domain sockets here")
    if case.needs == "timerfd" and (reason := timerfd_unavailable_reason()) is not None:
        pytest.skip(reason)
    if case.needs == "shmring" and (reason := shmring_unavailable_reason()) is not None:
        pytest.skip(reason)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    p = Peers(tmp_path)
    yield p
    p.close()


def _everything(ctx: AioContext, state: Callable[[], object]) -> object:
    """The handler records (by identity), the open fds, and the object's own state."""
    return dict(ctx._table.nodes), open_fds(), state()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_from_another_thread_by_name_changing_nothing(
    no_fd_leak: None, ctx: AioContext, peers: Peers, case: Case
) -> None:
    _skip_unless_possible(case)
    try:
        call, state = case.setup(ctx, peers)
        before = _everything(ctx, state)
        exc = in_other_thread(call)
        assert type(exc) is RuntimeError, f"{case.method}() from another thread gave {exc!r}"
        assert str(exc) == WRONG_THREAD.format(case.method)
        del exc  # its traceback holds the frames of the refused call
        assert _everything(ctx, state) == before, "the refused call changed something"
        call()  # the home thread may, and finds nothing half done
    finally:
        ctx.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_allowed_from_another_thread_holding_acquire(
    no_fd_leak: None, ctx: AioContext, peers: Peers, case: Case
) -> None:
    _skip_unless_possible(case)
    try:
        call, _state = case.setup(ctx, peers)
        assert in_other_thread(call, holding=ctx) is None
    finally:
        ctx.close()


def test_a_closed_context_is_reported_as_closed_from_any_thread(
    no_fd_leak: None, ctx: AioContext
) -> None:
    """A closed context has no home thread: the error says it is closed, not the thread."""
    socket_source, timer_source = ctx.sources.socket, ctx.sources.timer
    notifier_source = ctx.sources.notifier
    ctx.close()
    for call in (
        lambda: socket_source.listen(("127.0.0.1", 0), _nothing),
        lambda: timer_source.after(0, _nothing),
        lambda: notifier_source.new(_nothing),
    ):
        exc = in_other_thread(call)
        assert isinstance(exc, RuntimeError)
        assert "closed" in str(exc) and "thread" not in str(exc), exc
