"""The ``notifier`` source: wake-ups from another thread and another process.

Both notifier kinds run on Linux (eventfd and pipe), on every backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from aiocore_plugins.notifier_source import WAKE_BYTES, Wakeup, wake

from aiocore import AioContext
from tests.conftest import fork

from ._helpers import poll_for, run_until

KINDS = ["eventfd", "pipe"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "eventfd" and not hasattr(os, "eventfd"):
        pytest.skip("eventfd is Linux-only")
    return name


def test_set_from_home_thread_calls_back_once(no_fd_leak: None, ctx: AioContext, kind: str) -> None:
    calls: list[int] = []
    w = ctx.sources.notifier.new(lambda: calls.append(1), kind=kind)
    assert isinstance(w, Wakeup)
    assert w.kind == kind
    ctx.poll(False)  # consumes the registration's notify
    w.set()
    w.set()  # coalesces
    run_until(ctx, lambda: bool(calls))
    poll_for(ctx, 0.05)
    assert calls == [1]
    assert w.wakeups == 1
    fd = w.fileno()
    assert fd in ctx.handler_fds()
    w.close()
    assert w.closed
    w.close()  # idempotent
    assert fd not in ctx.handler_fds()


def test_woken_from_another_thread(no_fd_leak: None, ctx: AioContext, kind: str) -> None:
    calls: list[float] = []
    w = ctx.sources.notifier.new(lambda: calls.append(time.monotonic()), kind=kind)
    ctx.poll(False)
    t = threading.Timer(0.05, w.set)
    start = time.monotonic()
    t.start()
    try:
        # The guard is 5 s: only the wake-up can end the wait sooner.
        run_until(ctx, lambda: bool(calls), timeout=10, guard_ms=5000)
    finally:
        t.join(5)
    assert calls
    assert calls[0] - start < 2.5


def test_many_sets_from_threads_lose_no_wakeup(ctx: AioContext, kind: str) -> None:
    """Each round: a thread sets once; the callback must run for every round."""
    calls = 0

    def cb() -> None:
        nonlocal calls
        calls += 1

    w = ctx.sources.notifier.new(cb, kind=kind)
    ctx.poll(False)
    for i in range(50):
        t = threading.Thread(target=w.set)
        t.start()
        run_until(ctx, lambda i=i: calls > i, timeout=5)  # type: ignore[misc]
        t.join(5)
    assert calls == 50


def test_woken_from_a_forked_child(no_fd_leak: None, ctx: AioContext, kind: str) -> None:
    calls: list[int] = []
    w = ctx.sources.notifier.new(lambda: calls.append(1), kind=kind)
    ctx.poll(False)
    fd = w.write_fileno()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            time.sleep(0.05)
            wake(fd)
        finally:
            os._exit(0)
    try:
        run_until(ctx, lambda: bool(calls), timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert calls == [1]


def test_woken_from_a_subprocess_with_pass_fds(
    no_fd_leak: None, ctx: AioContext, kind: str
) -> None:
    calls: list[int] = []
    w = ctx.sources.notifier.new(lambda: calls.append(1), kind=kind)
    ctx.poll(False)
    fd = w.write_fileno()
    # The child knows nothing of aiocore: 8 bytes on the inherited fd.
    code = f"import os, time; time.sleep(0.05); os.write({fd}, {WAKE_BYTES!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[fd])
    try:
        run_until(ctx, lambda: bool(calls), timeout=10)
    finally:
        assert proc.wait(timeout=10) == 0
    assert calls == [1]


def test_write_fileno_is_the_eventfd_itself_or_the_pipes_write_end(ctx: AioContext) -> None:
    if hasattr(os, "eventfd"):
        e = ctx.sources.notifier.new(lambda: None, kind="eventfd")
        assert e.write_fileno() == e.fileno()
    p = ctx.sources.notifier.new(lambda: None, kind="pipe")
    assert p.write_fileno() != p.fileno()


def test_closed_with_the_context(no_fd_leak: None, backend: str, registry: Any) -> None:
    ctx = AioContext(backend=backend, registry=registry)
    w = ctx.sources.notifier.new(lambda: None)
    ctx.close()
    assert w.closed
    with pytest.raises(RuntimeError, match="closed"):
        w.set()


def test_close_closes_every_wakeup_when_one_removal_raises(
    no_fd_leak: None, backend: str, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal that raises (e.g. the thread check) stops no other wake-up's close.

    close() used to stop at the first wake-up that raised; the others kept
    their fds until the garbage collector found them.  Now every wake-up is
    closed, each closes its notifier, and the first error is raised at the end.
    """
    from aiocore.testing import open_fds

    before = open_fds()
    ctx = AioContext(backend=backend, registry=registry)
    source = ctx.sources.notifier
    kinds = ["pipe", "pipe", "eventfd" if hasattr(os, "eventfd") else "pipe"]
    wakeups = [source.new(lambda: None, kind=k) for k in kinds]
    real = ctx.set_event_notifier

    def removal_fails(notifier: Any, io_read: Any = None, *args: Any, **kw: Any) -> None:
        if io_read is None:
            raise RuntimeError(f"cannot remove {notifier.fileno()}")
        real(notifier, io_read, *args, **kw)

    monkeypatch.setattr(ctx, "set_event_notifier", removal_fails)
    newest = wakeups[-1].fileno()
    with pytest.raises(RuntimeError, match=f"cannot remove {newest}$"):
        ctx.close()
    assert ctx.closed
    # Checked at once, with every wake-up still referenced: no fd is left.
    assert [w.closed for w in wakeups] == [True] * 3
    assert source.wakeups == []
    assert not (open_fds() - before), "a notifier fd stayed open"


def test_bad_inputs_change_nothing(no_fd_leak: None, ctx: AioContext) -> None:
    with pytest.raises(TypeError, match="callback must be a callable, got int"):
        ctx.sources.notifier.new(42)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="unknown notifier kind 'nope'; known kinds: eventfd, pipe"
    ):
        ctx.sources.notifier.new(lambda: None, kind="nope")
    with pytest.raises(TypeError, match="kind must be a str"):
        ctx.sources.notifier.new(lambda: None, kind=3)  # type: ignore[arg-type]
    assert ctx.sources.notifier.wakeups == []
    assert ctx.handler_fds() == []
    with pytest.raises(TypeError, match="fd must be an int"):
        wake("3")  # type: ignore[arg-type]


def test_callback_exception_goes_to_the_handler_and_the_wakeup_keeps_working(
    ctx: AioContext,
) -> None:
    seen: list[BaseException] = []
    ctx.set_exception_handler(lambda _c, e: seen.append(e))
    calls = 0

    def cb() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")

    w = ctx.sources.notifier.new(cb)
    w.set()
    run_until(ctx, lambda: calls == 1)
    assert [type(e) for e in seen] == [ValueError]
    w.set()
    run_until(ctx, lambda: calls == 2)
