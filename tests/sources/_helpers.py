"""Helpers for the source tests: bounded loops, never a hang.

:func:`run_until` polls a context until a predicate holds, bounded in time
and in the number of polls, with a guard timer re-armed before each blocking
poll so that a missing wake-up turns into a failed assertion, not a hung test.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from aiocore import SCALE_MS, AioContext, Clock, clock_get_ns

#: Default bound, seconds, for one run_until().
DEADLINE_S = 10.0
#: Default bound on polls for one run_until().
MAX_POLLS = 1_000_000


def run_until(
    ctx: AioContext,
    predicate: Callable[[], bool],
    *,
    timeout: float = DEADLINE_S,
    max_polls: int = MAX_POLLS,
    guard_ms: int = 50,
    what: str = "condition",
) -> int:
    """Poll *ctx* (blocking) until *predicate()*; return the number of polls.

    Fails the test if it takes longer than *timeout* seconds or *max_polls*
    polls.  A guard timer wakes each blocking poll after *guard_ms* at most.
    """
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    deadline = time.monotonic() + timeout
    polls = 0
    try:
        while not predicate():
            if polls >= max_polls:
                pytest.fail(f"{what} not reached after {polls} polls")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not reached within {timeout} s ({polls} polls)")
            if not guard.pending:  # moving a pending guard notifies: every poll would return
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + guard_ms)
            ctx.poll(True)
            polls += 1
    finally:
        guard.delete()
    return polls


def poll_for(ctx: AioContext, seconds: float) -> None:
    """Keep polling for *seconds* (to show that nothing more happens)."""
    deadline = time.monotonic() + seconds
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    try:
        while time.monotonic() < deadline:
            if not guard.pending:
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + 10)
            ctx.poll(True)
    finally:
        guard.delete()


def ipv6_loopback_reason() -> str | None:
    """``None`` if ``::1`` can be bound here, else why not."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"cannot bind ::1: {exc}"
    return None
