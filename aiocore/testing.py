"""pytest fixtures and conformance tests for aiocore plugins (backends and sources).

An outside plugin runs a portable subset of the checks the core runs on its
built-ins.  Importing this module needs pytest (it is a pytest plugin; aiocore
itself does not depend on pytest).  In the plugin's ``conftest.py`` (or a
test module)::

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
    parametrized over every backend of ``aiocore_registry``; an unavailable
    backend is skipped with its reason.  The names come from your override of
    ``aiocore_registry`` when it takes no arguments (it is then called once
    more, at collection); otherwise, or to choose, set ``backends = [...]``
    on a :class:`SourceConformance` subclass.
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
            return source.watch(tmp_path, self.callback)

        def trigger(self, handle):  # optional: makes the callback due
            Path(handle.path, "file").write_text("")

:class:`BackendConformance` checks the rules of :mod:`aiocore.backend`
through a context: readiness, level-triggering, a change of event mask,
removal and re-adding, an fd that is no longer watched after its removal,
hang-ups and errors reaching the handlers (a pipe, a socket, a write-only
handler), a blocking poll that sleeps until its deadline or its wake-up
(sub-millisecond timeouts included), many fds, a change made from another
thread, an fd closed while registered (reported exactly once, no busy loop),
and ``close()`` releasing every fd.  :class:`SourceConformance` checks the
source contract of :func:`aiocore.hookspec.aiocore_register_sources` on every
backend: the source is registered and made once per context, what it makes
registers handlers and releases them and its fds when closed, no callback
runs after its handle is closed, and everything is closed with the context
with no fd left open.  The fds are compared right after ``close_handle()`` or
``ctx.close()``, while the test still holds every handle, so a source whose
``close()`` forgets something fails even if a finalizer (``socket.__del__``,
``EventNotifier.__del__``) would close it later; a ``ResourceWarning`` inside
these tests fails them too.

No test asserts a duration: a busy loop is found by counting the backend's
``wait()`` calls.  Every test of the two classes runs under a watchdog, a
thread that, ``deadline_s`` seconds after the test started (5; a class
attribute), or one second into a ``poll(False)``, fails it with a message and
wakes its contexts again and again (a ``notify()`` and a write to the
context's notifier): a backend that ignores its timeout fails the test
instead of hanging it.  :func:`run_until` has the
same watchdog.  Only a ``wait()`` that ignores readiness too cannot be
interrupted from Python; use pytest-timeout against that.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import inspect
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from . import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_OUT,
    SCALE_MS,
    AioContext,
    Clock,
    PluginRegistry,
    PluginWarning,
    clock_get_ns,
)

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


def _kick(ctx: AioContext) -> None:
    """Make *ctx*'s backend report its notifier readable, whatever poll() is doing.

    ``notify()`` alone writes the notifier only while a *blocking* poll is
    announced; a ``poll(False)`` stuck in a ``wait()`` that ignores its zero
    timeout is ended only by readiness.  So the notifier is written here too,
    under the lock that ``close()`` takes before closing it.
    """
    try:
        ctx.notify()
    except RuntimeError:
        return  # closed
    with ctx._kick_lock:
        if not ctx._closed:
            ctx._event.set()


#: How long a guarded ``poll(False)`` may take before the watchdog ends it:
#: it only looks (``wait(0)``), so a second means a backend that waits.
NONBLOCKING_S = 1.0


class _Watchdog:
    """A thread that, after *seconds*, marks itself expired and keeps waking contexts.

    Polls wrapped by :meth:`guard` fail the test once it expired; it expires
    early when one of them, non-blocking, has not returned within
    :data:`NONBLOCKING_S`.  It holds the contexts weakly and stops at
    :meth:`stop`.
    """

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.expired = False
        self.message = ""
        self._started = time.monotonic()
        self._nonblocking_since: float | None = None
        self._contexts: weakref.WeakSet[AioContext] = weakref.WeakSet()
        self._lock = threading.Lock()  # guards _contexts (added to by the test)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="aiocore.testing watchdog", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            since = self._nonblocking_since
            if now - self._started >= self.seconds:
                self.message = (
                    f"{self.what} did not finish within {self.seconds} s: the watchdog woke "
                    "its context (a backend whose wait() ignores its timeout, or misses a "
                    "wake-up, hangs here)"
                )
            elif since is not None and now - since >= NONBLOCKING_S:
                self.message = (
                    f"{self.what}: poll(False) did not return within {NONBLOCKING_S} s, the "
                    "watchdog woke its context (wait(0) must only look, not block)"
                )
            else:
                continue
            self.expired = True
            break
        while not self._stop.is_set():
            with self._lock:
                contexts = list(self._contexts)
            for ctx in contexts:
                _kick(ctx)
            del contexts
            self._stop.wait(0.02)

    def watch(self, ctx: AioContext) -> None:
        with self._lock:
            self._contexts.add(ctx)

    def guard(self, ctx: AioContext) -> AioContext:
        """Watch *ctx* and make its ``poll()`` fail the test once the watchdog expired."""
        self.watch(ctx)
        real = ctx.poll
        watchdog = self

        def poll(blocking: bool = True) -> bool:
            outer = not blocking and watchdog._nonblocking_since is None
            if outer:
                watchdog._nonblocking_since = time.monotonic()
            try:
                progress = real(blocking)
            finally:
                if outer:
                    watchdog._nonblocking_since = None
            if watchdog.expired:
                pytest.fail(watchdog.message)
            return progress

        ctx.poll = poll  # type: ignore[method-assign]
        return ctx

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
    poll return at once), and the loop
    fails the test after *timeout* seconds: a missing event fails, never hangs.
    A watchdog thread wakes the context after *timeout* too, so that a
    backend that ignores the guard's timeout fails the test as well.
    """
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    deadline = time.monotonic() + timeout
    watchdog = _Watchdog(timeout, what)
    watchdog.watch(ctx)
    polls = 0
    try:
        while not predicate():
            if time.monotonic() > deadline or watchdog.expired:
                pytest.fail(f"{what} not reached within {timeout} s ({polls} polls)")
            if not guard.pending:  # re-arming a pending guard would notify: a busy loop
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + guard_ms)
            ctx.poll(True)
            polls += 1
    finally:
        watchdog.stop()
        guard.delete()
    return polls


@contextlib.contextmanager
def _from_another_thread(fn: Callable[[], object], delay: float = 0.02) -> Iterator[None]:
    """Call *fn* from another thread *delay* seconds in, while the body waits.

    The body is the home thread blocking in ``poll()``: only *fn* (a
    ``notify()``, a ``schedule()``, a handler change under ``acquire()``)
    can end that wait early.  The thread is joined on the way out, with a
    bound, so a test never leaves it behind.
    """
    timer = threading.Timer(delay, fn)
    timer.start()
    try:
        yield
    finally:
        timer.join(DEADLINE_S)


def _poll_for(ctx: AioContext, seconds: float, *, max_polls: int = 1000) -> int:
    """Keep polling for *seconds* (to show that nothing more happens); return the polls."""
    deadline = time.monotonic() + seconds
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    polls = 0
    try:
        while time.monotonic() < deadline and polls < max_polls:
            if not guard.pending:
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + 5)
            ctx.poll(True)
            polls += 1
    finally:
        guard.delete()
    return polls


def _poll_a_few(
    ctx: AioContext, predicate: Callable[[], bool], *, polls: int = 10, guard_ms: int = 20
) -> bool:
    """Poll (blocking, each bounded by a guard timer) at most *polls* times until *predicate*.

    For what the backend must report at once: a backend that never reports it
    fails after *polls* polls (at most ``polls * guard_ms`` ms), quickly when
    it spins.
    """
    guard = ctx.timer_new_ms(Clock.REALTIME, lambda _o: None)
    try:
        for _ in range(polls):
            if predicate():
                return True
            if not guard.pending:
                guard.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + guard_ms)
            ctx.poll(True)
        return predicate()
    finally:
        guard.delete()


class _WaitSpy:
    """Count the backend's ``wait()`` calls and record their timeouts and reports.

    It wraps ``ctx._backend.wait`` (on the instance: a composite backend that
    installs its delegate's bound ``wait`` keeps working).
    """

    def __init__(self, ctx: AioContext) -> None:
        backend: Any = ctx._backend
        self._backend = backend
        self._own = "wait" in vars(backend)
        self._orig = backend.wait
        self.timeouts: list[int] = []
        self.reports: list[list[tuple[int, int]]] = []
        backend.wait = self._wait

    def _wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout_ns)
        events: list[tuple[int, int]] = list(self._orig(timeout_ns))
        self.reports.append(events)
        return events

    @property
    def calls(self) -> int:
        return len(self.timeouts)

    def reset(self) -> None:
        self.timeouts.clear()
        self.reports.clear()

    def reported_mask(self, fd: int) -> int:
        mask = 0
        for report in self.reports:
            for rfd, rmask in report:
                if rfd == fd:
                    mask |= rmask
        return mask

    def restore(self) -> None:
        if self._own:
            self._backend.wait = self._orig
        else:
            del self._backend.wait


def _waits_until_a_timer(ctx: AioContext, spy: _WaitSpy, ms: int, limit: int) -> int:
    """Arm a REALTIME timer *ms* ahead and ``poll(True)`` until it fired.

    Return the number of ``wait()`` calls that took; stop counting above
    *limit* (a busy loop).  A backend that sleeps makes one or two.
    """
    fired: list[int] = []
    timer = ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1))
    try:
        timer.mod(clock_get_ns(Clock.REALTIME) // SCALE_MS + ms)
        ctx.poll(False)  # consumes the notifications of what the test set up
        spy.reset()
        polls = 0
        while not fired and spy.calls <= limit and polls <= 10 * limit:
            ctx.poll(True)
            polls += 1
        waits = spy.calls
        if waits <= limit:
            assert fired, f"a {ms} ms timer did not fire in {polls} blocking polls"
        return waits
    finally:
        timer.delete()


def _fill(sock_or_fd: Any) -> None:
    """Write into a non-blocking socket or pipe end until it is full (not writable)."""
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    for _ in range(10_000):
        try:
            os.write(fd, b"x" * 65536)
        except BlockingIOError:
            return
    raise AssertionError("the buffer never filled")


def _default_registry() -> PluginRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return PluginRegistry(env={}, strict=True, block=())


_collection_registry: PluginRegistry | None = None
_override_names: dict[int, list[str] | None] = {}


def _default_backend_names(*, strict: bool = True) -> list[str]:
    global _collection_registry
    if _collection_registry is None:
        if not strict:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PluginWarning)
                return list(PluginRegistry(env={}, strict=False, block=()).backends)
        _collection_registry = _default_registry()
    return list(_collection_registry.backends)


def _overridden_backend_names(func: Callable[..., Any]) -> list[str] | None:
    """The backends of an ``aiocore_registry`` override, if it can be called here.

    It can when it takes no arguments: it is called (a generator fixture is
    run to its ``yield`` and then closed), once per session.  ``None`` when
    it takes fixtures.
    """
    key = id(func)
    if key not in _override_names:
        names: list[str] | None = None
        try:
            takes_args = bool(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            takes_args = True
        if not takes_args:
            if inspect.isgeneratorfunction(func):
                gen = func()
                try:
                    registry = next(gen)
                    names = list(registry.backends)
                finally:
                    gen.close()
            else:
                names = list(func().backends)
        _override_names[key] = names
    return _override_names[key]


def _parametrized_backends(metafunc: pytest.Metafunc) -> list[str]:
    cls = metafunc.cls
    if cls is not None and issubclass(cls, SourceConformance) and cls.backends is not None:
        return list(cls.backends)
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get("aiocore_registry") or ()
    fixturedef = defs[-1] if defs else None
    func = getattr(fixturedef, "func", None)
    if func is None or getattr(func, "__module__", None) == __name__:
        return _default_backend_names()
    names = _overridden_backend_names(func)
    if names is not None:
        return names
    # An override that takes fixtures: guess from the default registry, which
    # the override may not load, so a broken installed plugin must not break
    # the collection here (the override decides whether it loads).
    return _default_backend_names(strict=False)


# ---------------------------------------------------------------------------
# Fixtures and the parametrization hook
# ---------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``aiocore_backend`` over the backends of ``aiocore_registry``."""
    if "aiocore_backend" in metafunc.fixturenames:
        metafunc.parametrize("aiocore_backend", _parametrized_backends(metafunc), indirect=True)


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


class _Kit:
    """What both conformance classes share: the watchdog of every test."""

    #: Seconds after which the watchdog fails a test of the class and wakes
    #: its contexts (every test takes a fraction of a second when it passes).
    deadline_s: ClassVar[float] = DEADLINE_S

    _watchdog: _Watchdog

    @pytest.fixture(autouse=True)
    def _aiocore_watchdog(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self._watchdog = _Watchdog(self.deadline_s, request.node.nodeid)
        try:
            yield
        finally:
            self._watchdog.stop()

    def _guarded(self, ctx: AioContext) -> AioContext:
        """*ctx*, its ``poll()`` bounded by the test's watchdog."""
        return self._watchdog.guard(ctx)


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


def _unregister_all(ctx: AioContext, fds: Sequence[int]) -> None:
    if ctx.closed:
        return
    ctx.set_exception_handler(lambda _c, _e: None)
    for fd in fds:
        if fd >= 0 and fd in ctx.handler_fds():
            ctx.set_fd_handler(fd, None)


class BackendConformance(_Kit):
    """The backend rules, checked through a context on :attr:`backend_name`.

    Subclass it and set ``backend_name``; an unavailable backend is skipped
    with its probe's reason.  ``deadline_s`` bounds each test (see the
    module's watchdog).  A rule the backend cannot meet is skipped by
    overriding its test with a ``pytest.mark.skip`` that gives the reason.
    What it does not check: signals (``EINTR``),
    ``need_wait()``, ``maintain()`` and composite backends' switches,
    options, fds above a backend's limit, regular files, nested polls and
    poll mode (the core's part, on every backend), and duration (a slow
    backend that sleeps correctly passes).  aiocore's own suite
    (``tests/conformance`` in a checkout) checks all of ``SPEC.md``.
    """

    #: The backend under test, as users select it.
    backend_name: ClassVar[str] = ""

    def _open_ctx(self, registry: PluginRegistry) -> AioContext:
        name = self.backend_name
        if not name:
            pytest.fail(f"{type(self).__name__} must set backend_name")
        if name not in registry.backends:
            known = ", ".join(sorted(registry.backends))
            pytest.fail(f"backend {name!r} is not registered (known: {known})")
        reason = registry.probe(name)
        if reason is not None:
            pytest.skip(f"backend {name!r} unavailable: {reason}")
        return self._guarded(AioContext(backend=name, registry=registry))

    @pytest.fixture
    def backend_ctx(self, aiocore_registry: PluginRegistry) -> Iterator[AioContext]:
        ctx = self._open_ctx(aiocore_registry)
        try:
            yield ctx
        finally:
            ctx.close()

    @pytest.fixture
    def pair(self, backend_ctx: AioContext) -> Iterator[_Pair]:
        p = _Pair()
        yield p
        _unregister_all(backend_ctx, [p.a.fileno(), p.b.fileno()])
        p.close()

    @pytest.fixture
    def pipe(self, backend_ctx: AioContext) -> Iterator[list[int]]:
        # A non-blocking pipe [read end, write end]; a test that closes an end sets it to -1.
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        fds = [r, w]
        yield fds
        _unregister_all(backend_ctx, fds)
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    @pytest.fixture
    def spy(self, backend_ctx: AioContext) -> Iterator[_WaitSpy]:
        s = _WaitSpy(backend_ctx)
        yield s
        if not backend_ctx.closed:
            s.restore()

    # -- readiness --------------------------------------------------------

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

    def test_io_write_and_no_progress_without_a_matching_callback(
        self, backend_ctx: AioContext, pair: _Pair
    ) -> None:
        # Writable: io_write runs and is progress.
        writes: list[int] = []
        backend_ctx.set_fd_handler(pair.a, None, lambda _o: writes.append(1))
        assert _poll_a_few(backend_ctx, lambda: bool(writes)), "io_write never ran"
        # Writable but only io_read asked for: nothing runs, no progress.
        reads: list[int] = []
        backend_ctx.set_fd_handler(pair.a, lambda _o: reads.append(1))
        backend_ctx.poll(False)  # the change's notification
        assert backend_ctx.poll(False) is False
        assert reads == []

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

    def test_many_fds(self, backend_ctx: AioContext) -> None:
        """70 fds (past ``auto``'s upgrade): exactly the ready ones run, once each."""
        pairs = [_Pair() for _ in range(70)]
        try:
            got: list[int] = []

            def on_read(i: int) -> None:
                got.append(i)
                pairs[i].a.recv(100)

            for i, p in enumerate(pairs):
                backend_ctx.set_fd_handler(p.a, on_read, opaque=i)
            backend_ctx.poll(False)
            ready = set(range(3, 70, 7))
            for i in ready:
                pairs[i].b.send(b"x")
            assert _poll_a_few(backend_ctx, lambda: set(got) >= ready), (
                f"ready {sorted(ready)}, io_read ran for {sorted(set(got))}"
            )
            _poll_for(backend_ctx, 0.01)
            assert sorted(got) == sorted(ready), "io_read ran for fds that were not ready"
        finally:
            _unregister_all(backend_ctx, [p.a.fileno() for p in pairs])
            for p in pairs:
                p.close()

    # -- removal -----------------------------------------------------------

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

    def test_a_removed_fd_is_no_longer_watched(
        self, backend_ctx: AioContext, pair: _Pair, spy: _WaitSpy
    ) -> None:
        """A removed fd that stays ready (readable and writable) wakes no wait.

        A backend that forgets to unregister it reports it to the core, which
        has no handler for it, on every wait: ``poll(True)`` spins.
        """
        calls: list[int] = []
        backend_ctx.set_fd_handler(pair.a, lambda _o: calls.append(1), lambda _o: None)
        pair.b.send(b"x")  # never read: ready for ever
        assert _poll_a_few(backend_ctx, lambda: bool(calls)), "io_read never ran"
        backend_ctx.set_fd_handler(pair.a, None)
        waits = _waits_until_a_timer(backend_ctx, spy, 30, limit=4)
        assert waits <= 4, (
            f"{waits}+ wait() calls before a 30 ms timer fired: the removed fd, still ready, "
            "ends every wait (a busy loop); did update(fd, mask, 0) unregister it?"
        )

    def test_remove_then_re_add_the_same_fd(self, backend_ctx: AioContext, pair: _Pair) -> None:
        seen: list[str] = []

        def early(_o: object) -> None:
            seen.append("early read")  # never: the fd is not readable before the end

        for _ in range(3):
            backend_ctx.set_fd_handler(pair.a, early)
            backend_ctx.poll(False)
            backend_ctx.set_fd_handler(pair.a, None)
            backend_ctx.poll(False)
        # Removed and added again, with the other mask, then with the first one.
        backend_ctx.set_fd_handler(pair.a, None, lambda _o: seen.append("write"))
        assert _poll_a_few(backend_ctx, lambda: "write" in seen), "io_write never ran after re-add"
        backend_ctx.set_fd_handler(pair.a, None)
        backend_ctx.set_fd_handler(pair.a, lambda _o: seen.append("read"))
        pair.b.send(b"x")
        assert _poll_a_few(backend_ctx, lambda: "read" in seen), "io_read never ran after re-add"
        assert "early read" not in seen, seen

    # -- hang-ups and errors ------------------------------------------------

    def test_pipe_hang_up_runs_io_read(self, backend_ctx: AioContext, pipe: list[int]) -> None:
        """The writer of a pipe is gone: HUP alone (no IN) must reach io_read (EOF)."""
        r, w = pipe
        got: list[bytes] = []

        def on_read(_o: object) -> None:
            got.append(os.read(r, 100))
            if got[-1] == b"":
                backend_ctx.set_fd_handler(r, None)

        backend_ctx.set_fd_handler(r, on_read)
        backend_ctx.poll(False)
        os.close(w)
        pipe[1] = -1
        assert _poll_a_few(backend_ctx, lambda: b"" in got), (
            "io_read did not run when the pipe's writer closed (a hang-up: is EVENT_HUP reported?)"
        )

    def test_peer_closed_socket_runs_io_read(self, backend_ctx: AioContext, pair: _Pair) -> None:
        got: list[bytes] = []
        backend_ctx.set_fd_handler(pair.a, lambda s: got.append(s.recv(100)), opaque=pair.a)
        backend_ctx.poll(False)
        pair.b.close()
        assert _poll_a_few(backend_ctx, lambda: b"" in got), (
            "io_read did not run when the socket's peer closed"
        )
        backend_ctx.set_fd_handler(pair.a, None)

    def test_pipe_error_runs_io_write(self, backend_ctx: AioContext, pipe: list[int]) -> None:
        """A full pipe whose reader is gone: ERR (or a hang-up) must reach io_write."""
        r, w = pipe
        _fill(w)
        os.close(r)
        pipe[0] = -1
        writes: list[int] = []
        backend_ctx.set_fd_handler(w, None, lambda _o: writes.append(1))
        assert _poll_a_few(backend_ctx, lambda: bool(writes)), (
            "io_write did not run on the write end of a pipe whose reader is gone "
            "(an error: is EVENT_ERR reported?)"
        )

    def test_hang_up_reaches_a_write_only_handler(
        self, backend_ctx: AioContext, spy: _WaitSpy
    ) -> None:
        """A full socket whose peer shut down, watched by io_write only, runs io_write.

        poll(2) and epoll report a hang-up whatever was asked: a backend that
        drops it leaves the writer waiting for ever, or spinning.
        """
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            a.setblocking(False)
            _fill(a)
            b.shutdown(socket.SHUT_RDWR)
            writes: list[int] = []
            backend_ctx.set_fd_handler(a.fileno(), None, lambda _o: writes.append(1))
            ok = _poll_a_few(backend_ctx, lambda: bool(writes))
            backend_ctx.set_fd_handler(a.fileno(), None)
            assert ok, (
                "io_write did not run for a write-only handler whose peer hung up "
                f"(reported: {spy.reported_mask(a.fileno()):#x}; EVENT_HUP, EVENT_ERR or "
                "EVENT_OUT make it run)"
            )
            assert spy.reported_mask(a.fileno()) & (EVENT_HUP | EVENT_ERR | EVENT_OUT)
        finally:
            a.close()
            b.close()

    # -- sleeping ------------------------------------------------------------

    def test_a_blocking_poll_sleeps_until_its_timer(
        self, backend_ctx: AioContext, pair: _Pair, spy: _WaitSpy
    ) -> None:
        """With an idle handler (writable, but only io_read asked), one wait until the timer."""
        backend_ctx.set_fd_handler(pair.a, lambda _o: None)
        waits = _waits_until_a_timer(backend_ctx, spy, 30, limit=4)
        assert waits <= 4, (
            f"{waits}+ wait() calls before a 30 ms timer fired: the wait does not sleep "
            "(a timeout returned early, or readiness that was not asked for is reported)"
        )
        assert all(t >= 0 for t in spy.timeouts)

    def test_a_blocking_poll_with_nothing_due_waits_for_a_wake_up(
        self, backend_ctx: AioContext, pair: _Pair, spy: _WaitSpy
    ) -> None:
        """No deadline: ``wait(-1)`` sleeps until ``notify()`` from another thread."""
        backend_ctx.set_fd_handler(pair.a, lambda _o: None)
        backend_ctx.poll(False)
        notified = threading.Event()

        def wake() -> None:
            notified.set()
            backend_ctx.notify()

        spy.reset()
        with _from_another_thread(wake):
            backend_ctx.poll(True)
        assert spy.timeouts[:1] == [-1], spy.timeouts
        assert notified.is_set(), (
            "wait(-1) returned before anything woke it (is -1 taken as 'no limit'?)"
        )

    def test_sub_millisecond_timers_do_not_spin(
        self, backend_ctx: AioContext, pair: _Pair, spy: _WaitSpy
    ) -> None:
        """20 timers 0.5 ms apart cost about one wait each, not a busy loop.

        A backend that rounds a timeout *down* to its resolution waits 0 ms
        until each deadline passes: thousands of waits.
        """
        n = 20
        backend_ctx.set_fd_handler(pair.a, lambda _o: None)
        fired: list[int] = []

        def fire(_o: object) -> None:
            fired.append(1)

        start = clock_get_ns(Clock.REALTIME)
        timers = [backend_ctx.timer_new_ns(Clock.REALTIME, fire) for _ in range(n)]
        try:
            for i, t in enumerate(timers):
                t.mod_ns(start + 1_000_000 + 500_000 * i)
            backend_ctx.poll(False)
            spy.reset()
            limit = 3 * n
            while len(fired) < n and spy.calls <= limit:
                backend_ctx.poll(True)
        finally:
            for t in timers:
                t.delete()
        assert spy.calls <= limit, (
            f"{spy.calls}+ wait() calls for {len(fired)} of {n} timers 0.5 ms apart: "
            "a busy loop (is a sub-millisecond timeout rounded down to 0?)"
        )
        assert len(fired) == n

    def test_bh_scheduled_from_another_thread_wakes_a_blocking_poll(
        self, backend_ctx: AioContext
    ) -> None:
        ran: list[int] = []
        bh = backend_ctx.bh_new(lambda _o: ran.append(1))
        backend_ctx.poll(False)
        with _from_another_thread(bh.schedule):
            # The guard is 4 s: only the wake-up can end the first wait sooner.
            polls = run_until(
                backend_ctx, lambda: bool(ran), guard_ms=4000, timeout=8, what="the BH"
            )
        assert polls <= 3, f"{polls} polls: the guard timer, not the wake-up, ended the wait"
        bh.delete()

    def test_a_handler_added_from_another_thread_is_watched(
        self, backend_ctx: AioContext, pair: _Pair
    ) -> None:
        """update() from another thread while the home thread waits takes effect."""
        seen: list[int] = []
        pair.b.send(b"x")
        backend_ctx.poll(False)

        def add() -> None:
            backend_ctx.acquire()
            try:
                backend_ctx.set_fd_handler(pair.a, lambda _o: seen.append(1))
            finally:
                backend_ctx.release()

        with _from_another_thread(add):
            polls = run_until(
                backend_ctx, lambda: bool(seen), guard_ms=2000, timeout=4, what="io_read"
            )
        assert polls <= 4, f"{polls} polls: the change did not wake the wait, or was not applied"

    # -- closed fds and close() ----------------------------------------------

    @pytest.mark.parametrize("interest", ["read", "write"])
    def test_closed_fd_is_reported_once(
        self, backend_ctx: AioContext, spy: _WaitSpy, interest: str
    ) -> None:
        """An fd closed while registered: no crash, no busy loop, exactly one OSError.

        The error comes as ``EVENT_NVAL`` from a wait (then the backend stops
        watching the fd) or as :class:`OSError` from ``update()`` when the
        handler is removed; the core hands either to the exception handler.
        """
        errors: list[BaseException] = []
        backend_ctx.set_exception_handler(lambda _c, e: errors.append(e))
        p = _Pair()
        calls: list[int] = []
        fd = p.a.fileno()

        def cb(_o: object) -> None:
            calls.append(1)

        if interest == "read":
            backend_ctx.set_fd_handler(fd, cb)
        else:
            _fill(p.a)
            backend_ctx.set_fd_handler(fd, None, cb)
        backend_ctx.poll(False)
        p.a.close()  # closed while registered (a user error the loop must survive)
        try:
            for _ in range(5):
                backend_ctx.poll(False)
            waits = _waits_until_a_timer(backend_ctx, spy, 30, limit=4)
            assert waits <= 4, (
                f"{waits}+ wait() calls before a 30 ms timer fired: the closed fd is "
                "reported again and again (report EVENT_NVAL once, then stop watching it)"
            )
            assert len(calls) <= 1, f"the callback ran {len(calls)} times for a closed fd"
            assert fd in backend_ctx.handler_fds()  # registered until removed
            backend_ctx.set_fd_handler(fd, None)  # a removal error goes to the handler
            backend_ctx.poll(False)
        finally:
            p.b.close()
        assert fd not in backend_ctx.handler_fds()
        oserrors = [e for e in errors if isinstance(e, OSError)]
        assert len(oserrors) == 1 and len(errors) == 1, (
            f"a closed fd must be reported exactly once (EVENT_NVAL from wait(), or OSError "
            f"from update() when the handler is removed), got {errors!r}"
        )
        # The loop still works.
        other = _Pair()
        try:
            got: list[bytes] = []
            backend_ctx.set_fd_handler(other.a, lambda s: got.append(s.recv(10)), opaque=other.a)
            other.b.send(b"ok")
            assert _poll_a_few(backend_ctx, lambda: bool(got)), "the loop stopped working"
            backend_ctx.set_fd_handler(other.a, None)
        finally:
            other.close()
        assert len(errors) == 1, errors

    def test_adding_a_closed_fd_is_refused_or_reported(self, backend_ctx: AioContext) -> None:
        """update() refuses a closed fd with OSError (or a batching backend reports NVAL)."""
        errors: list[BaseException] = []
        backend_ctx.set_exception_handler(lambda _c, e: errors.append(e))
        r, w = os.pipe()
        os.close(w)
        os.close(r)  # r is a closed number; nothing opens an fd before the removal below
        try:
            backend_ctx.set_fd_handler(r, lambda _o: None)
        except OSError as exc:
            assert exc.errno in (errno.EBADF, errno.EINVAL), exc
            assert r not in backend_ctx.handler_fds()
            return
        try:
            _poll_a_few(backend_ctx, lambda: bool(errors), polls=3)
        finally:
            backend_ctx.set_fd_handler(r, None)
        assert len([e for e in errors if isinstance(e, OSError)]) == 1, errors

    def test_close_releases_every_fd_and_leaves_the_users(
        self, no_fd_leak: None, aiocore_registry: PluginRegistry
    ) -> None:
        p = _Pair()
        try:
            before = open_fds()
            for _ in range(20):
                ctx = self._open_ctx(aiocore_registry)
                ctx.set_fd_handler(p.a, lambda _o: None, lambda _o: None)
                ctx.bh_new(lambda _o: None).schedule()
                ctx.timer_new_ms(Clock.REALTIME, lambda _o: None).mod(10**9)
                ctx.poll(False)
                ctx.close()
            _fds_left(before, f"20 contexts on backend {self.backend_name!r}, closed,")
            p.b.send(b"still open")
            assert p.a.recv(100) == b"still open"
        finally:
            p.close()


# ---------------------------------------------------------------------------
# Source conformance
# ---------------------------------------------------------------------------


class SourceConformance(_Kit):
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

    **A source that does not own its fds** (it is handed an fd, as the
    ``LineReader`` of :doc:`writing-a-source` is): set ``owns_fds = False``
    and implement :meth:`release`, which closes the fds that
    :meth:`make_handle` made for the handle; the kit calls it after
    :meth:`close_handle` or ``ctx.close()`` and before comparing fds.

    **Callbacks after close.**  Implement :meth:`trigger` (make the handle's
    callback due) and pass :meth:`callback` to the source as the handle's
    callback in :meth:`make_handle`: ``test_no_callback_after_close`` then
    checks that the callback runs after a trigger, and never once
    :meth:`close_handle` returned, whether it closed the handle before or
    after the source had read what the trigger sent.  Without
    :meth:`trigger` that test is skipped.

    ``backends = ["poll", "mine"]`` on the subclass chooses the backends its
    tests run on (by default every backend of ``aiocore_registry``).
    """

    #: The name the source is registered under (``ctx.sources.<name>``).
    source_name: ClassVar[str] = ""
    #: Whether what :meth:`make_handle` makes registers fd handlers.
    registers_fds: ClassVar[bool] = True
    #: Whether the source owns (closes) the fds of what :meth:`make_handle`
    #: makes; if not, :meth:`release` closes them.
    owns_fds: ClassVar[bool] = True
    #: The backends to run on; ``None``: every backend of ``aiocore_registry``.
    backends: ClassVar[Sequence[str] | None] = None

    #: Every call of :meth:`callback` in this test: ``(args, kwargs)``.
    callback_calls: list[tuple[tuple[Any, ...], dict[str, Any]]]

    @pytest.fixture(autouse=True)
    def _aiocore_callback_calls(self) -> None:
        self.callback_calls = []

    def callback(self, *args: Any, **kwargs: Any) -> None:
        """A callback to hand to the source in :meth:`make_handle`; records its calls."""
        self.callback_calls.append((args, kwargs))

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

    def release(self, handle: Any) -> None:
        """With ``owns_fds = False``: close the fds :meth:`make_handle` made for *handle*.

        Called once per handle, after :meth:`close_handle` (or ``ctx.close()``)
        removed the source's handlers, and before the fds are compared.
        """
        pytest.fail(f"{type(self).__name__} sets owns_fds = False and must implement release()")

    def trigger(self, handle: Any) -> None:
        """Optional: make *handle*'s callback due (write to its fd, connect to it).

        Called only while the handle is open.  Not overriding it skips
        ``test_no_callback_after_close`` (which never calls this default).
        """
        pytest.fail(f"{type(self).__name__} defines no trigger(handle)")

    def _release(self, handle: Any) -> None:
        if not self.owns_fds:
            self.release(handle)

    def _ctx(self, registry: PluginRegistry, backend: str) -> AioContext:
        if self.source_name not in registry.sources:
            known = ", ".join(sorted(registry.sources)) or "(none)"
            pytest.fail(f"source {self.source_name!r} is not registered (known: {known})")
        return self._guarded(AioContext(backend=backend, registry=registry))

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
            self._release(handle)
            _fds_left(fds, f"closing {handle!r}")  # *handle* is still referenced
            self.close_handle(handle)  # idempotent

    def test_no_callback_after_close(
        self,
        no_fd_leak: None,
        aiocore_registry: PluginRegistry,
        aiocore_backend: str,
        tmp_path: Path,
    ) -> None:
        if type(self).trigger is SourceConformance.trigger:
            pytest.skip(
                f"{type(self).__name__} defines no trigger(handle): callbacks after "
                "close_handle() are not checked (see SourceConformance.trigger)"
            )
        with (
            _no_finalizer_closes(f"a handle of source {self.source_name!r}"),
            self._ctx(aiocore_registry, aiocore_backend) as ctx,
        ):
            source = getattr(ctx.sources, self.source_name)
            handle = self.make_handle(source, tmp_path)
            try:
                ctx.poll(False)
                self.trigger(handle)
                run_until(
                    ctx,
                    lambda: bool(self.callback_calls),
                    what=(
                        "a callback after trigger() (does make_handle() pass self.callback "
                        "to the source?)"
                    ),
                )
            finally:
                self.close_handle(handle)
                self._release(handle)
            # Closed right after the trigger, then after the source had one,
            # two, three polls to take in what the trigger sent.
            for polls in range(4):
                handle = self.make_handle(source, tmp_path)
                try:
                    ctx.poll(False)
                    self.trigger(handle)
                    for _ in range(polls):
                        ctx.poll(False)
                finally:
                    self.close_handle(handle)
                n = len(self.callback_calls)
                _poll_for(ctx, 0.02)
                self._release(handle)
                late = self.callback_calls[n:]
                assert not late, (
                    f"the callback ran {len(late)} time(s) after close_handle() returned "
                    f"(closed {polls} poll(s) after trigger()): {late[:3]!r}"
                )

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
            for handle in handles:
                self._release(handle)
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
            for handle in handles:
                self._release(handle)
            _fds_left(fds, f"30 contexts closed with a handle of source {self.source_name!r} each")
            del handles
