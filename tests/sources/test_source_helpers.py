"""The helpers aiocore gives source plugins: :func:`aiocore.check_home_thread`.

The sources' own use of it is checked method by method in
``test_wrong_thread.py``; here, the helper's contract.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from aiocore import AioContext, check_home_thread

from .test_wrong_thread import WRONG_THREAD, in_other_thread


def test_check_home_thread_passes_in_the_home_thread(ctx: AioContext) -> None:
    assert check_home_thread(ctx, "listen") is None


def test_check_home_thread_refuses_another_thread_naming_the_method(ctx: AioContext) -> None:
    exc = in_other_thread(lambda: check_home_thread(ctx, "listen"))
    assert type(exc) is RuntimeError
    assert str(exc) == WRONG_THREAD.format("listen")


def test_check_home_thread_says_what_set_fd_handler_says(ctx: AioContext) -> None:
    """One rule and one wording: the core's, with the method's name."""
    r, w = os.pipe()
    try:
        core = in_other_thread(lambda: ctx.set_fd_handler(r, print))
        ours = in_other_thread(lambda: check_home_thread(ctx, "set_fd_handler"))
        assert type(core) is type(ours) is RuntimeError
        assert str(core) == str(ours)
    finally:
        os.close(r)
        os.close(w)


def test_check_home_thread_passes_another_thread_holding_acquire(ctx: AioContext) -> None:
    assert in_other_thread(lambda: check_home_thread(ctx, "listen"), holding=ctx) is None
    # Released again: refused again.
    assert type(in_other_thread(lambda: check_home_thread(ctx, "listen"))) is RuntimeError


def test_check_home_thread_refuses_while_another_thread_holds_acquire(ctx: AioContext) -> None:
    """Holding the lock is what counts, not that somebody holds it."""
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        ctx.acquire()
        try:
            held.set()
            done.wait(10)
        finally:
            ctx.release()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        exc = in_other_thread(lambda: check_home_thread(ctx, "after"))
        assert str(exc) == WRONG_THREAD.format("after")
    finally:
        done.set()
        t.join(10)


def test_check_home_thread_passes_a_closed_context_from_any_thread(
    backend: str, registry: Any
) -> None:
    """A closed context has no home thread; the caller reports it closed."""
    ctx = AioContext(backend=backend, registry=registry)
    ctx.close()
    assert check_home_thread(ctx, "listen") is None
    assert in_other_thread(lambda: check_home_thread(ctx, "listen")) is None


@pytest.mark.parametrize("bad", [None, object(), "ctx", 42])
def test_check_home_thread_refuses_what_is_not_a_context(bad: object) -> None:
    for exc in (
        _raised(lambda: check_home_thread(bad, "listen")),  # type: ignore[arg-type]
        in_other_thread(lambda: check_home_thread(bad, "listen")),  # type: ignore[arg-type]
    ):
        assert type(exc) is TypeError
        assert str(exc).startswith(f"ctx must be an AioContext, got {type(bad).__name__}")


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (None, TypeError, "what must be a str (a method name), got NoneType None"),
        (b"listen", TypeError, "what must be a str (a method name), got bytes b'listen'"),
        ("", ValueError, "what must name the method called, got an empty str"),
    ],
)
def test_check_home_thread_refuses_a_bad_name_when_it_needs_it(
    ctx: AioContext, bad: object, error: type[Exception], message: str
) -> None:
    """The name is read only to build the message (the permitted path is hot)."""
    assert check_home_thread(ctx, bad) is None  # type: ignore[arg-type]
    exc = in_other_thread(lambda: check_home_thread(ctx, bad))  # type: ignore[arg-type]
    assert type(exc) is error
    assert str(exc) == message


def test_check_home_thread_is_exported() -> None:
    import aiocore

    assert "check_home_thread" in aiocore.__all__
    assert aiocore.check_home_thread is check_home_thread


def _raised(fn: Any) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:
        return exc
    return None
