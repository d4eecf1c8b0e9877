"""The bad-input catalogue: every public entry point, what each bad value gets.

This list is the one source of truth for two things:

* ``test_bad_inputs.py`` runs every :class:`Case` (the context-bound ones on
  every backend) and checks the exception type, that its message contains the
  gist, and that nothing changed;
* ``docs/bad-inputs.rst`` is generated from it::

      python -m tests.reliability.bad_inputs > docs/bad-inputs.rst

  and a test fails when the page and this list disagree.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocore import (
    SCALE_MS,
    AioContext,
    BackendUnavailable,
    Clock,
    ConfigError,
    EventNotifier,
    PluginError,
    PluginRegistry,
    UnknownBackendError,
    clock_enable,
    clock_enabled,
    clock_get_ns,
    virtual_clock_step,
)


def _noop(_opaque: object) -> None:
    return None


class _BadFileno:
    def fileno(self) -> str:
        return "3"


class World:
    """Fresh objects for one case: an open context on one backend, and more."""

    def __init__(
        self, backend: str, registry: PluginRegistry, setenv: Callable[[str, str], None]
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.setenv = setenv
        self.pair = socket.socketpair()
        self.ctx = AioContext(backend=backend, registry=registry)
        self.notifier = EventNotifier(registry=registry)
        self.closed_notifier = EventNotifier(registry=registry)
        self.closed_notifier.close()
        self.bh = self.ctx.bh_new(_noop)
        self.deleted_bh = self.ctx.bh_new(_noop)
        self.deleted_bh.delete()
        self.timer = self.ctx.timer_new_ns(Clock.REALTIME, _noop)
        self.ctx.set_fd_handler(self.pair[0], _noop)
        self.ctx.poll(False)
        self._closed: AioContext | None = None

    @property
    def fd(self) -> int:
        return self.pair[0].fileno()

    @property
    def closed_ctx(self) -> AioContext:
        """A closed context, with a BH and a timer made before it closed."""
        if self._closed is None:
            c = AioContext(backend=self.backend, registry=self.registry)
            self.closed_bh = c.bh_new(_noop)
            self.closed_timer = c.timer_new_ns(Clock.REALTIME, _noop)
            c.close()
            self._closed = c
        return self._closed

    def snapshot(self) -> tuple[object, ...]:
        """What a refused call must not change."""
        ctx = self.ctx
        return (
            sorted(ctx.handler_fds()),
            ctx.poll_max_ns,
            ctx.poll_grow,
            ctx.poll_shrink,
            ctx.poll_ns,
            ctx.external_disabled,
            ctx.backend_name,
            self.bh.scheduled,
            self.timer.expire_time_ns,
            clock_enabled(Clock.VIRTUAL),
            clock_get_ns(Clock.VIRTUAL),
        )

    def in_thread(self, fn: Callable[[], object]) -> None:
        """Run *fn* in another thread; re-raise what it raised here."""
        box: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=run)
        t.start()
        t.join(10)
        if box:
            raise box[0]

    def close(self) -> None:
        ctx = self.ctx
        if not ctx.closed:
            while ctx.external_disabled:
                ctx.enable_external()
            for fd in ctx.handler_fds():
                ctx.set_fd_handler(fd, None)
            ctx.close()
        self.notifier.close()
        for s in self.pair:
            s.close()

    # -- helpers for cases -------------------------------------------------

    def context(self, *args: Any, **kwargs: Any) -> None:
        """``AioContext(...)`` with this world's registry (unless given); closed if made."""
        kwargs.setdefault("registry", self.registry)
        AioContext(*args, **kwargs).close()

    def config(self, text: str) -> None:
        """A context under ``aiocore.toml`` containing *text* (in the test's cwd)."""
        Path("aiocore.toml").write_text(text)
        try:
            self.context()
        finally:
            os.unlink("aiocore.toml")

    def close_while_polling(self) -> None:
        """``close()`` from another thread while the home thread is in ``poll(True)``."""
        ctx = self.ctx
        waiting = threading.Event()
        backend: Any = ctx._backend
        inner = backend.wait

        def wait(timeout_ns: int) -> list[tuple[int, int]]:
            waiting.set()
            return inner(timeout_ns)  # type: ignore[no-any-return]

        backend.wait = wait
        box: list[BaseException] = []

        def closer() -> None:
            waiting.wait(5)
            try:
                ctx.close()
            except BaseException as exc:
                box.append(exc)
            finally:
                ctx.notify()

        t = threading.Thread(target=closer)
        t.start()
        try:
            ctx.poll(True)
        finally:
            t.join(5)
            if "wait" in vars(backend):
                del backend.wait
        if box:
            raise box[0]

    def close_from_callback(self) -> None:
        box: list[BaseException] = []

        def cb(_opaque: object) -> None:
            try:
                self.ctx.close()
            except BaseException as exc:
                box.append(exc)

        self.ctx.bh_schedule_oneshot(cb)
        self.ctx.poll(False)
        if box:
            raise box[0]


@dataclass(frozen=True)
class Case:
    """One bad input: where, what, and what it gets."""

    entry: str
    bad: str
    exc: type[BaseException]
    gist: str
    call: Callable[[World], object] = field(repr=False)
    #: Runs on every backend (it touches a context); else once.
    per_backend: bool = True

    @property
    def id(self) -> str:
        return f"{self.entry} {self.bad}"


_CLOCKS = "Clock.REALTIME, Clock.VIRTUAL, Clock.HOST"

CASES: list[Case] = [
    # -- AioContext(...) ------------------------------------------------------
    Case("AioContext(backend)", "5", TypeError, "backend must be a backend name (str)",
         lambda w: w.context(5)),
    Case("AioContext(backend)", '["poll", 5]', TypeError, "a list of names",
         lambda w: w.context(["poll", 5])),
    Case("AioContext(backend)", '[] or ""', ValueError, "must name at least one backend",
         lambda w: w.context([])),
    Case("AioContext(backend)", '["poll", ""]', ValueError, "backend has an empty name (item 2)",
         lambda w: w.context(["poll", ""])),
    Case("AioContext(backend)", '"nope"', UnknownBackendError,
         "unknown backend 'nope'; known backends:", lambda w: w.context("nope")),
    Case("AioContext(backend)", '"kqueue" on Linux', BackendUnavailable,
         "is not available here: kqueue:", lambda w: w.context("kqueue"), per_backend=False),
    Case("AioContext(poll_max_ns=)", "-1", ValueError, "poll_max_ns must be >= 0",
         lambda w: w.context(w.backend, poll_max_ns=-1)),
    Case("AioContext(poll_grow=)", "1.5", TypeError, "poll_grow must be an int",
         lambda w: w.context(w.backend, poll_grow=1.5)),
    Case("AioContext(poll_shrink=)", "True", TypeError, "poll_shrink must be an int, got bool",
         lambda w: w.context(w.backend, poll_shrink=True)),
    Case("AioContext(registry=)", "5", TypeError, "registry must be a PluginRegistry",
         lambda w: w.context(w.backend, registry=5)),
    # -- poll ---------------------------------------------------------------
    Case("ctx.poll()", "from another thread", RuntimeError,
         "may only be called from the context's home thread",
         lambda w: w.in_thread(lambda: w.ctx.poll(False))),
    Case("ctx.poll()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.poll(False)),
    # -- fd handlers ----------------------------------------------------------
    Case("ctx.set_fd_handler(fd)", '"3"', TypeError,
         "fd must be an int file descriptor or an object with fileno()",
         lambda w: w.ctx.set_fd_handler("3", _noop)),
    Case("ctx.set_fd_handler(fd)", "3.0 or True", TypeError, "fd must be an int",
         lambda w: w.ctx.set_fd_handler(True, _noop)),
    Case("ctx.set_fd_handler(fd)", "-1", ValueError, "fd must be >= 0",
         lambda w: w.ctx.set_fd_handler(-1, _noop)),
    Case("ctx.set_fd_handler(fd)", "2**31 (not a C int)", ValueError,
         "fd must be >= 0 and <= 2147483647",
         lambda w: w.ctx.set_fd_handler(2**31, _noop)),
    Case("ctx.set_fd_handler(fd)", "object whose fileno() returns a str", TypeError,
         "fd.fileno() must return an int", lambda w: w.ctx.set_fd_handler(_BadFileno(), _noop)),
    Case("ctx.set_fd_handler(fd)", "the context's own notifier fd", ValueError,
         "is the context's own notifier",
         lambda w: w.ctx.set_fd_handler(w.ctx._notifier_node.fd, _noop)),
    Case("ctx.set_fd_handler(io_read=)", "5", TypeError, "io_read must be a callable or None",
         lambda w: w.ctx.set_fd_handler(w.fd, 5)),
    Case("ctx.set_fd_handler(io_write=)", '"x"', TypeError, "io_write must be a callable or None",
         lambda w: w.ctx.set_fd_handler(w.fd, None, "x")),
    Case("ctx.set_fd_handler(io_poll=)", "1", TypeError, "io_poll must be a callable or None",
         lambda w: w.ctx.set_fd_handler(w.fd, _noop, None, 1)),
    Case("ctx.set_fd_handler(io_poll_ready=)", "without io_poll", ValueError,
         "io_poll_ready needs io_poll",
         lambda w: w.ctx.set_fd_handler(w.fd, _noop, io_poll_ready=_noop)),
    Case("ctx.set_fd_handler(is_external=)", "1", TypeError, "is_external must be a bool",
         lambda w: w.ctx.set_fd_handler(w.fd, _noop, is_external=1)),
    Case("ctx.set_fd_handler()", "from another thread without acquire()", RuntimeError,
         "requires holding ctx.acquire()",
         lambda w: w.in_thread(lambda: w.ctx.set_fd_handler(w.fd, None))),
    Case("ctx.set_fd_handler()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.set_fd_handler(w.fd, _noop)),
    Case("ctx.set_fd_poll(fd, ...)", "-1", ValueError, "fd must be >= 0",
         lambda w: w.ctx.set_fd_poll(-1, None, None)),
    Case("ctx.set_fd_poll(io_poll_begin=)", "5", TypeError,
         "io_poll_begin must be a callable or None", lambda w: w.ctx.set_fd_poll(w.fd, 5, None)),
    Case("ctx.set_fd_poll()", "from another thread without acquire()", RuntimeError,
         "requires holding ctx.acquire()",
         lambda w: w.in_thread(lambda: w.ctx.set_fd_poll(w.fd, None, None))),
    # -- event notifiers --------------------------------------------------------
    Case("ctx.set_event_notifier(notifier)", "an int fd", TypeError,
         "notifier must be an EventNotifier",
         lambda w: w.ctx.set_event_notifier(w.fd, _noop)),  # type: ignore[arg-type]
    Case("ctx.set_event_notifier(notifier)", "a closed notifier", ValueError,
         "notifier is closed", lambda w: w.ctx.set_event_notifier(w.closed_notifier, _noop)),
    Case("ctx.set_event_notifier(io_read=)", "5", TypeError, "io_read must be a callable or None",
         lambda w: w.ctx.set_event_notifier(w.notifier, 5)),  # type: ignore[arg-type]
    Case("ctx.set_event_notifier_poll(notifier)", '"x"', TypeError,
         "notifier must be an EventNotifier",
         lambda w: w.ctx.set_event_notifier_poll("x", None, None)),  # type: ignore[arg-type]
    Case("EventNotifier(kind=)", '"nope"', ValueError, "unknown notifier kind 'nope'; known kinds:",
         lambda w: EventNotifier(kind="nope", registry=w.registry), per_backend=False),
    Case("EventNotifier(kind=)", "5", TypeError, "kind must be a str",
         lambda w: EventNotifier(kind=5, registry=w.registry),  # type: ignore[arg-type]
         per_backend=False),
    Case("EventNotifier(registry=)", "5", TypeError, "registry must be a PluginRegistry",
         lambda w: EventNotifier(registry=5), per_backend=False),  # type: ignore[arg-type]
    Case("notifier.set()", "after close()", RuntimeError, "is closed",
         lambda w: w.closed_notifier.set(), per_backend=False),
    Case("notifier.test_and_clear()", "after close()", RuntimeError, "is closed",
         lambda w: w.closed_notifier.test_and_clear(), per_backend=False),
    Case("notifier.fileno()", "after close()", RuntimeError, "is closed",
         lambda w: w.closed_notifier.fileno(), per_backend=False),
    # -- bottom halves ----------------------------------------------------------
    Case("ctx.bh_new(cb)", "None", TypeError, "cb must be a callable",
         lambda w: w.ctx.bh_new(None)),  # type: ignore[arg-type]
    Case("ctx.bh_schedule_oneshot(cb)", "5", TypeError, "cb must be a callable",
         lambda w: w.ctx.bh_schedule_oneshot(5)),  # type: ignore[arg-type]
    Case("bh.schedule()", "after bh.delete()", RuntimeError, "cannot schedule a deleted BH",
         lambda w: w.deleted_bh.schedule()),
    Case("bh.schedule_idle()", "after bh.delete()", RuntimeError,
         "cannot schedule a deleted BH", lambda w: w.deleted_bh.schedule_idle()),
    Case("bh.schedule()", "after ctx.close()", RuntimeError, "its AioContext is closed",
         lambda w: (w.closed_ctx, w.closed_bh.schedule())),
    Case("ctx.bh_new()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.bh_new(_noop)),
    # -- timers -----------------------------------------------------------------
    Case("ctx.timer_new(clock)", '"REALTIME"', TypeError, f"clock must be a Clock ({_CLOCKS})",
         lambda w: w.ctx.timer_new("REALTIME", 1, _noop)),  # type: ignore[arg-type]
    Case("ctx.timer_new(clock)", "7", ValueError, f"clock must be one of {_CLOCKS}, got 7",
         lambda w: w.ctx.timer_new(7, 1, _noop)),  # type: ignore[arg-type]
    Case("ctx.timer_new(scale)", "0 or -1", ValueError, "scale must be > 0",
         lambda w: w.ctx.timer_new(Clock.REALTIME, 0, _noop)),
    Case("ctx.timer_new(scale)", "1.5", TypeError, "scale must be an int",
         lambda w: w.ctx.timer_new(Clock.REALTIME, 1.5, _noop)),  # type: ignore[arg-type]
    Case("ctx.timer_new_ms(cb)", "None", TypeError, "cb must be a callable",
         lambda w: w.ctx.timer_new_ms(Clock.REALTIME, None)),  # type: ignore[arg-type]
    Case("ctx.timer_new_ns()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.timer_new_ns(Clock.REALTIME, _noop)),
    Case("timer.mod(expire)", '"1"', TypeError, "expire must be an int",
         lambda w: w.timer.mod("1")),  # type: ignore[arg-type]
    Case("timer.mod(expire)", "1.5 or True", TypeError, "expire must be an int",
         lambda w: w.timer.mod(True)),
    Case("timer.mod_ns(expire_ns)", "1.5", TypeError, "expire_ns must be an int",
         lambda w: w.timer.mod_ns(1.5)),  # type: ignore[arg-type]
    Case("timer.mod_anticipate(expire)", "None", TypeError, "expire must be an int",
         lambda w: w.timer.mod_anticipate(None)),  # type: ignore[arg-type]
    Case("timer.mod()", "after ctx.close()", RuntimeError, "the timer's AioContext is closed",
         lambda w: (w.closed_ctx, w.closed_timer.mod(SCALE_MS))),
    # -- clocks (process-wide) ------------------------------------------------------
    Case("clock_get_ns(clock)", "9", ValueError, f"clock must be one of {_CLOCKS}",
         lambda w: clock_get_ns(9), per_backend=False),  # type: ignore[arg-type]
    Case("clock_enabled(clock)", '"VIRTUAL"', TypeError, "clock must be a Clock",
         lambda w: clock_enabled("VIRTUAL"), per_backend=False),  # type: ignore[arg-type]
    Case("clock_enable(clock, enabled)", "enabled=1", TypeError, "enabled must be a bool",
         lambda w: clock_enable(Clock.VIRTUAL, 1), per_backend=False),  # type: ignore[arg-type]
    Case("virtual_clock_step(ns)", "-1", ValueError, "virtual time never goes back",
         lambda w: virtual_clock_step(-1), per_backend=False),
    Case("virtual_clock_step(ns)", "1.5 or True", TypeError, "ns must be an int",
         lambda w: virtual_clock_step(True), per_backend=False),
    # -- poll parameters, external clients, locking, handlers -----------------------
    Case("ctx.set_poll_params(max_ns, grow, shrink)", "max_ns=-1", ValueError,
         "max_ns must be >= 0", lambda w: w.ctx.set_poll_params(-1, 0, 0)),
    Case("ctx.set_poll_params(max_ns, grow, shrink)", 'grow="2"', TypeError,
         "grow must be an int", lambda w: w.ctx.set_poll_params(0, "2", 0)),  # type: ignore[arg-type]
    Case("ctx.set_poll_params(max_ns, grow, shrink)", "shrink=1.5", TypeError,
         "shrink must be an int", lambda w: w.ctx.set_poll_params(0, 0, 1.5)),  # type: ignore[arg-type]
    Case("ctx.enable_external()", "without disable_external()", RuntimeError,
         "without a matching disable_external()", lambda w: w.ctx.enable_external()),
    Case("ctx.disable_external()", "from another thread without acquire()", RuntimeError,
         "requires holding ctx.acquire()", lambda w: w.in_thread(w.ctx.disable_external)),
    Case("ctx.release()", "without acquire()", RuntimeError,
         "lock this thread does not hold", lambda w: w.ctx.release()),
    Case("ctx.release()", "from a thread not holding it", RuntimeError,
         "lock this thread does not hold",
         lambda w: (w.ctx.acquire(), w.in_thread(w.ctx.release))),
    Case("ctx.acquire()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.acquire()),
    Case("ctx.set_exception_handler(handler)", "5", TypeError,
         "handler must be a callable or None", lambda w: w.ctx.set_exception_handler(5)),  # type: ignore[arg-type]
    Case("ctx.in_home_thread()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.in_home_thread()),
    Case("ctx.notify()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.notify()),
    Case("ctx.handler_fds()", "after close()", RuntimeError, "this AioContext is closed",
         lambda w: w.closed_ctx.handler_fds()),
    Case("ctx.close()", "from a callback (inside poll())", RuntimeError,
         "close() from inside poll()", lambda w: w.close_from_callback()),
    Case("ctx.close()", "from another thread while the home thread polls", RuntimeError,
         "a context is closed by its home thread", lambda w: w.close_while_polling()),
    # -- plugins ------------------------------------------------------------------
    Case("PluginRegistry(plugins=)", "two plugins named alike (strict)", PluginError,
         "two plugins are named 'poll'",
         lambda w: PluginRegistry(autoload=False, env={}, strict=True,
                                  plugins=[("poll", object())]),
         per_backend=False),
    Case("PluginRegistry(block)", '"epoll"', TypeError,
         "block must be a list of plugin names (str)",
         lambda w: PluginRegistry(autoload=False, env={}, block="epoll"),
         per_backend=False),
    Case("PluginRegistry(plugins=)", "a misspelt hook (strict)", PluginError,
         "aiocore_register_backendz",
         lambda w: PluginRegistry(
             autoload=False, env={}, strict=True,
             plugins=[("typo", type("P", (), {"aiocore_register_backendz": staticmethod(
                 lambda register: None)})())],
         ), per_backend=False),
    Case("PluginRegistry(env=)", "AIOCORE_STRICT_PLUGINS=1 and a raising hook", PluginError,
         "raised in aiocore_register_backends",
         lambda w: PluginRegistry(
             autoload=False, env={"AIOCORE_STRICT_PLUGINS": "1"},
             plugins=[("boom", type("P", (), {"aiocore_register_backends": staticmethod(
                 lambda register: register(5))})())],
         ), per_backend=False),
    Case("registry.notifier_class(kind)", "5", TypeError, "kind must be a str",
         lambda w: w.registry.notifier_class(5), per_backend=False),  # type: ignore[arg-type]
    # -- configuration ----------------------------------------------------------------
    Case("aiocore.toml", "an unknown key", ConfigError,
         "aiocore.toml: key bogus: unknown key; accepted keys:",
         lambda w: w.config("bogus = 1\n"), per_backend=False),
    Case("aiocore.toml", "not TOML", ConfigError, "aiocore.toml: not valid TOML",
         lambda w: w.config("this is not toml\n"), per_backend=False),
    Case("aiocore.toml backend", "5", ConfigError,
         "key backend: must be a backend name or a list of names",
         lambda w: w.config("backend = 5\n"), per_backend=False),
    Case("aiocore.toml backend", '"nope"', UnknownBackendError,
         "aiocore.toml: key backend: unknown backend 'nope'",
         lambda w: w.config('backend = "nope"\n'), per_backend=False),
    Case("aiocore.toml notifier", '"nope"', ConfigError,
         "aiocore.toml: key notifier: unknown notifier kind 'nope'",
         lambda w: w.config('notifier = "nope"\n'), per_backend=False),
    Case("aiocore.toml poll_max_ns", "-1", ConfigError,
         "key poll_max_ns: must be an integer >= 0",
         lambda w: w.config("poll_max_ns = -1\n"), per_backend=False),
    Case("aiocore.toml [backends.NAME]", "an unregistered NAME", ConfigError,
         "key backends.nope: no backend 'nope' is registered",
         lambda w: w.config("[backends.nope]\nx = 1\n"), per_backend=False),
    Case("aiocore.toml [backends.auto]", "an unknown option", ConfigError,
         "backend 'auto' has no option 'nope'; accepted:",
         lambda w: w.config("[backends.auto]\nnope = 1\n"), per_backend=False),
    Case("aiocore.toml [backends.auto] epoll_threshold", "0", ConfigError,
         "option 'epoll_threshold' must be >= 1",
         lambda w: w.config("[backends.auto]\nepoll_threshold = 0\n"), per_backend=False),
    Case("aiocore.toml [backends.auto] epoll_threshold", '"x"', ConfigError,
         "option 'epoll_threshold' must be int, got str",
         lambda w: w.config('[backends.auto]\nepoll_threshold = "x"\n'), per_backend=False),
    Case("AIOCORE_BACKEND", '"poll,,epoll"', ConfigError,
         "environment variable AIOCORE_BACKEND: has an empty backend name (item 2)",
         lambda w: (w.setenv("AIOCORE_BACKEND", "poll,,epoll"), w.context()),
         per_backend=False),
    Case("AIOCORE_BACKEND", '", ,"', ConfigError,
         "environment variable AIOCORE_BACKEND: must name at least one backend",
         lambda w: (w.setenv("AIOCORE_BACKEND", ", ,"), w.context()),
         per_backend=False),
    Case("AIOCORE_CONFIG", "a missing file", ConfigError, "does not name a file",
         lambda w: (w.setenv("AIOCORE_CONFIG", "/nonexistent/aiocore.toml"), w.context()),
         per_backend=False),
]


def render() -> str:
    """The reST page listing every case, grouped by entry point in list order."""
    out = [
        ".. This page is generated from tests/reliability/bad_inputs.py:",
        "   python -m tests.reliability.bad_inputs > docs/bad-inputs.rst",
        "   (tests/reliability/test_bad_inputs.py fails when they disagree).",
        "",
        "Bad inputs and what they get",
        "============================",
        "",
        "Every public entry point checks its arguments before it changes anything,",
        "so a refused call leaves the context, its handlers, BHs, timers and the",
        "clocks as they were.  Each row below is a test (run on every backend when",
        "it involves a context); the last column is part of the exception's message.",
        "Messages name the argument and what it accepts; configuration errors name",
        "the file and the key.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 26 18 26",
        "",
        "   * - Entry point",
        "     - Bad input",
        "     - Raises",
        "     - Message says",
    ]
    for case in CASES:
        out += [
            f"   * - ``{case.entry}``",
            f"     - {_cell(case.bad)}",
            f"     - ``{case.exc.__name__}``",
            f"     - \"{_escape(case.gist)}\"",
        ]
    out += [
        "",
        f"{len(CASES)} bad inputs.  Errors from the operating system (``EMFILE``, an",
        "fd closed while registered, ``epoll`` refusing a regular file) are described",
        "with the faults they come from in ``tests/reliability/test_faults.py``.",
        "",
    ]
    return "\n".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`")


def _cell(text: str) -> str:
    """Code-like values in literals, prose as is."""
    if text[:1] in "\"'[-0123456789" or text in ("None", "True", "3.0 or True"):
        return f"``{text}``"
    return _escape(text)


def cases(per_backend: bool) -> Iterator[Case]:
    return (c for c in CASES if c.per_backend == per_backend)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
