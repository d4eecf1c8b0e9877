"""The ``auto`` backend on its own (no core): an fd epoll refuses during the upgrade.

SPEC 10 gives the upgrade up for good when ``epoll_ctl`` refuses an fd with
``EPERM`` (a regular file).  Any other refusal is not about the fd's kind:
``ENOMEM`` and ``ENOSPC`` (``max_user_watches``) postpone the upgrade to the
next change, and ``EBADF`` (an fd closed while registered) lets it go on,
with that fd reported closed once by the next wait.  The refusals are
injected into a real epoll backend, so what the tests watch is real.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Iterator

import pytest
from aiocore_plugins.auto import AutoBackend
from aiocore_plugins.epoll import EpollBackend
from aiocore_plugins.poll import PollBackend

from aiocore.backend import EVENT_IN, EVENT_NVAL, EVENT_OUT, Backend, BackendSetup

pytestmark = pytest.mark.skipif(
    not hasattr(select, "epoll") or not hasattr(select, "poll"),
    reason="needs select.poll and select.epoll",
)


class RefusingEpoll(EpollBackend):
    """epoll whose ``epoll_ctl`` refuses the next adds with the errnos in ``refusals``."""

    refusals: list[int]

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        if new_mask and not old_mask and self.refusals:
            code = self.refusals.pop(0)
            raise OSError(code, os.strerror(code))
        super().update(fd, old_mask, new_mask)


class Harness:
    """An :class:`AutoBackend` (threshold 2, never io_uring) whose epoll refuses on demand."""

    def __init__(self, refusals: list[int]) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.refusals = refusals
        setup = BackendSetup(
            options={"epoll_threshold": 2, "io_uring": "never"},
            open=self.open,
            log=self.warnings.append,
            info=self.infos.append,
        )
        self.auto = AutoBackend(setup)
        self.pairs: list[tuple[socket.socket, socket.socket]] = []

    def open(self, name: str) -> Backend:
        setup = BackendSetup(options={}, open=self.open, log=self.warnings.append)
        if name == "poll":
            return PollBackend(setup)
        if name == "epoll":
            epoll = RefusingEpoll(setup)
            epoll.refusals = self.refusals
            return epoll
        raise LookupError(name)

    def add(self) -> int:
        """Register a new socket for reading; return its fd."""
        pair = socket.socketpair()
        self.pairs.append(pair)
        fd = pair[0].fileno()
        self.auto.update(fd, 0, EVENT_IN)
        return fd

    def close(self) -> None:
        for a, _b in self.pairs:
            self.auto.update(a.fileno(), EVENT_IN, 0)
        self.auto.close()
        for a, b in self.pairs:
            a.close()
            b.close()


@pytest.fixture
def make(no_fd_leak: None) -> Iterator[type[Harness]]:
    made: list[Harness] = []

    class Made(Harness):
        def __init__(self, refusals: list[int]) -> None:
            super().__init__(refusals)
            made.append(self)

    yield Made
    for h in made:
        h.close()


@pytest.mark.parametrize("code", [errno.ENOMEM, errno.ENOSPC], ids=["ENOMEM", "ENOSPC"])
def test_a_transient_refusal_postpones_the_upgrade(make: type[Harness], code: int) -> None:
    """Found by audit: any refusal kept auto on poll for good."""
    h = make([code, code])
    auto = h.auto
    h.add()
    h.add()
    assert auto.maintenance_due
    auto.maintain()
    assert (auto.name, auto.statistics()["final"]) == ("poll", False)
    assert len(h.warnings) == 1
    assert "postponed" in h.warnings[0] and os.strerror(code) in h.warnings[0]
    # Retried at the next change; the same refusal again is not a second warning.
    h.add()
    assert auto.maintenance_due
    auto.maintain()
    assert auto.name == "poll"
    assert len(h.warnings) == 1
    assert ["postponed" in m for m in h.infos] == [True]
    last = h.add()
    auto.maintain()
    assert (auto.name, auto.upgrades, h.refusals) == ("epoll", 1, [])
    # Every fd made it into the epoll set.
    for _a, b in h.pairs:
        b.send(b"x")
    reported = dict(auto.wait(0))
    assert sorted(reported) == sorted(a.fileno() for a, _b in h.pairs)
    assert reported[last] & EVENT_IN


def test_eperm_still_keeps_it_on_poll_for_good(make: type[Harness]) -> None:
    h = make([errno.EPERM])
    auto = h.auto
    h.add()
    h.add()
    auto.maintain()
    assert (auto.name, auto.statistics()["final"]) == ("poll", True)
    assert "for good" in h.warnings[-1]
    h.add()
    assert not auto.maintenance_due
    auto.maintain()
    assert auto.name == "poll"


def test_ebadf_is_reported_once_and_the_upgrade_goes_on(make: type[Harness]) -> None:
    """EBADF: the fd was closed while registered.  Reported by the next wait
    as poll would (EVENT_NVAL once, without blocking), then unwatched until
    its handler changes."""
    h = make([errno.EBADF])
    auto = h.auto
    refused = h.add()
    other = h.add()
    auto.maintain()
    assert (auto.name, auto.statistics()["final"]) == ("epoll", False)
    assert auto.statistics()["fds"] == 2
    assert auto.statistics()["unwatched_closed_fds"] == [refused]
    assert auto.need_wait()
    assert auto.wait(0) == [(refused, EVENT_NVAL)]
    assert not auto.need_wait()
    assert auto.wait(0) == []
    # A change watches it again (here it is open: epoll takes it).
    auto.update(refused, EVENT_IN, EVENT_IN | EVENT_OUT)
    assert auto.statistics()["unwatched_closed_fds"] == []
    assert dict(auto.wait(0)).get(refused, 0) & EVENT_OUT
    assert other not in dict(auto.wait(0))


def test_removing_an_unwatched_fd_asks_nothing_of_epoll(make: type[Harness]) -> None:
    h = make([errno.EBADF])
    auto = h.auto
    refused = h.add()
    h.add()
    auto.maintain()
    assert auto.name == "epoll"
    # Removed before the wait that would report it: not reported at all,
    # and epoll (which never had it) is not asked to remove it.
    auto.update(refused, EVENT_IN, 0)
    assert auto.wait(0) == []
    assert auto.statistics()["fds"] == 1
    h.pairs[0][0].close()
    h.pairs[0][1].close()
    del h.pairs[0]
