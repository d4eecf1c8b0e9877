"""A source's ``close()`` releases every handle even when closing one raises.

The timer and notifier sources have their own tests of it
(``test_close_cancels_every_timer_when_one_removal_raises``,
``test_close_closes_every_wakeup_when_one_removal_raises``); these cover the
socket and shmring sources, and the shared helper they all use,
:func:`aiocore.close_newest_first`.

A removal is made to raise by replacing the context's ``set_fd_handler``
for the removals of chosen fds; every handle must still be closed (each
closes its socket in a ``finally`` after removing its handler), newest
first, and the first error raised once all were tried.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiocore_plugins.shmring_source import ShmRing, shmring_unavailable_reason

from aiocore import AioContext, close_newest_first
from aiocore.testing import open_fds


class Interrupt(BaseException):
    """Not an ``Exception``: what a ``KeyboardInterrupt`` would be."""


def _nothing(*_args: object) -> None:
    pass


@pytest.fixture
def poll_ctx(registry: Any) -> Iterator[AioContext]:
    """A context on poll: the backend plays no part here."""
    with AioContext(backend="poll", registry=registry) as ctx:
        yield ctx


def _make_removals_raise(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch, raising: dict[int, BaseException]
) -> None:
    real = ctx.set_fd_handler

    def set_fd_handler(
        fd: Any, io_read: Any = None, io_write: Any = None, io_poll: Any = None, *a: Any, **kw: Any
    ) -> None:
        if io_read is None and io_write is None and io_poll is None and fd in raising:
            raise raising[fd]
        real(fd, io_read, io_write, io_poll, *a, **kw)

    monkeypatch.setattr(ctx, "set_fd_handler", set_fd_handler)


def _assert_all_closed(
    ctx: AioContext, handles: list[Any], before: set[int], peer: socket.socket
) -> None:
    """Every handle closed, none left open in the source, no fd left but the peer's."""
    assert [h.closed for h in handles] == [True] * len(handles)
    assert ctx.sources.socket.open_objects == []
    assert open_fds() - before == {peer.fileno()}, "a socket stayed open"


def _socket_handles(ctx: AioContext) -> tuple[list[Any], socket.socket]:
    """A listener, a stream, a datagram socket and a second stream, oldest first."""
    src = ctx.sources.socket
    a, peer = socket.socketpair()
    c, d = socket.socketpair()
    d.close()  # c's stream reads end of file later; it is open until then
    handles = [
        src.listen(("127.0.0.1", 0), _nothing),
        src.stream(a, _nothing),
        src.datagram(_nothing, local_address=("127.0.0.1", 0)),
        src.stream(c, _nothing),
    ]
    assert src.open_objects == handles
    return handles, peer


def test_socket_source_close_closes_every_socket_when_one_removal_raises(
    no_fd_leak: None, poll_ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = poll_ctx
    before = open_fds()
    handles, peer = _socket_handles(ctx)
    try:
        listener, _stream, datagram, _newest = handles
        _make_removals_raise(
            ctx,
            monkeypatch,
            {
                listener.fd: RuntimeError(f"cannot remove fd {listener.fd}"),
                datagram.fd: RuntimeError(f"cannot remove fd {datagram.fd}"),
            },
        )
        # Newest first: the datagram socket's error is met first, and raised.
        with pytest.raises(RuntimeError, match=f"^cannot remove fd {datagram.fd}$"):
            ctx.sources.socket.close()
        # Checked at once, with every handle still referenced: nothing is left.
        _assert_all_closed(ctx, handles, before, peer)
    finally:
        peer.close()


def test_socket_source_close_goes_on_after_a_base_exception(
    no_fd_leak: None, poll_ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only an ``Exception``: a ``KeyboardInterrupt`` while closing one too.

    The socket source caught only ``Exception`` (the timer and notifier
    sources every ``BaseException``): an interrupt during one socket's close
    left every older socket open.  It now waits until all were closed.
    """
    ctx = poll_ctx
    before = open_fds()
    handles, peer = _socket_handles(ctx)
    try:
        stream = handles[1]
        _make_removals_raise(ctx, monkeypatch, {stream.fd: Interrupt("while closing")})
        with pytest.raises(Interrupt, match=r"^while closing$"):
            ctx.sources.socket.close()
        _assert_all_closed(ctx, handles, before, peer)
    finally:
        peer.close()


@pytest.mark.skipif(
    shmring_unavailable_reason() is not None, reason=str(shmring_unavailable_reason())
)
def test_shmring_source_close_detaches_every_ring_when_one_removal_raises(
    no_fd_leak: None, poll_ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() used to stop at the first ring whose detach raised.

    The older rings stayed attached: their handlers registered, and each
    ring refusing close() ("attached to a context: detach it before
    closing") in the process that attached it.
    """
    ctx = poll_ctx
    rings = [ShmRing(capacity=4) for _ in range(3)]
    try:
        src = ctx.sources.shmring
        attachments = [src.attach(r, _nothing) for r in rings]
        failing = rings[1].notifier
        real = ctx.set_event_notifier

        def set_event_notifier(notifier: Any, io_read: Any, *a: Any, **kw: Any) -> None:
            if notifier is failing and io_read is None:
                raise RuntimeError("cannot remove the middle ring")
            real(notifier, io_read, *a, **kw)

        monkeypatch.setattr(ctx, "set_event_notifier", set_event_notifier)
        with pytest.raises(RuntimeError, match=r"^cannot remove the middle ring$"):
            src.close()
        assert [a.ring for a in attachments] == [None, None, None]
        assert src.attachments == []
        handlers = ctx.handler_fds()
        assert rings[0].notifier.fileno() not in handlers
        assert rings[2].notifier.fileno() not in handlers
        monkeypatch.undo()
    finally:
        ctx.close()
        for r in rings:
            r.close()  # refused for a ring still attached


# -- the helper ------------------------------------------------------------------


class Handle:
    def __init__(self, name: str, log: list[str], error: BaseException | None = None) -> None:
        self.name, self.log, self.error = name, log, error

    def close(self) -> None:
        self.log.append(self.name)
        if self.error is not None:
            raise self.error


def test_close_newest_first_closes_in_reverse_order() -> None:
    log: list[str] = []
    close_newest_first([Handle(n, log) for n in "abc"], Handle.close)
    assert log == ["c", "b", "a"]


def test_close_newest_first_tries_every_handle_and_raises_the_first_error() -> None:
    log: list[str] = []
    first, second = ValueError("from c"), OSError("from a")
    handles = [Handle("a", log, second), Handle("b", log), Handle("c", log, first)]
    with pytest.raises(ValueError, match=r"^from c$") as info:
        close_newest_first(handles, Handle.close)
    assert info.value is first
    assert log == ["c", "b", "a"]


def test_close_newest_first_goes_on_after_a_base_exception() -> None:
    log: list[str] = []
    handles = [Handle("a", log), Handle("b", log, Interrupt("in b")), Handle("c", log)]
    with pytest.raises(Interrupt, match=r"^in b$"):
        close_newest_first(handles, Handle.close)
    assert log == ["c", "b", "a"]


def test_close_newest_first_reads_the_handles_once_before_closing() -> None:
    """A handle may remove itself from the collection it came from."""
    made: dict[str, None] = dict.fromkeys("abc")
    log: list[str] = []

    def close(name: str) -> None:
        del made[name]
        log.append(name)

    close_newest_first(made, close)
    assert log == ["c", "b", "a"] and made == {}


def test_close_newest_first_with_nothing_to_close() -> None:
    close_newest_first([], Handle.close)


@pytest.mark.parametrize(
    ("handles", "close", "message"),
    [
        ([], None, "close must be a callable, got NoneType None"),
        ([], "close", "close must be a callable, got str 'close'"),
        (42, Handle.close, "handles must be an iterable, got int 42"),
        (None, Handle.close, "handles must be an iterable, got NoneType None"),
    ],
)
def test_close_newest_first_refuses_bad_arguments(handles: Any, close: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        close_newest_first(handles, close)
    assert str(info.value) == message


def test_close_newest_first_is_exported() -> None:
    import aiocore

    assert "close_newest_first" in aiocore.__all__
    assert aiocore.close_newest_first is close_newest_first
