"""Fixtures of the thread tests (on top of ``tests/conftest.py``).

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
