"""Tests of the ``kqueue`` backend.

Linux has no kqueue, so most of these run the production backend code on the
labelled TEST DOUBLE in ``kqueue_double.py`` (kqueue semantics emulated on a real
epoll; real fds, real readiness, real timeouts).  The behavioural tests live in
:class:`KqueueBehaviour` and run twice: on the double (:class:`TestOnDouble`)
and on the real ``select.kqueue`` (:class:`TestRealKqueue`), which is skipped on
Linux and starts by itself on BSD and macOS.  Tests that look inside the double
(counting ``control()`` calls, injecting synthetic kevents) are in
:class:`TestDoubleSpecific`.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiocore_plugins import kqueue as kqueue_plugin
from aiocore_plugins.kqueue import KqueueBackend

import aiocore
from aiocore.backend import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_IN,
    EVENT_NVAL,
    EVENT_OUT,
    Backend,
    BackendSetup,
)

from . import kqueue_double
from .kqueue_double import (
    KQ_EV_EOF,
    KQ_FILTER_READ,
    KQ_FILTER_WRITE,
    FakeKevent,
    KqueueOnEpollBackend,
)

HAVE_KQUEUE = hasattr(select, "kqueue")
MS = 1_000_000

Made = Callable[[], Backend]


def _no_open(name: str) -> Backend:
    raise AssertionError(f"the kqueue backend opened another backend ({name!r})")


class Harness:
    """Backends made for one test, with their logs; everything closed afterwards."""

    def __init__(self, cls: type[KqueueBackend]) -> None:
        self.cls = cls
        self.logs: list[str] = []
        self.backends: list[KqueueBackend] = []
        self.closers: list[Callable[[], None]] = []

    def backend(self) -> KqueueBackend:
        b = self.cls(BackendSetup(options={}, open=_no_open, log=self.logs.append))
        self.backends.append(b)
        return b

    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.closers += [a.close, b.close]
        return a, b

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.closers += [lambda: _close_quietly(r), lambda: _close_quietly(w)]
        return r, w

    def close(self) -> None:
        for b in self.backends:
            b.close()
        for close in self.closers:
            close()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def as_dict(events: list[tuple[int, int]]) -> dict[int, int]:
    fds = [fd for fd, _ in events]
    assert len(fds) == len(set(fds)), f"an fd appears twice in one wait: {events}"
    return dict(events)


def wait_for(backend: Backend, fd: int, timeout_s: float = 2.0) -> int:
    """Wait (bounded) until *fd* is reported; return its mask."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = as_dict(backend.wait(50 * MS))
        if fd in got:
            return got[fd]
    raise AssertionError(f"fd {fd} was not reported within {timeout_s}s")


class KqueueBehaviour:
    """What the kqueue backend does, whatever kqueue implementation is underneath."""

    backend_cls: type[KqueueBackend]

    @pytest.fixture
    def h(self) -> Iterator[Harness]:
        harness = Harness(self.backend_cls)
        try:
            yield harness
        finally:
            harness.close()

    # -- add / remove / mask changes ---------------------------------------

    def test_nothing_registered_times_out_empty(self, h: Harness) -> None:
        b = h.backend()
        assert b.wait(0) == []
        assert b.wait(5 * MS) == []

    def test_add_then_readable(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        assert b.wait(0) == []
        peer.send(b"x")
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN}

    def test_writable(self, h: Harness) -> None:
        b = h.backend()
        a, _peer = h.pair()
        b.update(a.fileno(), 0, EVENT_OUT)
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_OUT}

    def test_remove_stops_reports(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        peer.send(b"x")
        b.update(a.fileno(), 0, EVENT_IN)
        assert a.fileno() in as_dict(b.wait(0))
        b.update(a.fileno(), EVENT_IN, 0)
        assert b.wait(0) == []
        assert b.wait(5 * MS) == []

    def test_remove_before_any_wait(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        peer.send(b"x")
        b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        b.update(a.fileno(), EVENT_IN | EVENT_OUT, 0)
        assert b.wait(0) == []

    def test_mask_changes(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        fd = a.fileno()
        peer.send(b"x")
        b.update(fd, 0, EVENT_IN)
        assert as_dict(b.wait(0)) == {fd: EVENT_IN}
        b.update(fd, EVENT_IN, EVENT_IN | EVENT_OUT)
        assert as_dict(b.wait(0)) == {fd: EVENT_IN | EVENT_OUT}
        b.update(fd, EVENT_IN | EVENT_OUT, EVENT_OUT)
        assert as_dict(b.wait(0)) == {fd: EVENT_OUT}
        b.update(fd, EVENT_OUT, EVENT_IN)
        assert as_dict(b.wait(0)) == {fd: EVENT_IN}

    def test_re_add_after_remove(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        fd = a.fileno()
        peer.send(b"x")
        b.update(fd, 0, EVENT_IN)
        assert fd in as_dict(b.wait(0))
        b.update(fd, EVENT_IN, 0)
        b.update(fd, 0, EVENT_OUT)
        assert as_dict(b.wait(0)) == {fd: EVENT_OUT}

    def test_many_fds_each_reported_once(self, h: Harness) -> None:
        b = h.backend()
        pairs = [h.pair() for _ in range(20)]
        for a, peer in pairs:
            peer.send(b"x")
            b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        got = as_dict(b.wait(0))
        assert got == {a.fileno(): EVENT_IN | EVENT_OUT for a, _ in pairs}

    # -- readiness --------------------------------------------------------

    @pytest.mark.skipif(not hasattr(os, "eventfd"), reason="os.eventfd is Linux-only")
    def test_eventfd(self, h: Harness) -> None:
        b = h.backend()
        efd = os.eventfd(0, os.EFD_NONBLOCK)  # type: ignore[attr-defined,unused-ignore]
        h.closers.append(lambda: os.close(efd))
        b.update(efd, 0, EVENT_IN)
        assert b.wait(0) == []
        os.eventfd_write(efd, 1)  # type: ignore[attr-defined,unused-ignore]
        assert as_dict(b.wait(0)) == {efd: EVENT_IN}
        os.eventfd_read(efd)  # type: ignore[attr-defined,unused-ignore]
        assert b.wait(0) == []

    def test_pipe(self, h: Harness) -> None:
        b = h.backend()
        r, w = h.pipe()
        b.update(r, 0, EVENT_IN)
        b.update(w, 0, EVENT_OUT)
        assert as_dict(b.wait(0)) == {w: EVENT_OUT}
        os.write(w, b"x")
        assert as_dict(b.wait(0)) == {r: EVENT_IN, w: EVENT_OUT}

    def test_level_triggered_re_report(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        peer.send(b"xyz")
        for _ in range(3):
            assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN}
        a.recv(1)
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN}, "still 2 bytes left"
        a.recv(10)
        assert b.wait(0) == []

    def test_read_and_write_merged_into_one_pair(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        peer.send(b"x")
        b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        events = b.wait(0)
        assert events == [(a.fileno(), EVENT_IN | EVENT_OUT)]

    def test_blocking_wait_wakes_on_readiness(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        timer = threading.Timer(0.02, peer.send, args=(b"x",))
        timer.start()
        try:
            start = time.monotonic()
            got = as_dict(b.wait(-1))
            assert got == {a.fileno(): EVENT_IN}
            assert time.monotonic() - start < 5
        finally:
            timer.join()

    # -- hang-up, EOF, half-close -----------------------------------------

    def test_peer_close_read_interest(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        peer.close()
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN | EVENT_HUP}
        assert a.recv(10) == b""
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN | EVENT_HUP}, "level-triggered"

    def test_peer_close_with_unread_data(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        peer.send(b"last words")
        peer.close()
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN | EVENT_HUP}
        assert a.recv(100) == b"last words"
        assert a.recv(100) == b""

    def test_peer_close_read_and_write_interest(self, h: Harness) -> None:
        # What Linux's poll reports for this socket too: IN|OUT|HUP.
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        peer.close()
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_IN | EVENT_OUT | EVENT_HUP}

    def test_half_close(self, h: Harness) -> None:
        b = h.backend()
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        peer.shutdown(socket.SHUT_WR)
        mask = as_dict(b.wait(0))[a.fileno()]
        assert mask == EVENT_IN | EVENT_HUP
        assert a.recv(10) == b""
        # The other direction still works.
        b.update(a.fileno(), EVENT_IN, EVENT_IN | EVENT_OUT)
        assert as_dict(b.wait(0))[a.fileno()] & EVENT_OUT
        a.send(b"reply")
        assert peer.recv(10) == b"reply"

    def test_pipe_writer_closed(self, h: Harness) -> None:
        b = h.backend()
        r, w = h.pipe()
        b.update(r, 0, EVENT_IN)
        os.close(w)
        assert as_dict(b.wait(0)) == {r: EVENT_IN | EVENT_HUP}

    def test_pipe_reader_closed(self, h: Harness) -> None:
        b = h.backend()
        r, w = h.pipe()
        b.update(w, 0, EVENT_OUT)
        os.close(r)
        mask = as_dict(b.wait(0))[w]
        assert mask & EVENT_OUT and mask & EVENT_HUP
        assert not mask & EVENT_NVAL

    def test_pipe_reader_closed_read_interest_on_write_end(self, h: Harness) -> None:
        # The read filter on a pipe's write end sees the gone reader as end of
        # file (FreeBSD's filt_piperead), so io_read runs.
        b = h.backend()
        r, w = h.pipe()
        b.update(w, 0, EVENT_IN)
        assert b.wait(0) == []
        os.close(r)
        assert as_dict(b.wait(0)) == {w: EVENT_IN | EVENT_HUP}

    # -- closed fds ---------------------------------------------------------

    def test_closed_before_add_applied_is_nval_once(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN)
        a.close()  # before any wait: the EV_ADD fails with EBADF
        assert b.wait(0) == [(fd, EVENT_NVAL)]
        start = time.monotonic()
        assert b.wait(20 * MS) == [], "reported once, then not watched"
        assert time.monotonic() - start >= 0.019, "no busy loop"
        assert b.wait(0) == []
        assert any("EBADF" in line and str(fd) in line for line in h.logs)
        assert b.statistics()["dropped_fds"] == {fd: "EBADF"}
        b.update(fd, EVENT_IN, 0)  # removing it later is quiet: nothing to delete
        assert b.statistics()["dropped_fds"] == {}

    def test_closed_before_mask_change_is_nval_once(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == []
        a.close()
        b.update(fd, EVENT_IN, EVENT_IN | EVENT_OUT)  # EV_ADD of the write filter
        assert b.wait(0) == [(fd, EVENT_NVAL)]
        assert b.wait(10 * MS) == []
        b.update(fd, EVENT_IN | EVENT_OUT, 0)  # quiet: kqueue already dropped both

    def test_closed_while_registered_falls_silent_and_removal_raises(self, h: Harness) -> None:
        # kqueue deletes a closed fd's knotes: nothing is reported (no busy
        # loop, no NVAL); removing the handler meets EBADF, raised once.
        b = h.backend()
        a, peer = h.pair()
        fd = a.fileno()
        peer.send(b"x")
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == [(fd, EVENT_IN)]
        a.close()
        start = time.monotonic()
        assert b.wait(20 * MS) == []
        assert time.monotonic() - start >= 0.019
        with pytest.raises(OSError) as info:
            b.update(fd, EVENT_IN, 0)
        assert info.value.errno == errno.EBADF
        assert "closed while registered" in str(info.value)
        assert b.wait(0) == []
        assert b.statistics()["fds"] == 0

    def test_closed_and_number_reused_then_removed(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == []
        a.close()
        r, w = h.pipe()
        if fd not in (r, w):
            pytest.skip("the closed fd number was not reused")
        with pytest.raises(OSError) as info:
            b.update(fd, EVENT_IN, 0)
        assert info.value.errno == errno.ENOENT  # the knote went with the old file
        other = w if fd == r else r
        b.update(other, 0, EVENT_OUT if other == w else EVENT_IN)
        assert b.wait(0) in ([], [(w, EVENT_OUT)])

    def test_number_reused_then_re_added(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == []
        a.close()
        with pytest.raises(OSError):
            b.update(fd, EVENT_IN, 0)
        x, y = h.pair()
        if x.fileno() != fd:
            pytest.skip("the closed fd number was not reused")
        y.send(b"x")
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == [(fd, EVENT_IN)]

    def test_one_bad_fd_does_not_hide_others(self, h: Harness) -> None:
        b = h.backend()
        bad, _ = h.pair()
        good, peer = h.pair()
        peer.send(b"x")
        bad_fd = bad.fileno()
        b.update(bad_fd, 0, EVENT_IN)
        b.update(good.fileno(), 0, EVENT_IN)
        bad.close()
        seen: dict[int, int] = {}
        for _ in range(3):
            for fd, mask in b.wait(0):
                seen[fd] = seen.get(fd, 0) | mask
        assert seen == {bad_fd: EVENT_NVAL, good.fileno(): EVENT_IN}

    # -- timeouts -----------------------------------------------------------

    @pytest.mark.parametrize("timeout_ns", [1, 300_000, 1_500_000, 20 * MS])
    def test_timeout_never_early(self, h: Harness, timeout_ns: int) -> None:
        b = h.backend()
        a, _ = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        start = time.monotonic_ns()
        assert b.wait(timeout_ns) == []
        assert time.monotonic_ns() - start >= timeout_ns

    def test_timeout_never_early_with_pending_changes(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        start = time.monotonic_ns()
        assert b.wait(15 * MS) == []
        assert time.monotonic_ns() - start >= 15 * MS

    def test_timeout_never_early_after_failed_delete(self, h: Harness) -> None:
        # The changelist carries only an EV_DELETE that fails (the fd was
        # closed): the kernel returns the error at once without waiting; the
        # backend must wait the rest of the time itself.
        b = h.backend()
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN | EVENT_OUT)
        assert b.wait(0) == [(fd, EVENT_OUT)]
        a.close()
        b.update(fd, EVENT_IN | EVENT_OUT, EVENT_IN)
        start = time.monotonic_ns()
        assert b.wait(20 * MS) == []
        assert time.monotonic_ns() - start >= 20 * MS

    def test_zero_timeout_still_looks_after_failed_delete(self, h: Harness) -> None:
        # With an error in the event list the kernel does not look at the
        # queue at all; a zero-timeout wait must still report what is ready.
        b = h.backend()
        a, _ = h.pair()
        c, peer = h.pair()
        peer.send(b"x")
        b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        b.update(c.fileno(), 0, EVENT_IN)
        assert as_dict(b.wait(0)) == {a.fileno(): EVENT_OUT, c.fileno(): EVENT_IN}
        fd = a.fileno()
        a.close()
        b.update(fd, EVENT_IN | EVENT_OUT, EVENT_IN)  # EV_DELETE that fails: EBADF
        assert as_dict(b.wait(0)) == {c.fileno(): EVENT_IN}

    # -- threads --------------------------------------------------------------

    def test_update_from_another_thread_during_wait(self, h: Harness) -> None:
        b = h.backend()
        wake_r, wake_w = h.pipe()
        a, peer = h.pair()
        peer.send(b"x")
        b.update(wake_r, 0, EVENT_IN)
        assert b.wait(0) == []

        def other() -> None:
            time.sleep(0.01)
            b.update(a.fileno(), 0, EVENT_IN)
            os.write(wake_w, b"!")  # what ctx.notify() does

        t = threading.Thread(target=other)
        t.start()
        try:
            assert as_dict(b.wait(-1)) == {wake_r: EVENT_IN}
        finally:
            t.join()
        assert as_dict(b.wait(0)) == {wake_r: EVENT_IN, a.fileno(): EVENT_IN}

    def test_remove_from_another_thread_during_wait(self, h: Harness) -> None:
        b = h.backend()
        wake_r, wake_w = h.pipe()
        a, _ = h.pair()
        b.update(wake_r, 0, EVENT_IN)
        b.update(a.fileno(), 0, EVENT_OUT)
        assert b.wait(0) == [(a.fileno(), EVENT_OUT)]
        b.update(a.fileno(), EVENT_OUT, EVENT_IN)
        assert b.wait(0) == []

        def other() -> None:
            time.sleep(0.01)
            b.update(a.fileno(), EVENT_IN, 0)
            os.write(wake_w, b"!")

        t = threading.Thread(target=other)
        t.start()
        try:
            assert as_dict(b.wait(-1)) == {wake_r: EVENT_IN}
        finally:
            t.join()
        os.read(wake_r, 10)
        assert b.wait(5 * MS) == []

    # -- lifecycle ------------------------------------------------------------

    def test_close_releases_the_queue_fd(self, h: Harness) -> None:
        b = h.cls(BackendSetup(options={}, open=_no_open, log=h.logs.append))
        fd = b.fileno()
        b.close()
        with pytest.raises(OSError):
            os.fstat(fd)

    def test_statistics(self, h: Harness) -> None:
        b = h.backend()
        a, _ = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        stats = b.statistics()
        assert stats["fds"] == 1 and stats["pending_changes"] == 1
        b.wait(0)
        assert b.statistics()["pending_changes"] == 0


class TestOnDouble(KqueueBehaviour):
    """The behaviour tests on the TEST DOUBLE (kqueue semantics over real epoll)."""

    backend_cls = KqueueOnEpollBackend


@pytest.mark.skipif(not HAVE_KQUEUE, reason=f"select.kqueue is not available on {sys.platform}")
class TestRealKqueue(KqueueBehaviour):
    """The same behaviour tests on the real ``select.kqueue`` (BSD, macOS)."""

    backend_cls = KqueueBackend

    def test_probe_says_available(self) -> None:
        assert KqueueBackend.probe() is None

    def test_regular_file_readable_until_eof(self, h: Harness) -> None:
        b = h.backend()
        with tempfile.TemporaryFile() as f:
            f.write(b"abc")
            f.flush()
            f.seek(0)
            b.update(f.fileno(), 0, EVENT_IN)
            assert b.wait(0) == [(f.fileno(), EVENT_IN)]
            f.read()
            assert b.wait(0) == []
            b.update(f.fileno(), EVENT_IN, 0)


class TestDoubleSpecific:
    """Tests that look inside the TEST DOUBLE: system call counts, synthetic kevents."""

    @pytest.fixture
    def h(self) -> Iterator[Harness]:
        harness = Harness(KqueueOnEpollBackend)
        try:
            yield harness
        finally:
            harness.close()

    @staticmethod
    def double(b: KqueueBackend) -> KqueueOnEpollBackend:
        assert isinstance(b, KqueueOnEpollBackend)
        return b

    def test_changes_batched_into_the_wait(self, h: Harness) -> None:
        b = self.double(h.backend())
        kq = b.kq
        pairs = [h.pair() for _ in range(10)]
        before = kq.control_calls
        for a, _ in pairs:
            b.update(a.fileno(), 0, EVENT_IN)
        assert kq.control_calls == before, "update() made a system call"
        b.wait(0)
        assert kq.control_calls == before + 1
        assert kq.calls[-1][0] == 10, "all ten EV_ADDs in the one wait"
        # Mask changes batch too: ten EV_ADDs of the write filter in one call.
        for a, _ in pairs:
            b.update(a.fileno(), EVENT_IN, EVENT_IN | EVENT_OUT)
        got = as_dict(b.wait(0))
        assert kq.control_calls == before + 2
        assert kq.calls[-1][0] == 10
        assert got == {a.fileno(): EVENT_OUT for a, _ in pairs}
        # And deletes of one filter: ten EV_DELETEs in one call.
        for a, _ in pairs:
            b.update(a.fileno(), EVENT_IN | EVENT_OUT, EVENT_IN)
        assert b.wait(0) == []
        assert kq.control_calls == before + 3
        assert kq.calls[-1][0] == 10

    def test_no_changes_no_changelist(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        b.update(a.fileno(), 0, EVENT_OUT)
        b.wait(0)
        b.wait(0)
        assert b.kq.calls[-1][0] == 0

    def test_toggling_between_waits_coalesces(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN)
        b.wait(0)
        for _ in range(5):
            b.update(fd, EVENT_IN, EVENT_IN | EVENT_OUT)
            b.update(fd, EVENT_IN | EVENT_OUT, EVENT_IN)
        b.wait(0)
        assert b.kq.calls[-1][0] == 0, "net change is nothing: no kevent submitted"
        assert b.kq.registered() == {fd: {KQ_FILTER_READ}}

    def test_kernel_filters_follow_the_mask(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN | EVENT_OUT)
        b.wait(0)
        assert b.kq.registered() == {fd: {KQ_FILTER_READ, KQ_FILTER_WRITE}}
        b.update(fd, EVENT_IN | EVENT_OUT, EVENT_OUT)
        b.wait(0)
        assert b.kq.registered() == {fd: {KQ_FILTER_WRITE}}
        b.update(fd, EVENT_OUT, 0)
        assert b.kq.registered() == {}

    def test_removal_is_one_immediate_call(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        b.update(a.fileno(), 0, EVENT_IN | EVENT_OUT)
        b.wait(0)
        before = b.kq.control_calls
        b.update(a.fileno(), EVENT_IN | EVENT_OUT, 0)
        assert b.kq.control_calls == before + 1
        assert b.kq.calls[-1][:2] == (2, 0), "two EV_DELETEs, no event list"
        assert b.statistics()["eager_deletes"] == 1

    def test_removal_of_never_submitted_fd_makes_no_call(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        before = b.kq.control_calls
        b.update(a.fileno(), 0, EVENT_IN)
        b.update(a.fileno(), EVENT_IN, 0)
        assert b.kq.control_calls == before
        b.wait(0)
        assert b.kq.calls[-1][0] == 0

    def test_timeout_passed_with_ns_precision(self, h: Harness) -> None:
        b = self.double(h.backend())
        b.wait(1_234_567)
        assert b.kq.calls[-1][2] == pytest.approx(0.001234567, abs=1e-15)
        b.wait(0)
        assert b.kq.calls[-1][2] == 0
        a, peer = h.pair()
        b.update(a.fileno(), 0, EVENT_IN)
        peer.send(b"x")
        b.wait(-1)
        assert b.kq.calls[-1][2] is None

    def test_failed_delete_costs_a_second_call_not_an_early_return(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN | EVENT_OUT)
        b.wait(0)
        a.close()
        b.update(fd, EVENT_IN | EVENT_OUT, EVENT_IN)
        before = b.kq.control_calls
        assert b.wait(10 * MS) == []
        assert b.kq.control_calls == before + 2
        assert b.kq.calls[-1][0] == 0, "the second call carries no changes"

    def test_synthetic_eof_with_errno_is_err(self, h: Harness) -> None:
        # SYNTHETIC kevents: Linux cannot show a socket's pending error through
        # epoll without clearing it, so the fflags -> EVENT_ERR mapping is fed
        # by hand.
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_IN | EVENT_OUT)
        b.wait(0)
        b.kq.inject(
            FakeKevent(fd, KQ_FILTER_WRITE, KQ_EV_EOF, errno.ECONNRESET),
            FakeKevent(fd, KQ_FILTER_READ, KQ_EV_EOF, errno.ECONNRESET),
        )
        got = as_dict(b.wait(0))
        assert got == {fd: EVENT_IN | EVENT_OUT | EVENT_HUP | EVENT_ERR}

    def test_synthetic_write_eof_without_errno_is_not_err(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        b.update(fd, 0, EVENT_OUT)
        b.wait(0)
        b.kq.inject(FakeKevent(fd, KQ_FILTER_WRITE, KQ_EV_EOF, 0))
        assert as_dict(b.wait(0)) == {fd: EVENT_OUT | EVENT_HUP}

    def test_event_list_capped_and_fair(self, h: Harness, monkeypatch: Any) -> None:
        monkeypatch.setattr(kqueue_plugin, "MAX_EVENTS", 4)
        b = self.double(h.backend())
        pairs = [h.pair() for _ in range(10)]
        for a, _ in pairs:
            b.update(a.fileno(), 0, EVENT_OUT)
        seen: set[int] = set()
        for _ in range(5):
            events = b.wait(0)
            assert 0 < len(events) <= 4 + 10  # first call: room for 10 errors too
            seen.update(fd for fd, _ in events)
        assert len(b.wait(0)) <= 4
        assert seen == {a.fileno() for a, _ in pairs}, "every ready fd gets its turn"

    def test_delete_racing_an_in_flight_add_is_deferred(self, h: Harness) -> None:
        # Another thread removes the fd while the wait that adds it is in the
        # kernel: deleting first would fail and leave the added knote behind.
        b = self.double(h.backend())
        a, _ = h.pair()
        fd = a.fileno()
        real_control = b._control
        raced: list[bool] = []

        def control(changes: Any, nevents: int, timeout: float | None) -> Any:
            if changes and nevents and not raced:
                raced.append(True)
                t = threading.Thread(target=b.update, args=(fd, EVENT_OUT, 0))
                t.start()
                t.join()
            return real_control(changes, nevents, timeout)

        b._control = control  # type: ignore[method-assign]
        b.update(fd, 0, EVENT_OUT)
        b.wait(0)  # may or may not report fd; the core would ignore it
        assert raced
        assert b.statistics()["deferred_deletes"] == 1
        assert b.kq.registered() == {fd: {KQ_FILTER_WRITE}}, "the in-flight add landed"
        assert b.wait(0) == []
        assert b.kq.registered() == {}, "and the deferred delete removed it"

    def test_interrupted_submission_is_resubmitted(self, h: Harness) -> None:
        b = self.double(h.backend())
        a, peer = h.pair()
        fd = a.fileno()
        peer.send(b"x")
        real_control = b._control
        calls = [0]

        def control(changes: Any, nevents: int, timeout: float | None) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise KeyboardInterrupt  # a signal handler raised before kevent()
            return real_control(changes, nevents, timeout)

        b._control = control  # type: ignore[method-assign]
        b.update(fd, 0, EVENT_IN)
        with pytest.raises(KeyboardInterrupt):
            b.wait(0)
        assert b.wait(0) == [(fd, EVENT_IN)]

    def test_refused_add_is_nval_with_errno_logged(self, h: Harness) -> None:
        # A kqueue cannot watch itself: FreeBSD's kqueue_register refuses it
        # with EINVAL, and so does the epoll under the double.  (Not in the
        # shared tests: what macOS does here is not established.)
        b = self.double(h.backend())
        fd = b.fileno()
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == [(fd, EVENT_NVAL)]
        assert b.wait(0) == []
        assert any(f"fd {fd}" in line and "EINVAL" in line for line in h.logs)
        assert b.statistics()["dropped_fds"] == {fd: "EINVAL"}

    def test_racing_updates_leave_kernel_state_equal_to_interest(self, h: Harness) -> None:
        # One thread changes masks (adds, mask changes, removals) as fast as it
        # can while this one waits; afterwards the knotes must be exactly the
        # interest set: no knote left behind, none missing.  Bounded: 0.5 s.
        b = self.double(h.backend())
        wake_r, wake_w = h.pipe()
        os.set_blocking(wake_w, False)
        b.update(wake_r, 0, EVENT_IN)
        fds = [h.pair()[0].fileno() for _ in range(8)]
        masks = dict.fromkeys(fds, 0)
        choices = [0, EVENT_IN, EVENT_OUT, EVENT_IN | EVENT_OUT]
        stop = time.monotonic() + 0.5
        failures: list[BaseException] = []

        def mutate() -> None:
            n = 0
            while time.monotonic() < stop:
                fd = fds[n % len(fds)]
                new = choices[(n * 7 + n // len(fds)) % len(choices)]
                n += 1
                if new == masks[fd]:
                    continue
                try:
                    b.update(fd, masks[fd], new)
                except BaseException as exc:
                    failures.append(exc)
                    return
                masks[fd] = new
                try:
                    os.write(wake_w, b"!")
                except BlockingIOError:
                    pass

        t = threading.Thread(target=mutate)
        t.start()
        try:
            while t.is_alive():
                for fd, mask in b.wait(20 * MS):
                    assert not mask & EVENT_NVAL, (fd, mask)
                    if fd == wake_r:
                        os.read(wake_r, 65536)
        finally:
            t.join()
        assert not failures
        b.wait(0)
        b.wait(0)
        filters = {EVENT_IN: KQ_FILTER_READ, EVENT_OUT: KQ_FILTER_WRITE}
        expected = {
            fd: {filt for bit, filt in filters.items() if mask & bit}
            for fd, mask in masks.items()
            if mask
        }
        expected[wake_r] = {KQ_FILTER_READ}
        assert b.kq.registered() == expected
        assert b.statistics()["fds"] == len(expected)

    def test_double_reports_errors_like_bsd(self) -> None:
        kq = kqueue_double.FakeKqueue()
        try:
            a, b = socket.socketpair()
            with a, b:
                fd = a.fileno()
                # Deleting an absent filter: ENOENT as an EV_ERROR kevent...
                out = kq.control([FakeKevent(fd, KQ_FILTER_READ, kqueue_double.KQ_EV_DELETE)], 4, 0)
                assert [(e.ident, e.flags, e.data) for e in out] == [
                    (fd, kqueue_double.KQ_EV_ERROR, errno.ENOENT)
                ]
                # ...or raised when the event list has no room.
                with pytest.raises(FileNotFoundError):
                    kq.control([FakeKevent(fd, KQ_FILTER_READ, kqueue_double.KQ_EV_DELETE)], 0, 0)
                # Two filters fire as two kevents.
                kq.control([FakeKevent(fd, KQ_FILTER_READ), FakeKevent(fd, KQ_FILTER_WRITE)], 0, 0)
                b.send(b"x")
                out = kq.control(None, 4, 0)
                assert sorted(e.filter for e in out) == [KQ_FILTER_WRITE, KQ_FILTER_READ]
                with pytest.raises(NotImplementedError):
                    kq.control([FakeKevent(fd, KQ_FILTER_READ, kqueue_double.KQ_EV_CLEAR)], 0, 0)
        finally:
            kq.close()
        assert kq.closed
        with pytest.raises(ValueError):
            kq.control(None, 1, 0)

    def test_double_oneshot_and_disable(self) -> None:
        kq = kqueue_double.FakeKqueue()
        a, b = socket.socketpair()
        try:
            fd = a.fileno()
            add, oneshot = kqueue_double.KQ_EV_ADD, kqueue_double.KQ_EV_ONESHOT
            kq.control([FakeKevent(fd, KQ_FILTER_WRITE, add | oneshot)], 0, 0)
            assert len(kq.control(None, 4, 0)) == 1
            assert kq.control(None, 4, 0) == [], "one-shot knote deleted once delivered"
            kq.control([FakeKevent(fd, KQ_FILTER_WRITE, add | kqueue_double.KQ_EV_DISABLE)], 0, 0)
            assert kq.control(None, 4, 0) == []
            kq.control([FakeKevent(fd, KQ_FILTER_WRITE, kqueue_double.KQ_EV_ENABLE)], 0, 0)
            assert len(kq.control(None, 4, 0)) == 1
        finally:
            kq.close()
            a.close()
            b.close()

    def test_double_regular_file_as_vnode(self, h: Harness) -> None:
        b = self.double(h.backend())
        with tempfile.TemporaryFile() as f:
            f.write(b"abc")
            f.flush()
            f.seek(0)
            b.update(f.fileno(), 0, EVENT_IN)
            assert b.wait(0) == [(f.fileno(), EVENT_IN)]
            f.read()
            assert b.wait(5 * MS) == []
            b.update(f.fileno(), EVENT_IN, EVENT_IN | EVENT_OUT)
            assert b.wait(0) == [(f.fileno(), EVENT_OUT)]
            b.update(f.fileno(), EVENT_IN | EVENT_OUT, 0)

    def test_double_closed_fd_with_dup_open_does_not_spin(self, h: Harness) -> None:
        # epoll keeps a closed fd's file registered while a dup lives; kqueue
        # forgets the number.  The double must behave like kqueue.
        b = self.double(h.backend())
        a, peer = h.pair()
        fd = a.fileno()
        dup = os.dup(fd)
        h.closers.append(lambda: os.close(dup))
        peer.send(b"x")
        b.update(fd, 0, EVENT_IN)
        assert b.wait(0) == [(fd, EVENT_IN)]
        a.close()
        start = time.monotonic()
        assert b.wait(20 * MS) == []
        assert time.monotonic() - start >= 0.019
        assert b.wait(0) == []
        with pytest.raises(OSError):
            b.update(fd, EVENT_IN, 0)


# -- probe, registration, AioContext end to end ---------------------------------


@pytest.mark.skipif(HAVE_KQUEUE, reason="this platform has select.kqueue")
def test_probe_on_linux_gives_the_reason() -> None:
    reason = KqueueBackend.probe()
    assert reason is not None
    assert "BSD and macOS" in reason and sys.platform in reason
    assert reason == (
        f"select.kqueue is not available: kqueue exists on BSD and macOS; this is {sys.platform}"
    )
    with pytest.raises(aiocore.BackendUnavailable, match="BSD and macOS"):
        KqueueBackend(BackendSetup(options={}, open=_no_open, log=print))


def test_double_probe_ok() -> None:
    assert KqueueOnEpollBackend.probe() is None


def _registry(**kwargs: Any) -> aiocore.PluginRegistry:
    return aiocore.PluginRegistry(
        autoload=False, env={}, plugins=[("kqueue-double", kqueue_double)], **kwargs
    )


def test_registry_has_both_kqueue_backends() -> None:
    with warnings.catch_warnings():
        # Only the kqueue plugins are under test; another built-in failing to
        # load is reported by its own tests.
        warnings.simplefilter("ignore", aiocore.PluginWarning)
        reg = _registry()
    assert reg.backends["kqueue"].cls is KqueueBackend
    assert reg.backends["kqueue"].plugin == "kqueue"
    assert reg.backends["kqueue-double"].cls is KqueueOnEpollBackend
    assert reg.backends["kqueue-double"].plugin == "kqueue-double"
    assert reg.probe("kqueue-double") is None
    if not HAVE_KQUEUE:
        assert "BSD and macOS" in (reg.probe("kqueue") or "")
        with pytest.raises(aiocore.BackendUnavailable, match="BSD and macOS"):
            aiocore.AioContext(backend="kqueue", registry=reg)


@pytest.fixture
def ctx(no_fd_leak: None) -> Iterator[aiocore.AioContext]:
    reg = _registry(builtins=("notifier",), strict=True)
    context = aiocore.AioContext(backend="kqueue-double", registry=reg)
    try:
        yield context
    finally:
        context.close()


def test_context_end_to_end(ctx: aiocore.AioContext) -> None:
    assert ctx.backend_name == "kqueue-double"
    ran: list[str] = []

    # A bottom half.
    bh = ctx.bh_new(lambda _: ran.append("bh"))
    bh.schedule()
    assert ctx.poll(True)
    assert ran == ["bh"]

    # An fd handler: read and write on one socket.
    a, peer = socket.socketpair()
    with a, peer:
        a.setblocking(False)

        def on_read(_: object) -> None:
            ran.append("read:" + a.recv(10).decode())

        ctx.set_fd_handler(a.fileno(), io_read=on_read)
        assert not ctx.poll(False), "only the registration's notify()"
        peer.send(b"hi")
        for _ in range(10):
            if ctx.poll(True):
                break
        assert ran[-1] == "read:hi"

        writes = [0]

        def on_write(_: object) -> None:
            writes[0] += 1
            ctx.set_fd_handler(a.fileno(), io_read=on_read)  # one write is enough

        ctx.set_fd_handler(a.fileno(), io_read=on_read, io_write=on_write)
        for _ in range(10):
            if writes[0]:
                break
            ctx.poll(True)
        assert writes[0] == 1

        # A timer, after the fd work: fires no earlier than asked.
        clock = aiocore.Clock.REALTIME
        start = aiocore.clock_get_ns(clock)
        timer = ctx.timer_new_ms(clock, lambda _: ran.append("timer"))
        timer.mod(start // MS + 15)
        deadline = time.monotonic() + 5
        while "timer" not in ran and time.monotonic() < deadline:
            ctx.poll(True)
        assert ran[-1] == "timer"
        assert aiocore.clock_get_ns(clock) - start >= 14 * MS

        # Peer hang-up dispatches io_read (EV_EOF -> EVENT_IN|EVENT_HUP).
        peer.close()
        for _ in range(10):
            if ctx.poll(True):
                break
        assert ran[-1] == "read:"
        ctx.set_fd_handler(a.fileno(), None)
    stats = ctx.backend_statistics()
    assert stats["backend"] == "kqueue-double"
    assert stats["fds"] == 1  # the context's own notifier


def test_context_closed_fd_reported_once(ctx: aiocore.AioContext) -> None:
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _ctx, exc: errors.append(exc))
    a, peer = socket.socketpair()
    with peer:
        fd = a.fileno()
        ctx.set_fd_handler(fd, io_read=lambda _: None)
        a.close()  # closed while registered, before the EV_ADD reached kqueue
        for _ in range(5):
            ctx.poll(False)
        assert len(errors) == 1
        assert isinstance(errors[0], OSError) and errors[0].errno == errno.EBADF
        ctx.set_fd_handler(fd, None)
        for _ in range(3):
            ctx.poll(False)
    assert len(errors) == 1, f"reported more than once: {errors}"


def test_context_wakes_on_cross_thread_bh(ctx: aiocore.AioContext) -> None:
    ran: list[int] = []
    bh = ctx.bh_new(lambda _: ran.append(1))
    t = threading.Timer(0.02, bh.schedule)
    t.start()
    try:
        start = time.monotonic()
        deadline = start + 5
        while not ran and time.monotonic() < deadline:
            ctx.poll(True)
    finally:
        t.join()
    assert ran == [1]
