"""The poll backend on its own: a change made by another thread during ``wait()``.

The kernel polls the ``pollfd`` array that ``poll(2)`` started with, so when
another thread (holding ``ctx.acquire()``) removes and closes a watched fd
during the call, the kernel reports POLLNVAL for the *old* entry.  The
backend must neither raise on it (``unregister()`` of an fd it no longer has)
nor pin it on a new registration that reused the fd number.

Each test waits until the home thread really sits in the ``poll`` system
call (``/proc/self/task/<tid>/syscall``) before the other thread acts, so the
interleaving is the one under test, not a likely one.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiocore_plugins.poll import PollBackend

from aiocore.backend import EVENT_IN, EVENT_NVAL, BackendSetup

pytestmark = pytest.mark.skipif(
    not hasattr(select, "poll") or not Path("/proc/self/task").is_dir(),
    reason="needs select.poll and Linux's /proc/self/task/<tid>/syscall",
)

#: x86-64 and i386/arm64 numbers of poll and ppoll (the generic table has only ppoll).
_POLL_SYSCALLS = {"7", "271", "168", "309", "73"}


def _no_open(name: str) -> Any:  # pragma: no cover - the poll backend opens none
    raise LookupError(name)


@pytest.fixture
def backend() -> Iterator[PollBackend]:
    b = PollBackend(BackendSetup(options={}, open=_no_open, log=lambda _m: None))
    yield b
    b.close()


def _in_poll(tid: int) -> bool:
    try:
        text = Path(f"/proc/self/task/{tid}/syscall").read_text()
    except OSError:
        return False
    return text.split(" ", 1)[0] in _POLL_SYSCALLS


def _while_waiting(backend: PollBackend, act: Callable[[], None]) -> list[tuple[int, int]]:
    """Run *act* in another thread once this thread is inside poll(2); return the wait's events."""
    home = threading.get_native_id()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            deadline = time.monotonic() + 10
            while not _in_poll(home):
                if time.monotonic() > deadline:
                    raise AssertionError("the home thread never entered poll(2)")
                time.sleep(0.001)
            act()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    try:
        events: list[tuple[int, int]] = backend.wait(20 * 10**9)
    finally:
        t.join(10)
    if errors:
        raise errors[0]
    return events


def test_an_fd_removed_and_closed_during_the_wait_is_not_reported(backend: PollBackend) -> None:
    wake_r, wake_w = os.pipe()
    r, w = os.pipe()
    try:
        backend.update(wake_r, 0, EVENT_IN)
        backend.update(r, 0, EVENT_IN)

        def remove_and_close() -> None:
            backend.update(r, EVENT_IN, 0)  # set_fd_handler(r, None)
            os.close(r)  # (w stays open: closing it would end the wait with a HUP)
            os.write(wake_w, b"!")  # notify(): the stale entry is now POLLNVAL

        events = _while_waiting(backend, remove_and_close)  # raised KeyError before
        assert all(fd != r for fd, _ in events)
        assert (wake_r, EVENT_IN) in events
        assert backend.statistics()["dropped_closed_fds"] == []
    finally:
        for fd in (wake_r, wake_w, w):
            os.close(fd)


def test_a_reused_fd_number_registered_during_the_wait_keeps_its_handler(
    backend: PollBackend,
) -> None:
    wake_r, wake_w = os.pipe()
    r, w = os.pipe()
    made: list[int] = []
    try:
        backend.update(wake_r, 0, EVENT_IN)
        backend.update(r, 0, EVENT_IN)

        def remove_close_reuse() -> None:
            backend.update(r, EVENT_IN, 0)
            os.close(r)  # (w stays open: closing it would end the wait with a HUP)
            os.write(wake_w, b"!")  # the stale entry is now reported POLLNVAL
            r2, w2 = os.pipe()
            made.extend((r2, w2))
            assert r2 == r, "the lowest free number is reused"
            os.write(w2, b"data")
            backend.update(r2, 0, EVENT_IN)

        events = _while_waiting(backend, remove_close_reuse)
        assert not any(fd == r and mask & EVENT_NVAL for fd, mask in events)
        os.read(wake_r, 16)
        # The new pipe on the old number is watched and readable: the stale
        # POLLNVAL was not pinned on it.
        assert backend.wait(0) == [(r, EVENT_IN)]
        assert backend.statistics()["dropped_closed_fds"] == []
    finally:
        for fd in (wake_r, wake_w, w, *made):
            os.close(fd)
