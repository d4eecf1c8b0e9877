"""Resource leaks: creating and closing contexts leaves nothing behind.

Parametrized over every backend through the ``backend`` fixture, so each
backend's own OS resources (epoll fd, io_uring ring, kqueue) are covered.
"""

from __future__ import annotations

import gc
import os
import socket

import pytest

import aiocore
from tests.conftest import open_fds


def test_thousand_contexts_leak_no_fd(backend: str, registry: aiocore.PluginRegistry) -> None:
    before = open_fds()
    for _ in range(1000):
        ctx = aiocore.AioContext(backend, registry=registry)
        ctx.close()
    gc.collect()
    leaked = open_fds() - before
    assert not leaked, {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked}


def test_contexts_and_notifiers_dropped_unclosed_release_their_fds(
    backend: str, registry: aiocore.PluginRegistry
) -> None:
    # Forgetting close() must not leak an eventfd (and a backend fd) per
    # object until the process ends: collected, they close, with a
    # ResourceWarning, as files and sockets do.
    gc.collect()  # earlier tests' garbage is not this test's
    before = open_fds()
    with pytest.warns(ResourceWarning) as caught:
        for _ in range(20):
            aiocore.AioContext(backend, registry=registry)
            aiocore.EventNotifier(registry=registry)
        gc.collect()
    leaked = open_fds() - before
    assert not leaked, {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked}
    messages = [str(w.message) for w in caught]
    assert sum(m.startswith("unclosed AioContext") for m in messages) == 20
    # The 20 notifiers, and any context's own notifier that the collector
    # finalised before its context.
    assert sum(m.startswith("unclosed <") for m in messages) >= 20


def test_context_with_handlers_closes_its_own_fds_only(
    backend: str, registry: aiocore.PluginRegistry
) -> None:
    before = open_fds()
    a, b = socket.socketpair()
    notifier = aiocore.EventNotifier(registry=registry)
    ctx = aiocore.AioContext(backend, registry=registry)
    ctx.set_fd_handler(a, lambda _: None)
    ctx.set_event_notifier(notifier, lambda n: n.test_and_clear())
    bh = ctx.bh_new(lambda _: None)
    bh.schedule()
    t = ctx.timer_new_ms(aiocore.Clock.REALTIME, lambda _: None)
    t.mod(10**9)
    ctx.close()
    # The user's fds stay open: they belong to the user.
    assert a.fileno() in open_fds()
    assert notifier.fileno() in open_fds()
    notifier.close()
    a.close()
    b.close()
    assert open_fds() == before
    assert not t.pending
    assert not bh.scheduled


def _fill_holes() -> list[int]:
    """Open /dev/null into every free fd below the highest open one.

    The kernel hands out the lowest free number, so without this a lowered
    RLIMIT_NOFILE would still leave the holes usable.
    """
    top = max(open_fds())
    fillers = []
    while True:
        fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        if fd > top:
            os.close(fd)
            return fillers
        fillers.append(fd)


def test_emfile_during_creation_leaks_nothing(
    backend: str, registry: aiocore.PluginRegistry
) -> None:
    """With 0, 1, 2, ... descriptors left, creation fails cleanly until it succeeds.

    A context needs several fds (the backend's, the notifier's); whichever
    runs out, the error is ``EMFILE`` and what was already opened is closed.
    """
    import errno
    import resource

    fillers = _fill_holes()
    before = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    outcomes = []
    try:
        for extra in range(8):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(before) + 1 + extra, hard))
            try:
                ctx = aiocore.AioContext(backend, registry=registry)
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc
                outcomes.append("EMFILE")
                # Listing /proc/self/fd needs a descriptor of its own.
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                assert open_fds() == before, f"leak after EMFILE with {extra} spare fds"
                continue
            outcomes.append("ok")
            ctx.close()
            break
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    assert outcomes[0] == "EMFILE"
    assert outcomes[-1] == "ok"
    assert open_fds() == before - set(fillers)


def test_emfile_creating_notifiers(registry: aiocore.PluginRegistry) -> None:
    import errno
    import resource

    fillers = _fill_holes()
    before = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # One spare fd: eventfd fits, a pipe (two fds) does not.
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(before) + 2, hard))
        aiocore.EventNotifier(kind="eventfd", registry=registry).close()
        try:
            aiocore.EventNotifier(kind="pipe", registry=registry).close()
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        else:
            raise AssertionError("a pipe fitted into one spare fd")
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert open_fds() == before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
