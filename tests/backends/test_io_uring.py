"""io_uring-specific tests, driving :class:`IoUringBackend` directly (no core).

The conformance suite covers the contract through ``AioContext``; these tests
aim at what only io_uring has: the SQ and CQ rings filling up, completions in
flight when a handler changes, EINTR inside ``io_uring_enter``, ring setup
refused, ring fds leaking, and the closed-fd behaviour of POLL_ADD.  Every
behaviour test runs in both modes (one-shot and multishot POLL_ADD).

Skipped (with the probe's reason) where io_uring is unavailable, unless
``AIOCORE_REQUIRE_BACKENDS`` lists ``io_uring``: then they fail.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiocore_plugins import _liburing
from aiocore_plugins import io_uring as io_uring_mod
from aiocore_plugins.io_uring import IoUringBackend

from aiocore.backend import EVENT_IN, EVENT_NVAL, EVENT_OUT, BackendSetup

MS = 1_000_000
#: Upper bound for "comes back promptly" (a loaded CI machine is slow).
SLACK_S = 2.0
#: The same, as a wait timeout in nanoseconds.
LONG_NS = int(SLACK_S * 1e9)
MODES = ("off", "on")


def _required() -> bool:
    raw = os.environ.get("AIOCORE_REQUIRE_BACKENDS", "")
    return "io_uring" in {name.strip() for name in raw.split(",")}


def _no_open(name: str) -> Any:
    raise LookupError(name)


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def _io_uring_available(request: pytest.FixtureRequest) -> None:
    if request.function.__name__.startswith("test_refused"):
        return  # these simulate the unavailable case themselves
    reason = IoUringBackend.probe()
    if reason is None:
        return
    if _required():
        pytest.fail(
            f"io_uring is required here (AIOCORE_REQUIRE_BACKENDS) but unavailable: {reason}",
            pytrace=False,
        )
    pytest.skip(f"io_uring unavailable: {reason}")


Factory = Callable[..., IoUringBackend]


@pytest.fixture
def logs() -> list[str]:
    return []


@pytest.fixture
def make(logs: list[str]) -> Iterator[Factory]:
    """Build backends with the given options (defaults otherwise); close them after."""
    made: list[IoUringBackend] = []

    def factory(**options: Any) -> IoUringBackend:
        opts = {name: opt.default for name, opt in IoUringBackend.options.items()}
        opts.update(options)
        backend = IoUringBackend(BackendSetup(options=opts, open=_no_open, log=logs.append))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


@pytest.fixture(params=MODES, ids=["oneshot", "multishot"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def sockets() -> Iterator[Callable[[], tuple[socket.socket, socket.socket]]]:
    """Make non-blocking socketpairs; close whatever is still open after."""
    made: list[socket.socket] = []

    def pair() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made.extend((a, b))
        return a, b

    yield pair
    for s in made:
        s.close()


def as_dict(events: list[tuple[int, int]]) -> dict[int, int]:
    """The report as a dict, checking that no fd appears twice."""
    result = dict(events)
    assert len(result) == len(events), f"an fd was reported twice: {events}"
    return result


def wait_for(backend: IoUringBackend, fd: int, timeout_s: float = SLACK_S) -> int:
    """Wait until *fd* is reported; return its mask (fails after *timeout_s*)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = as_dict(backend.wait(50 * MS)).get(fd)
        if got:
            return got
    pytest.fail(f"fd {fd} was not reported within {timeout_s}s")


def fill(sock: socket.socket) -> None:
    """Write into *sock* until its send buffer is full."""
    chunk = b"x" * 65536
    for _ in range(10_000):
        try:
            sock.send(chunk)
        except BlockingIOError:
            return
    pytest.fail("the send buffer never filled")


def drain(sock: socket.socket) -> None:
    for _ in range(10_000):
        try:
            if not sock.recv(1 << 20):
                return
        except BlockingIOError:
            return
    pytest.fail("the socket never drained")


# -- readiness ---------------------------------------------------------------


def test_probe_and_statistics(make: Factory, mode: str) -> None:
    assert IoUringBackend.probe() is None
    backend = make(entries=8, multishot=mode)
    stats = backend.statistics()
    assert stats["mode"] == ("multishot" if mode == "on" else "one-shot")
    assert stats["sq_entries"] == 8
    assert stats["cq_entries"] == 16
    assert make(entries=8, cq_entries=64).statistics()["cq_entries"] == 64


def test_socketpair_readiness(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    assert backend.wait(0) == []
    b.send(b"x")
    assert wait_for(backend, a.fileno()) == EVENT_IN
    a.recv(1)
    assert backend.wait(0) == []


def test_completion_drained_before_the_wait_is_not_reported(
    make: Factory, sockets: Any, mode: str
) -> None:
    """Level semantics: a CQE posted between two waits, for a fd drained
    before the second, is re-checked and not reported; a fd still ready is.

    Both halves matter: without the re-check the drained fd is reported
    (a spurious ``io_read``); a re-check that dropped the completion
    instead of re-arming would lose the still-ready fd.
    """
    backend = make(multishot=mode)
    a, b = sockets()
    c, d = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    backend.update(c.fileno(), 0, EVENT_IN)
    assert backend.wait(0) == []
    for _ in range(3):
        b.send(b"x")
        d.send(b"y")
        deadline = time.monotonic() + SLACK_S
        while not backend.need_wait():  # both completions posted, unreaped
            assert time.monotonic() < deadline, "no completion was posted"
            time.sleep(0.001)
        time.sleep(0.01)
        assert a.recv(16) == b"x"  # drained before the wait
        assert as_dict(backend.wait(0)) == {c.fileno(): EVENT_IN}
        assert as_dict(backend.wait(0)) == {c.fileno(): EVENT_IN}  # still level
        assert c.recv(16) == b"y"
        assert backend.wait(0) == []
        # And a blocking wait with only a stale completion goes on waiting.
        b.send(b"x")
        time.sleep(0.01)
        assert a.recv(16) == b"x"
        start = time.monotonic()
        assert backend.wait(30 * MS) == []
        assert time.monotonic() - start >= 0.025


def test_eventfd_readiness(make: Factory, mode: str) -> None:
    if not hasattr(os, "eventfd"):
        pytest.skip("os.eventfd needs Python 3.10+ on Linux")
    backend = make(multishot=mode)
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        backend.update(efd, 0, EVENT_IN)
        assert backend.wait(0) == []
        os.eventfd_write(efd, 1)
        assert wait_for(backend, efd) == EVENT_IN
        os.eventfd_read(efd)
        assert backend.wait(0) == []
        # A thread writing wakes a blocking wait.
        timer = threading.Timer(0.05, os.eventfd_write, (efd, 1))
        timer.start()
        start = time.monotonic()
        assert as_dict(backend.wait(-1)) == {efd: EVENT_IN}
        assert time.monotonic() - start < SLACK_S
        timer.join()
        backend.update(efd, EVENT_IN, 0)
        assert backend.wait(0) == []
    finally:
        os.close(efd)


def test_level_triggered_rereport(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    b.send(b"x")
    assert wait_for(backend, a.fileno()) == EVENT_IN
    for _ in range(5):  # still readable: reported by every wait, blocking or not
        assert as_dict(backend.wait(0)) == {a.fileno(): EVENT_IN}
        assert as_dict(backend.wait(-1)) == {a.fileno(): EVENT_IN}
        assert as_dict(backend.wait(LONG_NS)) == {a.fileno(): EVENT_IN}
    a.recv(1)
    assert backend.wait(0) == []
    assert backend.wait(1 * MS) == []


def test_writable_and_both(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
    assert as_dict(backend.wait(LONG_NS)) == {a.fileno(): EVENT_OUT}
    assert as_dict(backend.wait(0)) == {a.fileno(): EVENT_OUT}
    b.send(b"x")
    assert as_dict(backend.wait(0)) == {a.fileno(): EVENT_IN | EVENT_OUT}


def test_hangup_reported(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    b.close()
    mask = wait_for(backend, a.fileno())
    assert mask & EVENT_IN  # EOF is readable; HUP may come with it
    assert as_dict(backend.wait(0))[a.fileno()] == mask


def test_mask_change_keeps_readiness(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    assert backend.wait(0) == []  # armed, not ready
    b.send(b"x")  # the armed poll completes now: its CQE is on its way
    backend.update(fd, EVENT_IN, EVENT_IN | EVENT_OUT)  # ...and is now stale
    assert as_dict(backend.wait(0)) == {fd: EVENT_IN | EVENT_OUT}
    backend.update(fd, EVENT_IN | EVENT_OUT, EVENT_OUT)
    assert as_dict(backend.wait(0)) == {fd: EVENT_OUT}
    backend.update(fd, EVENT_OUT, EVENT_IN)
    assert as_dict(backend.wait(0)) == {fd: EVENT_IN}
    assert as_dict(backend.wait(0)) == {fd: EVENT_IN}
    # Several changes before one wait: the last one counts.
    backend.update(fd, EVENT_IN, EVENT_OUT)
    backend.update(fd, EVENT_OUT, 0)
    backend.update(fd, 0, EVENT_IN)
    assert as_dict(backend.wait(0)) == {fd: EVENT_IN}


def test_removed_while_completion_in_flight(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    assert backend.wait(0) == []
    b.send(b"x")  # completes the armed POLL_ADD: a CQE for the old tag
    backend.update(fd, EVENT_IN, 0)
    assert backend.wait(0) == []
    assert backend.wait(5 * MS) == []
    assert not backend.need_wait()


def test_no_stale_report_when_fd_number_is_reused(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    assert backend.wait(0) == []
    b.send(b"x")  # the old request completes: its CQE waits in the ring
    backend.update(fd, EVENT_IN, 0)
    a.close()
    b.close()
    a2, b2 = sockets()
    if fd not in (a2.fileno(), b2.fileno()):
        pytest.skip("the kernel did not hand the fd number out again")
    new = a2 if a2.fileno() == fd else b2
    backend.update(fd, 0, EVENT_IN)  # a new, empty socket under the old number
    assert backend.wait(0) == []
    assert backend.wait(5 * MS) == []
    (b2 if new is a2 else a2).send(b"y")
    assert wait_for(backend, fd) == EVENT_IN


def test_stale_completion_never_matches_a_wrapped_tag(make: Factory, mode: str) -> None:
    """A completion left from a replaced request must not match the new tag.

    The tag sequence wraps.  Here fd *x*'s armed request completes between two
    waits and its handler is replaced (same mask) just when the sequence has
    come round to *x*'s current tag; if the new tag equalled it, the stale CQE
    would be taken for the new request and re-armed, leaving a second request
    armed that no removal cancels and that keeps the file open after close.
    """
    backend = make(multishot=mode)
    xr, xw = os.pipe()
    yr, yw = os.pipe()
    try:
        backend.update(xr, 0, EVENT_IN)
        backend.update(yr, 0, EVENT_IN)
        assert backend.wait(0) == []
        limit = io_uring_mod._SEQ_LIMIT
        x_seq = (backend._live[xr] >> io_uring_mod._SEQ_SHIFT) & (limit - 1)
        for _ in range(limit):  # replace y's handler until x's sequence number is next
            if backend._seq % (limit - 1) + 1 == x_seq:
                break
            backend.update(yr, EVENT_IN, EVENT_IN)
            backend.wait(0)
        else:
            pytest.fail("the tag sequence never came round")
        os.write(xw, b"x")  # x's request completes during the "dispatch"
        backend.update(xr, EVENT_IN, EVENT_IN)  # and x's handler is replaced
        for _ in range(3):  # still ready: reported, once per wait
            assert as_dict(backend.wait(0)) == {xr: EVENT_IN}
        os.read(xr, 1)
        backend.update(xr, EVENT_IN, 0)
        assert backend.wait(0) == []
        assert backend.wait(1 * MS) == []
        os.close(xr)
        xr = -1
        # No request may still hold the read end: the pipe has no reader now.
        with pytest.raises(BrokenPipeError):
            os.write(xw, b"y")
        assert backend._pending == {}  # every cancelled request's CQE was counted off
    finally:
        for fd in (xr, xw, yr, yw):
            if fd >= 0:
                os.close(fd)


def test_removal_then_readd_same_iteration(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    b.send(b"x")
    assert wait_for(backend, fd) == EVENT_IN
    backend.update(fd, EVENT_IN, 0)
    backend.update(fd, 0, EVENT_IN)
    assert as_dict(backend.wait(0)) == {fd: EVENT_IN}


def test_cross_thread_update_wakes_through_notifier(make: Factory, sockets: Any, mode: str) -> None:
    """update() from another thread, then a notifier write (what ctx.notify does)."""
    backend = make(multishot=mode)
    notifier_r, notifier_w = sockets()
    a, b = sockets()
    backend.update(notifier_r.fileno(), 0, EVENT_IN)
    b.send(b"x")  # a is ready, but not registered yet

    def other_thread() -> None:
        backend.update(a.fileno(), 0, EVENT_IN)
        notifier_w.send(b"!")

    timer = threading.Timer(0.05, other_thread)
    timer.start()
    first = as_dict(backend.wait(LONG_NS))
    timer.join()
    assert notifier_r.fileno() in first
    assert a.fileno() in {**first, **as_dict(backend.wait(0))}


def test_timeout_precision(make: Factory) -> None:
    backend = make()
    a, b = socket.socketpair()
    try:
        backend.update(a.fileno(), 0, EVENT_IN)
        for timeout_ns in (300_000, 2 * MS, 20 * MS):
            start = time.monotonic_ns()
            assert backend.wait(timeout_ns) == []
            elapsed = time.monotonic_ns() - start
            assert elapsed >= timeout_ns, "returned early"
            assert elapsed < timeout_ns + 500 * MS
        # Sub-millisecond timeouts are not rounded up to a millisecond.
        samples = []
        for _ in range(20):
            start = time.monotonic_ns()
            backend.wait(100_000)
            samples.append(time.monotonic_ns() - start)
        assert min(samples) >= 100_000, samples
        assert sorted(samples)[len(samples) // 2] < 900_000, samples
    finally:
        backend.update(a.fileno(), EVENT_IN, 0)
        backend.wait(0)
        a.close()
        b.close()


def test_need_wait(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    assert not backend.need_wait()
    backend.update(a.fileno(), 0, EVENT_IN)
    assert backend.need_wait()  # a change waits for submission
    assert backend.wait(0) == []
    assert not backend.need_wait()
    b.send(b"x")  # completes the armed poll: a CQE waits in the ring
    deadline = time.monotonic() + SLACK_S
    while not backend.need_wait():
        assert time.monotonic() < deadline, "the CQE never became visible"
        time.sleep(0.001)
    assert as_dict(backend.wait(0)) == {a.fileno(): EVENT_IN}
    assert backend.need_wait()  # the re-arm (or probe) waits for submission


# -- rings filling up -----------------------------------------------------------


def test_full_sq_more_changes_than_entries(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(entries=4, cq_entries=256, multishot=mode)
    pairs = [sockets() for _ in range(100)]
    for _, b in pairs[::2]:
        b.send(b"x")
    for a, _ in pairs:
        backend.update(a.fileno(), 0, EVENT_IN)
    expected = {a.fileno(): EVENT_IN for a, _ in pairs[::2]}
    assert as_dict(backend.wait(LONG_NS)) == expected
    assert backend.statistics()["full_sq_submits"]
    assert as_dict(backend.wait(0)) == expected  # still level-triggered
    for a, _ in pairs:
        backend.update(a.fileno(), EVENT_IN, 0)
    assert backend.wait(0) == []
    assert backend.wait(1 * MS) == []
    assert backend.statistics()["fds"] == 0


def test_cq_overflow(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(entries=1, multishot=mode)  # CQ of 2 entries
    pairs = [sockets() for _ in range(64)]
    for a, b in pairs:
        b.send(b"x")
        backend.update(a.fileno(), 0, EVENT_IN)
    expected = {a.fileno(): EVENT_IN for a, _ in pairs}
    for _ in range(3):
        seen: dict[int, int] = {}
        for _ in range(10):
            seen.update(as_dict(backend.wait(LONG_NS)))
            if len(seen) == len(expected):
                break
        assert seen == expected
    stats = backend.statistics()
    assert stats["overflow_flushes"], stats
    assert stats["resyncs"] == 0  # the kernel kept every CQE (IORING_FEAT_NODROP)
    for a, _ in pairs:
        drain(a)
    for _ in range(10):  # what was still queued is reported at most once more
        if not backend.wait(0):
            break
    assert backend.wait(0) == []


def test_cq_overflow_reports_the_present(make: Factory, mode: str) -> None:
    """More ready fds than the CQ holds: every wait reports exactly what is ready.

    Completions that did not fit in the ring wait in the kernel's overflow
    list; those posted before a wait (between waits, or left over by the
    previous one) must be re-checked like the ring's, not reported as fresh
    after the fd was drained.  And a wait must flush all of its own, or
    still-ready fds go unreported.  Multishot posts about two CQEs per probed
    fd, which a flush bound sized by fd count did not cover.
    """
    backend = make(entries=4, multishot=mode)  # CQ of 8
    efds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(100)]
    try:
        for fd in efds:
            backend.update(fd, 0, EVENT_IN)
        assert backend.wait(0) == []
        everything = {fd: EVENT_IN for fd in efds}
        for _ in range(2):
            for fd in efds:
                os.eventfd_write(fd, 1)  # ready between waits: CQEs overflow now
            for _ in range(3):
                assert as_dict(backend.wait(LONG_NS)) == everything
            for fd in efds:
                os.eventfd_read(fd)
            for _ in range(3):
                assert backend.wait(0) == []
            assert backend.wait(1 * MS) == []
        for fd in efds:  # ready and drained again, all between two waits
            os.eventfd_write(fd, 1)
        for fd in efds:
            os.eventfd_read(fd)
        for _ in range(3):
            assert backend.wait(0) == []
        assert backend.wait(1 * MS) == []
        assert backend.statistics()["overflow_flushes"]
    finally:
        for fd in efds:
            os.close(fd)


# -- signals --------------------------------------------------------------------


@pytest.fixture
def sigalrm_every_10ms() -> Iterator[list[int]]:
    hits: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: hits.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
    try:
        yield hits
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)


def test_eintr_timed_wait_neither_raises_nor_returns_early(
    make: Factory, sockets: Any, mode: str, sigalrm_every_10ms: list[int]
) -> None:
    backend = make(multishot=mode)
    a, _ = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    start = time.monotonic_ns()
    assert backend.wait(150 * MS) == []
    elapsed = time.monotonic_ns() - start
    assert elapsed >= 150 * MS
    assert elapsed < 150 * MS + LONG_NS
    assert len(sigalrm_every_10ms) >= 3, "no signal arrived during the wait"


def test_eintr_infinite_wait_sigusr1_from_thread(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)
    hits: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: hits.append(signum))
    main = threading.get_ident()

    def pester() -> None:
        for _ in range(5):
            time.sleep(0.01)
            signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(0.02)
        b.send(b"x")

    thread = threading.Thread(target=pester)
    try:
        thread.start()
        events = backend.wait(-1)
        thread.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert as_dict(events) == {a.fileno(): EVENT_IN}
    # Signals that arrive before Python runs the handler coalesce (and
    # liburing re-enters the kernel by itself after one EINTR): at least
    # some ran, and none ended the wait.
    assert len(hits) >= 2


def test_exception_from_signal_handler_propagates(make: Factory, sockets: Any) -> None:
    """PEP 475: a handler that raises ends the wait with its exception; the ring survives."""
    backend = make()
    a, b = sockets()
    backend.update(a.fileno(), 0, EVENT_IN)

    class Stop(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Stop

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Stop):
            backend.wait(LONG_NS)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    b.send(b"x")
    assert wait_for(backend, a.fileno()) == EVENT_IN


# -- closed fds ---------------------------------------------------------------


def test_closed_fd_while_registered_reports_nval_once(
    make: Factory, sockets: Any, mode: str
) -> None:
    backend = make(multishot=mode)
    a, b = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    b.send(b"x")
    assert wait_for(backend, fd) == EVENT_IN
    a.close()  # still registered, still "ready" as far as the kernel's poll knew
    reports = [as_dict(backend.wait(0)) for _ in range(5)]
    reports += [as_dict(backend.wait(2 * MS)) for _ in range(3)]
    nvals = [r[fd] for r in reports if fd in r]
    assert nvals == [EVENT_NVAL], reports
    assert fd in backend.statistics()["dropped_closed_fds"]  # type: ignore[operator]
    backend.update(fd, EVENT_IN, 0)  # removing it is fine
    assert backend.wait(0) == []


def test_idle_fd_closed_while_registered_raises_once_on_removal(
    make: Factory, sockets: Any, mode: str
) -> None:
    """An armed poll holds the file: a closed idle fd is silent, so removal says so."""
    backend = make(multishot=mode)
    a, _ = sockets()
    fd = a.fileno()
    backend.update(fd, 0, EVENT_IN)
    assert backend.wait(0) == []
    a.close()
    assert backend.wait(0) == []
    assert backend.wait(2 * MS) == []
    with pytest.raises(OSError) as info:
        backend.update(fd, EVENT_IN, 0)
    assert info.value.errno == errno.EBADF
    assert "closed while registered" in str(info.value)
    assert backend.wait(0) == []  # the removal was recorded all the same
    assert backend.statistics()["fds"] == 0
    assert not backend.need_wait()


@contextlib.contextmanager
def _registered_then_reused(backend: IoUringBackend) -> Iterator[tuple[int, int]]:
    """Watch a pipe's read end, close it, give its number to another pipe's.

    Yields ``(fd, writer)``: the reused number and the new pipe's write end.
    """
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        backend.update(r, 0, EVENT_IN)
        assert backend.wait(0) == []
        os.close(r)
        os.dup2(r2, r)  # the number now names the other pipe
        yield r, w2
    finally:
        for fd in (r, w, r2, w2):
            os.close(fd)


def test_fd_closed_and_number_reused_while_registered_raises_once_on_removal(
    make: Factory, mode: str
) -> None:
    """The armed poll keeps the old file; removal notices the number names another one."""
    backend = make(multishot=mode)
    with _registered_then_reused(backend) as (r, w2):
        os.write(w2, b"new")  # the new file is readable; the armed poll watches the old
        assert backend.wait(0) == []
        assert backend.wait(1 * MS) == []
        with pytest.raises(FileNotFoundError) as info:
            backend.update(r, EVENT_IN, 0)
        assert "another file" in str(info.value)
        assert backend.wait(0) == []  # the removal was recorded all the same
        assert backend.statistics()["fds"] == 0
        assert not backend.need_wait()


def test_change_after_number_reuse_watches_the_new_file(make: Factory, mode: str) -> None:
    """A change issues a new poll on whatever the number names: removal is clean then."""
    backend = make(multishot=mode)
    with _registered_then_reused(backend) as (r, w2):
        backend.update(r, EVENT_IN, EVENT_IN)  # a new handler for the new file
        assert backend.wait(0) == []
        os.write(w2, b"new")
        assert wait_for(backend, r) == EVENT_IN
        backend.update(r, EVENT_IN, 0)  # no error: this is the file registered
        assert backend.wait(0) == []


def test_adding_a_closed_fd_reports_nval_once(make: Factory, sockets: Any, mode: str) -> None:
    backend = make(multishot=mode)
    a, _ = sockets()
    fd = a.fileno()
    a.close()
    backend.update(fd, 0, EVENT_IN)  # io_uring refuses asynchronously: no raise here
    assert as_dict(backend.wait(0)) == {fd: EVENT_NVAL}
    assert backend.wait(0) == []
    assert backend.wait(1 * MS) == []
    backend.update(fd, EVENT_IN, 0)


def test_rdhup_alone_does_not_spin(make: Factory, sockets: Any, mode: str) -> None:
    """io_uring always reports POLLRDHUP; a writer whose peer shut down must not spin."""
    backend = make(multishot=mode)
    a, b = sockets()
    fill(b)
    backend.update(b.fileno(), 0, EVENT_OUT)
    assert backend.wait(0) == []
    a.shutdown(socket.SHUT_WR)  # b: RDHUP (and IN, not asked) but not writable
    cpu = time.process_time()
    start = time.monotonic()
    assert backend.wait(100 * MS) == []
    assert time.monotonic() - start >= 0.1
    assert time.process_time() - cpu < 0.05, "the wait spun"
    drain(a)  # room in b's send buffer: writable now
    assert wait_for(backend, b.fileno()) == EVENT_OUT
    assert as_dict(backend.wait(0)) == {b.fileno(): EVENT_OUT}


# -- lifecycle and setup ---------------------------------------------------------


def test_1000_create_close_cycles_leak_no_fd(logs: list[str], sockets: Any) -> None:
    a, b = sockets()
    b.send(b"x")
    opts = {name: opt.default for name, opt in IoUringBackend.options.items()}
    opts["entries"] = 8
    setup = BackendSetup(options=opts, open=_no_open, log=logs.append)
    before = _open_fds()
    deadline = time.monotonic() + 60
    for i in range(1000):
        backend = IoUringBackend(setup)
        if i % 10 == 0:  # with armed and completed polls, too
            backend.update(a.fileno(), 0, EVENT_IN)
            backend.update(b.fileno(), 0, EVENT_IN)
            assert as_dict(backend.wait(0)) == {a.fileno(): EVENT_IN}
        backend.close()
        assert time.monotonic() < deadline
    assert _open_fds() == before


def _libc_path() -> str:
    return ctypes.util.find_library("c") or "libc.so.6"


def test_refused_library_that_is_not_liburing(
    monkeypatch: pytest.MonkeyPatch, logs: list[str]
) -> None:
    path = _libc_path()
    monkeypatch.setenv(_liburing.ENV_VAR, path)
    reason = IoUringBackend.probe()
    assert reason is not None
    assert path in reason and "not liburing" in reason
    assert "liburing2" in reason  # which package provides it
    opts = {name: opt.default for name, opt in IoUringBackend.options.items()}
    with pytest.raises(OSError, match="not liburing"):
        IoUringBackend(BackendSetup(options=opts, open=_no_open, log=logs.append))


def test_refused_library_that_does_not_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    missing = str(tmp_path / "liburing-missing.so.2")
    monkeypatch.setenv(_liburing.ENV_VAR, missing)
    reason = IoUringBackend.probe()
    assert reason is not None and missing in reason and _liburing.ENV_VAR in reason


def test_refused_library_search_names_every_candidate() -> None:
    """Without AIOCORE_LIBURING the message on failure lists every name tried."""
    code = textwrap.dedent(
        """
        import ctypes, ctypes.util
        real = ctypes.CDLL
        def refuse(name, *args, **kwargs):
            if name and "uring" in str(name):
                raise OSError(name + ": cannot open shared object file")
            return real(name, *args, **kwargs)
        ctypes.CDLL = refuse
        ctypes.util.find_library = lambda name: None
        from aiocore_plugins.io_uring import IoUringBackend
        print(IoUringBackend.probe())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != _liburing.ENV_VAR}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    for name in (*_liburing.LIBRARY_NAMES, "find_library('uring')", "liburing2", "Fedora"):
        assert name in out, out


def test_refused_ring_setup_by_the_kernel() -> None:
    """A real refusal, no mocking: RLIMIT_NOFILE exhausted makes io_uring_setup fail."""
    code = textwrap.dedent(
        """
        import os, resource
        from aiocore_plugins.io_uring import IoUringBackend
        from aiocore_plugins import _liburing
        _liburing.load()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            _liburing.Ring(_liburing.load(), 2)
        except OSError as exc:
            print(exc)
        # EMFILE is a moment, not a property of the system: the probe (whose
        # answer the registry caches) still says available.
        print("probe:", IoUringBackend.probe())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "io_uring_setup failed with EMFILE" in out, out
    assert "too many open files" in out
    assert "probe: None" in out


def test_setup_errno_explanations() -> None:
    eperm = _liburing.explain_setup_errno(errno.EPERM)
    assert "EPERM" in eperm and "seccomp" in eperm and "io_uring_disabled" in eperm
    assert "CONFIG_IO_URING" in _liburing.explain_setup_errno(errno.ENOSYS)
    assert "RLIMIT_MEMLOCK" in _liburing.explain_setup_errno(errno.ENOMEM)


def test_liburing_loads_lazily() -> None:
    code = (
        "import sys, aiocore; aiocore.PluginRegistry(autoload=False); "
        "print(any('uring' in l for l in open('/proc/self/maps')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "False"
