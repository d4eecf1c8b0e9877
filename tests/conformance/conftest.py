"""Fixtures of the conformance suite (on top of ``tests/conftest.py``).

* ``pairs``: make non-blocking socketpairs; at teardown their handlers are
  removed from ``ctx`` (if still open) before the sockets are closed, so no
  test ends with an fd closed while registered.
* ``spy``: a :class:`~tests.conformance._support.WaitSpy` on ``ctx``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from aiocore import AioContext

from ._support import Pair, WaitSpy


@pytest.fixture
def pairs(ctx: AioContext) -> Iterator[Callable[[], Pair]]:
    made: list[Pair] = []

    def make() -> Pair:
        pair = Pair()
        made.append(pair)
        return pair

    yield make
    for pair in made:
        if not ctx.closed:
            for fd in (pair.a, pair.b):
                if fd in ctx.handler_fds():
                    ctx.set_exception_handler(lambda _c, _e: None)
                    ctx.set_fd_handler(fd, None)
        pair.close()


@pytest.fixture
def pair(pairs: Callable[[], Pair]) -> Pair:
    return pairs()


@pytest.fixture
def spy(ctx: AioContext) -> Iterator[WaitSpy]:
    s = WaitSpy(ctx)
    yield s
    if not ctx.closed:
        s.restore()
