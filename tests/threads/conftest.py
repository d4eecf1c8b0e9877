"""Fixtures of the thread tests (on top of ``tests/conftest.py``).

* ``plain``: a context on the default backend, for tests where the backend
  is beside the point; its exception handler records what it gets in
  ``ctx.errors`` (and does not re-raise).
* ``iothreads``: make started :class:`aiocore.IOThread` objects on the
  session registry; every one still running at teardown is stopped (with a
  timeout, so a wedged thread fails the test instead of hanging the suite).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import aiocore


@pytest.fixture
def plain(registry: aiocore.PluginRegistry) -> Iterator[aiocore.AioContext]:
    ctx = aiocore.AioContext(registry=registry)
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, exc: errors.append(exc))
    ctx.errors = errors  # type: ignore[attr-defined]
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def iothreads(registry: aiocore.PluginRegistry) -> Iterator[Callable[..., aiocore.IOThread]]:
    made: list[aiocore.IOThread] = []

    def make(**kwargs: Any) -> aiocore.IOThread:
        kwargs.setdefault("registry", registry)
        io = aiocore.IOThread(**kwargs)
        made.append(io)
        io.start()
        return io

    yield make
    errors = []
    for io in made:
        try:
            io.stop(timeout=10)
        except Exception as exc:
            errors.append(exc)
    assert not errors, errors
