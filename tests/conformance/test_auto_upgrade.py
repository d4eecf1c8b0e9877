"""The ``auto`` backend's upgrade from poll to epoll (SPEC 10, with SPEC 3, 9, 12).

Only for ``auto`` (skipped with the reason where it or epoll is unavailable):
100 notifiers force the upgrade (``backend_name`` goes from ``poll`` to
``epoll``) and nothing is lost across it (a notifier set before is dispatched
after, every registration works after, readiness left undispatched by an
exception before the upgrade is dispatched after); the default threshold of 64
fds; the upgrade happens only at the outermost poll level and not while
external clients are disabled; no downgrade; an fd epoll refuses (a regular
file) makes the context fall back to poll for good and say so in its log;
closing an upgraded context leaks no fd.  An fd closed while registered
(SPEC 3) neither keeps it on poll nor is watched again: a removal epoll
refuses forgets the fd and never makes it fall back, and the upgrade skips a
closed fd, reporting it once as poll would.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterator

import pytest

from aiocore import AioContext, EventNotifier, PluginRegistry

from ..conftest import skip_or_fail_unavailable
from ._support import ExcLog, Pair, WaitSpy, poll_until

MANY = 100


def _require_auto_and_epoll(registry: PluginRegistry) -> None:
    """Skip without them, or fail where AIOCORE_REQUIRE_BACKENDS says they must run."""
    for name in ("auto", "epoll"):
        if name not in registry.backends:
            skip_or_fail_unavailable(name, "no plugin registers it")
        reason = registry.probe(name)
        if reason is not None:
            skip_or_fail_unavailable(name, reason)


@pytest.fixture
def auto_ctx(registry: PluginRegistry) -> Iterator[AioContext]:
    _require_auto_and_epoll(registry)
    ctx = AioContext(backend="auto", registry=registry)
    try:
        yield ctx
    finally:
        ctx.close()


class Notifiers:
    """*n* event notifiers registered on *ctx*, counting their dispatches."""

    def __init__(self, ctx: AioContext, registry: PluginRegistry) -> None:
        self.ctx = ctx
        self.registry = registry
        self.items: list[EventNotifier] = []
        self.counts: dict[int, int] = {}

    def add(self, n: int) -> list[EventNotifier]:
        made = []
        for _ in range(n):
            e = EventNotifier(registry=self.registry)
            self.items.append(e)
            self.counts[id(e)] = 0
            self.ctx.set_event_notifier(e, self._on_read)
            made.append(e)
        return made

    def _on_read(self, e: EventNotifier) -> None:
        e.test_and_clear()
        self.counts[id(e)] += 1

    def count(self, e: EventNotifier) -> int:
        return self.counts[id(e)]

    def remove_all(self) -> None:
        for e in self.items:
            if not self.ctx.closed and e.fileno() in self.ctx.handler_fds():
                self.ctx.set_event_notifier(e, None)

    def close(self) -> None:
        self.remove_all()
        for e in self.items:
            e.close()


@pytest.fixture
def notifiers(auto_ctx: AioContext, registry: PluginRegistry) -> Iterator[Notifiers]:
    ns = Notifiers(auto_ctx, registry)
    yield ns
    ns.close()


def test_many_notifiers_force_the_upgrade_and_nothing_is_lost(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    ctx = auto_ctx
    assert ctx.backend_name == "poll"
    made = notifiers.add(MANY)
    early = made[37]
    early.set()
    assert poll_until(ctx, lambda: notifiers.count(early) == 1, max_polls=3) >= 0
    assert ctx.backend_name == "epoll"
    # Every registration was migrated.
    for e in made:
        e.set()
    assert poll_until(
        ctx, lambda: all(notifiers.count(e) >= 1 for e in made) and notifiers.count(early) == 2,
        max_polls=5,
    ) >= 0
    assert ctx.poll(False) is False
    assert sum(notifiers.counts.values()) == MANY + 1


def test_notifier_set_before_the_upgrade_is_dispatched_after(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    ctx = auto_ctx
    first = notifiers.add(1)[0]
    ctx.poll(False)
    first.set()
    notifiers.add(MANY - 1)
    assert ctx.backend_name == "poll"
    assert poll_until(ctx, lambda: notifiers.count(first) == 1, max_polls=3) >= 0
    assert ctx.backend_name == "epoll"


def test_default_threshold_is_64_fds(auto_ctx: AioContext, notifiers: Notifiers) -> None:
    ctx = auto_ctx
    notifiers.add(62)
    for _ in range(3):
        ctx.poll(False)
    assert ctx.backend_name == "poll"
    notifiers.add(8)
    ctx.poll(False)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"


def test_the_upgrade_is_logged_as_info_not_as_a_warning(
    auto_ctx: AioContext, notifiers: Notifiers, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade at the threshold is routine: one INFO record with the fd
    count, no warning (a server opening many contexts must not be told to
    worry).  Warnings are for a fallback for good."""
    caplog.set_level(logging.DEBUG, logger="aiocore")
    notifiers.add(70)
    auto_ctx.poll(False)
    assert auto_ctx.backend_name == "epoll"
    upgrades = [r for r in caplog.records if "upgraded from poll to epoll" in r.getMessage()]
    assert [r.levelno for r in upgrades] == [logging.INFO]
    assert "at 71 fds" in upgrades[0].getMessage()  # 70 + the context's notifier
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_upgrade_only_at_the_outermost_level(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    ctx = auto_ctx
    inside: list[str] = []

    def bh(_opaque: object) -> None:
        notifiers.add(MANY)
        ctx.poll(False)
        inside.append(ctx.backend_name)
        ctx.poll(False)
        inside.append(ctx.backend_name)

    ctx.bh_schedule_oneshot(bh)
    ctx.poll(False)
    assert inside == ["poll", "poll"]
    ctx.poll(False)
    assert ctx.backend_name == "epoll"


def test_no_upgrade_while_external_clients_are_disabled(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    ctx = auto_ctx
    ctx.disable_external()
    made = notifiers.add(MANY)
    for _ in range(3):
        ctx.poll(False)
    assert ctx.backend_name == "poll"
    ctx.enable_external()
    made[5].set()
    assert poll_until(ctx, lambda: notifiers.count(made[5]) == 1, max_polls=3) >= 0
    assert ctx.backend_name == "epoll"


def test_external_handlers_survive_the_upgrade(
    auto_ctx: AioContext, notifiers: Notifiers, registry: PluginRegistry
) -> None:
    ctx = auto_ctx
    ext = EventNotifier(registry=registry)
    try:
        hits: list[int] = []
        def on_read(n: EventNotifier) -> None:
            hits.append(1)
            n.test_and_clear()

        ctx.set_event_notifier(ext, on_read, is_external=True)
        notifiers.add(MANY)
        ctx.poll(False)
        assert ctx.backend_name == "epoll"
        ext.set()
        ctx.disable_external()
        ctx.poll(False)
        assert hits == []
        ctx.enable_external()
        assert poll_until(ctx, lambda: bool(hits), max_polls=3) >= 0
        ctx.set_event_notifier(ext, None)
    finally:
        ext.close()


def test_no_downgrade(auto_ctx: AioContext, notifiers: Notifiers) -> None:
    ctx = auto_ctx
    notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"
    notifiers.remove_all()
    for _ in range(3):
        ctx.poll(False)
    assert ctx.backend_name == "epoll"
    # And it still works.
    pair = Pair()
    try:
        got: list[int] = []
        ctx.set_fd_handler(pair.a, None, lambda _o: got.append(1))
        assert poll_until(ctx, lambda: bool(got), max_polls=3) >= 0
        ctx.set_fd_handler(pair.a, None)
    finally:
        pair.close()


def test_undispatched_readiness_survives_the_upgrade(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    # Two notifiers are reported ready; the first dispatched drains both and
    # raises through a re-raising handler.  Then enough fds are added to
    # upgrade: the next poll upgrades and must still dispatch the other one.
    ctx = auto_ctx
    ctx.set_exception_handler(ExcLog(reraise=True))
    calls: list[int] = []
    pair_es = notifiers.add(2)

    def make(idx: int) -> Callable[[EventNotifier], None]:
        def cb(_e: EventNotifier) -> None:
            calls.append(idx)
            for e in pair_es:
                e.test_and_clear()
            if len(calls) == 1:
                raise ValueError("first")

        return cb

    for idx, e in enumerate(pair_es):
        ctx.set_event_notifier(e, make(idx))
    ctx.poll(False)
    for e in pair_es:
        e.set()
    with pytest.raises(ValueError, match="first"):
        ctx.poll(False)
    assert len(calls) == 1
    notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"
    assert sorted(calls) == [0, 1]


def test_upgrade_after_an_exception_escaped_poll(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    # poll() restores its nesting level when a callback's exception escapes;
    # otherwise the "outermost level" would never come back.
    ctx = auto_ctx

    def boom(_opaque: object) -> None:
        raise KeyboardInterrupt

    ctx.bh_schedule_oneshot(boom)
    with pytest.raises(KeyboardInterrupt):
        ctx.poll(True)
    ctx.set_exception_handler(ExcLog(reraise=True))
    ctx.bh_schedule_oneshot(lambda _o: (_ for _ in ()).throw(ValueError("x")))
    with pytest.raises(ValueError, match="x"):
        ctx.poll(False)
    notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"


def test_regular_file_makes_it_fall_back_to_poll_for_good(
    auto_ctx: AioContext,
    notifiers: Notifiers,
    tmp_path: os.PathLike[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = auto_ctx
    caplog.set_level(logging.INFO, logger="aiocore")
    made = notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"
    path = os.path.join(os.fspath(tmp_path), "regular")
    with open(path, "wb") as f:
        f.write(b"data")
    fd = os.open(path, os.O_RDONLY)
    try:
        reads: list[int] = []
        ctx.set_fd_handler(fd, lambda _o: reads.append(1))
        assert ctx.backend_name == "poll"
        assert any("poll" in r.getMessage() and r.name.startswith("aiocore")
                   for r in caplog.records if r.levelno >= logging.WARNING)
        # A regular file is always ready; the notifiers still work.
        made[3].set()
        assert poll_until(ctx, lambda: bool(reads) and notifiers.count(made[3]) == 1,
                          max_polls=3) >= 0
        # For good: more fds do not upgrade again.
        notifiers.add(20)
        for _ in range(3):
            ctx.poll(False)
        assert ctx.backend_name == "poll"
        ctx.set_fd_handler(fd, None)
    finally:
        os.close(fd)


def test_regular_file_before_the_upgrade_keeps_it_on_poll(
    auto_ctx: AioContext,
    notifiers: Notifiers,
    tmp_path: os.PathLike[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = auto_ctx
    caplog.set_level(logging.INFO, logger="aiocore")
    path = os.path.join(os.fspath(tmp_path), "regular")
    with open(path, "wb") as f:
        f.write(b"data")
    fd = os.open(path, os.O_RDONLY)
    try:
        ctx.set_fd_handler(fd, lambda _o: None)
        made = notifiers.add(MANY)
        for _ in range(3):
            ctx.poll(False)
        assert ctx.backend_name == "poll"
        assert any(r.name.startswith("aiocore") for r in caplog.records
                   if r.levelno >= logging.WARNING)
        made[0].set()
        assert poll_until(ctx, lambda: notifiers.count(made[0]) == 1, max_polls=3) >= 0
        ctx.set_fd_handler(fd, None)
    finally:
        os.close(fd)


def test_upgraded_context_closes_without_leaks(
    registry: PluginRegistry, no_fd_leak: None
) -> None:
    _require_auto_and_epoll(registry)
    es = [EventNotifier(registry=registry) for _ in range(MANY)]
    try:
        for _ in range(3):
            ctx = AioContext(backend="auto", registry=registry)
            for e in es:
                ctx.set_event_notifier(e, lambda n: n.test_and_clear())
            ctx.poll(False)
            assert ctx.backend_name == "epoll"
            ctx.close()
    finally:
        for e in es:
            e.close()


def _regular_file(tmp_path: os.PathLike[str]) -> int:
    path = os.path.join(os.fspath(tmp_path), "regular")
    with open(path, "wb") as f:
        f.write(b"data")
    return os.open(path, os.O_RDONLY)


def _high_dup(fd: int) -> int:
    """A dup of *fd* above every open fd: a number no new fd takes by itself."""
    top = max(int(name) for name in os.listdir("/proc/self/fd"))
    return fcntl.fcntl(fd, fcntl.F_DUPFD, top + 2)


def _reuse_number(fd: int, by: int) -> None:
    """Make the (closed) number *fd* name the file of *by*."""
    assert os.dup2(by, fd) == fd


def test_a_removal_epoll_refuses_forgets_the_fd_for_a_later_fallback(
    auto_ctx: AioContext, notifiers: Notifiers, tmp_path: os.PathLike[str]
) -> None:
    """Found by audit: a removal that epoll refused (EBADF: the fd was closed
    while registered) left the fd in auto's own table.  A later fallback to
    poll registered it again, and the number, reused by a readable socket
    nobody watches, was reported by every wait: a busy loop."""
    ctx = auto_ctx
    errors = ExcLog()
    ctx.set_exception_handler(errors)
    notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"
    gone, other = Pair(), Pair()
    fd = gone.a
    try:
        ctx.set_fd_handler(fd, lambda _o: None)
        gone.sa.close()  # closed while registered: epoll forgets it silently
        ctx.set_fd_handler(fd, None)  # EPOLL_CTL_DEL fails: reported once
        assert [getattr(e, "errno", None) for e in errors.seen] == [errno.EBADF]
        _reuse_number(fd, other.a)
        other.send_to_a()  # readable, and no handler watches it
        regular = _regular_file(tmp_path)
        try:
            ctx.set_fd_handler(regular, lambda _o: None)
            assert ctx.backend_name == "poll"  # fell back for good
            ctx.set_fd_handler(regular, None)
        finally:
            os.close(regular)
        spy = WaitSpy(ctx)
        try:
            ctx.poll(False)
        finally:
            spy.restore()
        assert spy.calls == 1
        assert fd not in dict(spy.reports[0])  # was reported by every wait
        assert len(errors.seen) == 1
        assert ctx.backend_statistics()["fds"] == len(ctx.handler_fds()) + 1
    finally:
        os.close(fd)
        gone.close()
        other.close()


def test_a_removal_epoll_refuses_with_eperm_does_not_make_it_fall_back(
    auto_ctx: AioContext, notifiers: Notifiers, tmp_path: os.PathLike[str]
) -> None:
    """EPOLL_CTL_DEL of a number that now names a regular file fails with
    EPERM (the fd was closed while registered and the number reused).  That
    says nothing about the fds epoll watches: no fallback to poll."""
    ctx = auto_ctx
    errors = ExcLog()
    ctx.set_exception_handler(errors)
    notifiers.add(MANY)
    ctx.poll(False)
    assert ctx.backend_name == "epoll"
    gone = Pair()
    fd = gone.a
    regular = _regular_file(tmp_path)
    try:
        ctx.set_fd_handler(fd, lambda _o: None)
        gone.sa.close()
        _reuse_number(fd, regular)
        ctx.set_fd_handler(fd, None)
        assert [getattr(e, "errno", None) for e in errors.seen] == [errno.EPERM]
        assert ctx.backend_name == "epoll"
        assert ctx.backend_statistics()["final"] is False
        assert fd not in ctx.handler_fds()
        assert ctx.backend_statistics()["fds"] == len(ctx.handler_fds()) + 1
    finally:
        os.close(fd)
        os.close(regular)
        gone.close()


def test_an_fd_poll_reported_closed_does_not_keep_it_on_poll(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    """Found by audit: an fd closed while registered (poll reported it once,
    SPEC 3) made the upgrade stay on poll for good ("epoll refused fd ...
    (Bad file descriptor)"); SPEC 10 gives that up only for EPERM.  The
    upgrade skips the fd, which stays unwatched as on poll: its reused number
    does not call the stale handler, and removing it reports nothing more."""
    ctx = auto_ctx
    errors = ExcLog()
    ctx.set_exception_handler(errors)
    ctx.disable_external()  # holds the upgrade back while the fd is closed
    notifiers.add(MANY)
    gone, other = Pair(), Pair()
    fd = _high_dup(gone.a)  # the new epoll instance cannot take its number
    calls: list[object] = []
    try:
        ctx.set_fd_handler(fd, calls.append)
        os.close(fd)
        ctx.poll(False)  # poll: POLLNVAL, reported once
        assert [getattr(e, "errno", None) for e in errors.seen] == [errno.EBADF]
        assert ctx.backend_name == "poll"
        ctx.enable_external()
        ctx.poll(False)
        assert ctx.backend_name == "epoll"
        assert ctx.backend_statistics()["final"] is False
        _reuse_number(fd, other.a)
        other.send_to_a()
        for _ in range(3):
            ctx.poll(False)
        assert calls == []
        assert len(errors.seen) == 1
        ctx.set_fd_handler(fd, None)
        assert len(errors.seen) == 1
        assert ctx.backend_statistics()["fds"] == len(ctx.handler_fds()) + 1
    finally:
        os.close(fd)
        gone.close()
        other.close()


def _closed_before_the_upgrade(ctx: AioContext, notifiers: Notifiers, high: bool) -> None:
    errors = ExcLog()
    ctx.set_exception_handler(errors)
    ctx.disable_external()  # holds the upgrade back
    notifiers.add(MANY)
    gone = Pair()
    fd = _high_dup(gone.a) if high else gone.a
    calls: list[object] = []
    try:
        ctx.set_fd_handler(fd, calls.append)
        ctx.poll(False)
        if high:
            os.close(fd)
        else:
            gone.sa.close()  # the lowest free number: the new epoll takes it
        ctx.enable_external()
        ctx.poll(False)  # upgrades, then reports the fd
        assert ctx.backend_name == "epoll"
        assert ctx.backend_statistics()["final"] is False
        assert [getattr(e, "errno", None) for e in errors.seen] == [errno.EBADF]
        for _ in range(3):
            ctx.poll(False)
        assert len(errors.seen) == 1
        assert calls == []
        ctx.set_fd_handler(fd, None)
        assert len(errors.seen) == 1
        assert fd not in ctx.handler_fds()
        assert ctx.backend_statistics()["fds"] == len(ctx.handler_fds()) + 1
    finally:
        gone.close()


def test_an_fd_closed_just_before_the_upgrade_is_reported_once(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    """An fd closed since poll's last wait: epoll_ctl refuses it with EBADF
    during the upgrade.  The upgrade goes on, and the next wait reports the
    fd closed, once, as poll would have; removing it reports nothing more."""
    _closed_before_the_upgrade(auto_ctx, notifiers, high=True)


def test_an_fd_whose_number_the_new_epoll_takes_is_reported_once(
    auto_ctx: AioContext, notifiers: Notifiers
) -> None:
    """The same when the closed number is the lowest free one: the upgrade's
    own epoll instance takes it, and epoll_ctl refuses to add an epoll fd to
    itself (EINVAL).  That fd was closed too: reported once, upgrade done."""
    _closed_before_the_upgrade(auto_ctx, notifiers, high=False)
