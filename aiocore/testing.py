"""pytest fixtures and conformance tests for aiocore plugins (backends and sources).

An outside plugin runs the same kind of checks the core runs on its
built-ins.  In the plugin's ``conftest.py`` (or a test module)::

    pytest_plugins = ["aiocore.testing"]

or on the command line: ``pytest -p aiocore.testing``.

**Fixtures.**

``aiocore_registry`` (session)
    a :class:`~aiocore.PluginRegistry` with the built-ins and every installed
    ``aiocore`` entry point, strict (a plugin that fails to load fails the
    session, naming it) and blind to the developer's ``AIOCORE_*``
    environment.  Override it in your ``conftest.py`` to test a plugin that
    is not installed: ``PluginRegistry(plugins=[("mine", my_module)], env={})``.
``aiocore_backend``
    parametrized over every backend of the registry; an unavailable backend
    is skipped with its reason.
``aiocore_ctx``
    an :class:`~aiocore.AioContext` on ``aiocore_backend``, closed afterwards.
``no_fd_leak``
    fails the test if it leaves a file descriptor open, or if one of its
    files or sockets was closed by the garbage collector instead of by its
    owner (a ``ResourceWarning``: the owner forgot it, and only the
    finalizer hid the leak).  Request it *before* other fixtures that open
    fds, so it checks after they are torn down.

**Conformance classes.**

Subclass one in a test module; pytest collects the inherited tests::

    from aiocore.testing import BackendConformance, SourceConformance

    class TestSelectBackend(BackendConformance):
        backend_name = "select"

    class TestInotifySource(SourceConformance):
        source_name = "inotify"

        def make_handle(self, source, tmp_path):
            return source.watch(tmp_path, lambda event: None)

:class:`BackendConformance` checks the rules of :mod:`aiocore.backend`
through a context: readiness, level-triggering, a change of event mask,
removal, and an fd closed while registered (no crash, no busy loop, reported
at most once).  :class:`SourceConformance` checks the source contract of
:func:`aiocore.hookspec.aiocore_register_sources` on every backend: the
source is registered and made once per context, what it makes registers
handlers and releases them and its fds when closed, and everything is closed
with the context with no fd left open.  The fds are compared right after
``close_handle()`` or ``ctx.close()``, while the test still holds every
handle, so a source whose ``close()`` forgets something fails even if a
finalizer (``socket.__del__``, ``EventNotifier.__del__``) would close it
later; a ``ResourceWarning`` inside these tests fails them too.  Every wait
in these tests is bounded by a guard timer, so a broken plugin fails them
instead of hanging them.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from . import SCALE_MS, AioContext, Clock, PluginRegistry, PluginWarning, clock_get_ns

__all__ = [
    "BackendConformance",
    "SourceConformance",
    "aiocore_backend",
    "aiocore_ctx",
    "aiocore_registry",
    "no_fd_leak",
    "open_fds",
    "run_until",
]

#: Bound, in seconds, of any wait in these tests.
DEADLINE_S = 5.0


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def open_fds() -> set[int]:
    """The file descriptors this process has open now (Linux ``/proc``, else ``/dev/fd``)."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    fds = set()
    for name in os.listdir(folder):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue  # the listing's own fd, closed by now
        fds.add(fd)
    return fds


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _fds_left(before: set[int], what: str) -> None:
    """Fail if fds beyond *before* are open now (call it while the owners are referenced)."""
    left = open_fds() - before
    assert not left, (
        f"{what} left file descriptors open: { {fd: _describe(fd) for fd in sorted(left)} } "
        "(checked at once, with every handle still referenced: an fd that only a "
        "finalizer would close counts as left open)"
    )


@contextlib.contextmanager
def _no_finalizer_closes(what: str) -> Iterator[None]:
    """Fail if, inside the block, a file or socket is closed by its finalizer.

    Such a close says ``ResourceWarning`` ("unclosed socket", "unclosed file",
    "unclosed AioContext"): its owner forgot it.  Garbage from before the
    block is collected first, so it is not blamed; garbage made inside is
    collected at the end, so a finalizer runs before the check, not after.
    Other warnings seen inside are passed on.
    """
    gc.collect()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            yield
            gc.collect()
    finally:
        for w in caught:
            if not issubclass(w.category, ResourceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, (
        f"{what}: closed by the garbage collector, not by its owner "
        f"({len(unclosed)} ResourceWarning): {'; '.join(unclosed[:5])}"
    )


def run_until(
    ctx: AioContext,
    predicate: Callable[[], bool],
    *,
    timeout: float = DEADLINE_S,
    guard_ms: int = 50,
    what: str = "condition",
) -> int:
    """Poll *ctx* (blocking) until ``predicate()``; return the number of polls.

    A guard timer wakes a blocking poll after *guard_ms* at most (it is
    re-armed only once it fired: moving it notifies, which would make every
    poll return at once), and the loop fails the test after *timeout*
    seconds: a missing event fails, never hangs.
    """
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    deadline = time.monotonic() + timeout
    polls = 0
    try:
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not reached within {timeout} s ({polls} polls)")
            if not guard.pending:  # re-arming a pending guard would notify: a busy loop
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + guard_ms)
            ctx.poll(True)
            polls += 1
    finally:
        guard.delete()
    return polls


def _poll_for(ctx: AioContext, seconds: float) -> None:
    """Keep polling for *seconds* (to show that nothing more happens)."""
    deadline = time.monotonic() + seconds
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    try:
        while time.monotonic() < deadline:
            if not guard.pending:
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + 5)
            ctx.poll(True)
    finally:
        guard.delete()


def _default_registry() -> PluginRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return PluginRegistry(env={}, strict=True, block=())


_collection_registry: PluginRegistry | None = None


def _backend_names() -> list[str]:
    global _collection_registry
    if _collection_registry is None:
        _collection_registry = _default_registry()
    return list(_collection_registry.backends)


# ---------------------------------------------------------------------------
# Fixtures and the parametrization hook
# ---------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``aiocore_backend`` over every registered backend."""
    if "aiocore_backend" in metafunc.fixturenames:
        metafunc.parametrize("aiocore_backend", _backend_names(), indirect=True)


@pytest.fixture(scope="session")
def aiocore_registry() -> PluginRegistry:
    """Built-ins plus installed entry points; strict; no ``AIOCORE_*`` environment."""
    return _default_registry()


@pytest.fixture
def aiocore_backend(request: pytest.FixtureRequest, aiocore_registry: PluginRegistry) -> str:
    """A backend name (parametrized); skipped with the reason where unavailable."""
    name: str = getattr(request, "param", "auto")
    if name not in aiocore_registry.backends:
        pytest.skip(f"backend {name!r} is not registered in aiocore_registry")
    reason = aiocore_registry.probe(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return name


@pytest.fixture
def aiocore_ctx(aiocore_backend: str, aiocore_registry: PluginRegistry) -> Iterator[AioContext]:
    """An :class:`~aiocore.AioContext` on ``aiocore_backend``, closed afterwards."""
    ctx = AioContext(backend=aiocore_backend, registry=aiocore_registry)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor open, or leaves one to a finalizer."""
    with _no_finalizer_closes("a file or socket of the test"):
        before = open_fds()
        yield
    leaked = open_fds() - before
    assert not leaked, f"file descriptors leaked: { {fd: _describe(fd) for fd in leaked} }"


# ---------------------------------------------------------------------------
# Backend conformance
# ---------------------------------------------------------------------------


class _Pair:
    """A non-blocking socketpair; ``a`` is watched, ``b`` pokes it."""

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.b.setblocking(False)

    def close(self) -> None:
        self.a.close()
        self.b.close()


class BackendConformance:
    """The backend rules, checked through a context on :attr:`backend_name`.

    Subclass it and set ``backend_name``; an unavailable backend is skipped
    with its probe's reason.
    """

    #: The backend under test, as users select it.
    backend_name: ClassVar[str] = ""

    @pytest.fixture
    def backend_ctx(self, aiocore_registry: PluginRegistry) -> Iterator[AioContext]:
        name = self.backend_name
        if not name:
            pytest.fail(f"{type(self).__name__} must set backend_name")
        if name not in aiocore_registry.backends:
            known = ", ".join(sorted(aiocore_registry.backends))
            pytest.fail(f"backend {name!r} is not registered (known: {known})")
        reason = aiocore_registry.probe(name)
        if reason is not None:
            pytest.skip(f"backend {name!r} unavailable: {reason}")
        ctx = AioContext(backend=name, registry=aiocore_registry)
        try:
            yield ctx
        finally:
            ctx.close()

    @pytest.fixture
    def pair(self, backend_ctx: AioContext) -> Iterator[_Pair]:
        p = _Pair()
        yield p
        if not backend_ctx.closed:
            backend_ctx.set_exception_handler(lambda _c, _e: None)
            for s in (p.a, p.b):
                if s.fileno() >= 0 and s.fileno() in backend_ctx.handler_fds():
                    backend_ctx.set_fd_handler(s, None)
        p.close()

    def test_backend_is_the_one_asked_for(self, backend_ctx: AioContext) -> None:
        assert backend_ctx.backend_name  # a composite backend may name its mechanism
        assert backend_ctx.poll(False) is False  # nothing registered: no progress

    def test_readiness_runs_io_read(self, backend_ctx: AioContext, pair: _Pair) -> None:
        seen: list[bytes] = []
        backend_ctx.set_fd_handler(pair.a, lambda s: seen.append(s.recv(100)), opaque=pair.a)
        backend_ctx.poll(False)
        pair.b.send(b"ping")
        run_until(backend_ctx, lambda: bool(seen), what="io_read after a write")
        assert seen == [b"ping"]

    def test_not_ready_means_not_called(self, backend_ctx: AioContext, pair: _Pair) -> None:
        calls: list[int] = []
        backend_ctx.set_fd_handler(pair.a, lambda _o: calls.append(1))
        _poll_for(backend_ctx, 0.03)
        assert calls == []

    def test_level_triggered(self, backend_ctx: AioContext, pair: _Pair) -> None:
        calls: list[int] = []
        backend_ctx.set_fd_handler(pair.a, lambda _o: calls.append(1))  # never drains
        pair.b.send(b"x")
        run_until(backend_ctx, lambda: len(calls) >= 3, what="three reports of one readiness")
        pair.a.recv(10)
        n = len(calls)
        _poll_for(backend_ctx, 0.03)
        assert len(calls) <= n + 1  # at most one report already in flight

    def test_mask_change(self, backend_ctx: AioContext, pair: _Pair) -> None:
        reads: list[int] = []
        writes: list[int] = []
        backend_ctx.set_fd_handler(pair.a, None, lambda _o: writes.append(1))
        run_until(backend_ctx, lambda: bool(writes), what="io_write on a writable socket")
        backend_ctx.set_fd_handler(pair.a, lambda _o: reads.append(1), None)
        n = len(writes)
        _poll_for(backend_ctx, 0.03)
        assert len(writes) == n  # write interest is gone
        assert reads == []  # not readable yet
        pair.b.send(b"x")
        run_until(backend_ctx, lambda: bool(reads), what="io_read after the mask changed")

    def test_removal(self, backend_ctx: AioContext, pair: _Pair) -> None:
        calls: list[int] = []
        backend_ctx.set_fd_handler(pair.a, lambda _o: calls.append(1))
        pair.b.send(b"x")
        run_until(backend_ctx, lambda: bool(calls))
        backend_ctx.set_fd_handler(pair.a, None)
        assert pair.a.fileno() not in backend_ctx.handler_fds()
        n = len(calls)
        _poll_for(backend_ctx, 0.03)
        assert len(calls) == n

    def test_closed_fd_neither_crashes_nor_spins(self, backend_ctx: AioContext) -> None:
        errors: list[BaseException] = []
        backend_ctx.set_exception_handler(lambda _c, e: errors.append(e))
        p = _Pair()
        calls: list[int] = []
        fd = p.a.fileno()
        backend_ctx.set_fd_handler(fd, lambda _o: calls.append(1))
        backend_ctx.poll(False)
        p.close()  # closed while registered (a user error the loop must survive)
        _poll_for(backend_ctx, 0.05)
        # No busy loop of reports: the error, if the kernel reports one, comes once.
        assert len(errors) <= 1, errors
        assert len(calls) <= 1, f"io_read ran {len(calls)} times for a closed fd"
        backend_ctx.set_fd_handler(fd, None)  # a removal error goes to the handler
        assert len(errors) <= 2
        assert fd not in backend_ctx.handler_fds()

    def test_bh_scheduled_from_another_thread_wakes_a_blocking_poll(
        self, backend_ctx: AioContext
    ) -> None:
        ran: list[int] = []
        bh = backend_ctx.bh_new(lambda _o: ran.append(1))
        backend_ctx.poll(False)
        timer = threading.Timer(0.02, bh.schedule)
        timer.start()
        try:
            # The guard is 4 s: only the wake-up can end the first wait sooner.
            polls = run_until(
                backend_ctx, lambda: bool(ran), guard_ms=4000, timeout=8, what="the BH"
            )
        finally:
            timer.join(DEADLINE_S)
        assert polls <= 3, f"{polls} polls: the guard timer, not the wake-up, ended the wait"
        bh.delete()


# ---------------------------------------------------------------------------
# Source conformance
# ---------------------------------------------------------------------------


class SourceConformance:
    """The source contract, on every backend, for the source :attr:`source_name`.

    Subclass it, set ``source_name`` and implement :meth:`make_handle`, which
    makes one thing on the source that holds file descriptors (a watch, a
    timer, a listener).  Set ``registers_fds = False`` if it does not
    register handlers on the context.

    What the tests hold the source to: :meth:`close_handle` removes the
    handle's handlers and closes the fds it opened, and ``ctx.close()`` does
    that for every handle still open and for the source's own fds, at once
    (the fds are compared while the handles are still referenced, so a
    finalizer closing them later does not count), with no ``ResourceWarning``.
    """

    #: The name the source is registered under (``ctx.sources.<name>``).
    source_name: ClassVar[str] = ""
    #: Whether what :meth:`make_handle` makes registers fd handlers.
    registers_fds: ClassVar[bool] = True

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        """Make one object on *source* that owns fds; override this.

        Not overriding it is a misconfigured test class, reported like a
        missing ``source_name``: as a test failure that says what to do.
        """
        pytest.fail(f"{type(self).__name__} must implement make_handle()")

    def close_handle(self, handle: Any) -> None:
        """Release *handle*: ``close()`` or ``cancel()`` by default."""
        closer = getattr(handle, "close", None) or getattr(handle, "cancel", None)
        if closer is None:
            pytest.fail(
                f"{type(self).__name__}: {handle!r} has neither close() nor cancel(); "
                "override close_handle()"
            )
        closer()

    def _ctx(self, registry: PluginRegistry, backend: str) -> AioContext:
        if self.source_name not in registry.sources:
            known = ", ".join(sorted(registry.sources)) or "(none)"
            pytest.fail(f"source {self.source_name!r} is not registered (known: {known})")
        return AioContext(backend=backend, registry=registry)

    def test_registered_and_listed(self, aiocore_registry: PluginRegistry) -> None:
        info = aiocore_registry.sources.get(self.source_name)
        assert info is not None, f"source {self.source_name!r} is not registered"
        plugin = aiocore_registry.plugins[info.plugin]
        assert f"source:{self.source_name}" in plugin.provides

    def test_made_once_per_context(
        self, aiocore_registry: PluginRegistry, aiocore_backend: str
    ) -> None:
        with (
            self._ctx(aiocore_registry, aiocore_backend) as ctx1,
            self._ctx(aiocore_registry, aiocore_backend) as ctx2,
        ):
            s1 = getattr(ctx1.sources, self.source_name)
            assert getattr(ctx1.sources, self.source_name) is s1
            assert getattr(ctx2.sources, self.source_name) is not s1
            assert self.source_name in dir(ctx1.sources)

    def test_handle_attaches_and_detaches(
        self,
        no_fd_leak: None,
        aiocore_registry: PluginRegistry,
        aiocore_backend: str,
        tmp_path: Path,
    ) -> None:
        with (
            _no_finalizer_closes(f"a handle of source {self.source_name!r}"),
            self._ctx(aiocore_registry, aiocore_backend) as ctx,
        ):
            source = getattr(ctx.sources, self.source_name)
            before = set(ctx.handler_fds())
            fds = open_fds()
            handle = self.make_handle(source, tmp_path)
            if self.registers_fds:
                assert set(ctx.handler_fds()) - before, "the handle registered no fd handler"
            ctx.poll(False)
            self.close_handle(handle)
            assert set(ctx.handler_fds()) == before, "closing the handle left handlers behind"
            _fds_left(fds, f"closing {handle!r}")  # *handle* is still referenced
            self.close_handle(handle)  # idempotent

    def test_closed_with_the_context(
        self,
        no_fd_leak: None,
        aiocore_registry: PluginRegistry,
        aiocore_backend: str,
        tmp_path: Path,
    ) -> None:
        with _no_finalizer_closes(f"source {self.source_name!r} closed with its context"):
            fds = open_fds()
            ctx = self._ctx(aiocore_registry, aiocore_backend)
            source = getattr(ctx.sources, self.source_name)
            handles = [self.make_handle(source, tmp_path) for _ in range(3)]
            ctx.poll(False)
            ctx.close()  # must close all three, and the source's own fds
            _fds_left(fds, f"ctx.close() with {len(handles)} handles of {source!r}")
            del handles, source

    def test_no_fd_leak_over_many_contexts(
        self,
        no_fd_leak: None,
        aiocore_registry: PluginRegistry,
        aiocore_backend: str,
        tmp_path: Path,
    ) -> None:
        with _no_finalizer_closes(f"source {self.source_name!r} over 30 contexts"):
            fds = open_fds()
            handles = []
            for _ in range(30):
                with self._ctx(aiocore_registry, aiocore_backend) as ctx:
                    source = getattr(ctx.sources, self.source_name)
                    handles.append(self.make_handle(source, tmp_path))
            _fds_left(fds, f"30 contexts closed with a handle of source {self.source_name!r} each")
            del handles
