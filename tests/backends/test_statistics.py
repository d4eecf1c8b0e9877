"""``statistics()["fds"]`` on every backend: what is registered as of the last change.

A conformance check run on each backend the suite knows (the ``ctx``
fixture): right after each ``set_fd_handler`` -- no ``poll()`` in between --
the count is the number of handlers plus the context's own notifier, so it
is the same number on every backend.  A backend that batches changes into
its next wait (io_uring, kqueue) counts them when they are made, not when
they are submitted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiocore import AioContext

from ..conformance._support import Pair

N = 5


def _noop(_opaque: object) -> None:
    pass


def _fds(ctx: AioContext) -> object:
    return ctx.backend_statistics()["fds"]


@pytest.fixture
def five(ctx: AioContext) -> Iterator[list[Pair]]:
    pairs = [Pair() for _ in range(N)]
    yield pairs
    for p in pairs:
        if not ctx.closed and p.a in ctx.handler_fds():
            ctx.set_fd_handler(p.a, None)
        p.close()


def test_fds_counts_each_change_before_the_next_wait(ctx: AioContext, five: list[Pair]) -> None:
    """Found by audit: io_uring counted what its last wait had submitted, one
    wait behind (0 after five adds, 6 after five removes)."""
    assert _fds(ctx) == 1  # the context's notifier
    for i, p in enumerate(five, 1):
        ctx.set_fd_handler(p.a, _noop)
        assert _fds(ctx) == 1 + i
    ctx.poll(False)
    assert _fds(ctx) == 1 + N
    # A change is not a new fd.
    ctx.set_fd_handler(five[0].a, _noop, _noop)
    assert _fds(ctx) == 1 + N
    for i, p in enumerate(five, 1):
        ctx.set_fd_handler(p.a, None)
        assert _fds(ctx) == 1 + N - i
    ctx.poll(False)
    assert _fds(ctx) == 1


def test_fds_follows_disabled_external_clients(ctx: AioContext, five: list[Pair]) -> None:
    """Pausing external clients takes their fds out of the backend at once."""
    for p in five[:2]:
        ctx.set_fd_handler(p.a, _noop, is_external=True)
    for p in five[2:]:
        ctx.set_fd_handler(p.a, _noop)
    assert _fds(ctx) == 1 + N
    ctx.disable_external()
    assert _fds(ctx) == 1 + N - 2
    ctx.enable_external()
    assert _fds(ctx) == 1 + N
