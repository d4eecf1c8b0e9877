"""Plugin loading with real, separately installed distributions.

Two distributions under ``tests/plugin_dists/`` are built and installed by pip
into temporary target folders once per session: ``aiocore-selectplugin`` (a
working third-party backend plus lifecycle hooks) and ``aiocore-badplugins``
(one plugin per failure mode).  Tests put a target on ``sys.path`` (in
process) or on ``PYTHONPATH`` (for the CLI in a subprocess), so discovery goes
through ``importlib.metadata`` entry points exactly as after ``pip install``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import aiocore
from aiocore import PluginError, PluginRegistry, PluginWarning, UnknownBackendError
from aiocore.backend import Backend
from tests.conftest import pip_install

DISTS = Path(__file__).resolve().parent.parent / "plugin_dists"


def _pip_install(dist: str, target: Path) -> None:
    pip_install(DISTS / dist, target)


@pytest.fixture(scope="session")
def good_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("selectplugin")
    _pip_install("aiocore-selectplugin", target)
    return target


@pytest.fixture(scope="session")
def bad_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("badplugins")
    _pip_install("aiocore-badplugins", target)
    return target


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Any:
    def add(*targets: Path) -> None:
        for t in targets:
            monkeypatch.syspath_prepend(str(t))
        # Forget modules a previous test imported from a target.
        for name in list(sys.modules):
            if name.startswith(("aiocore_selectplugin", "aiocore_badplugins")):
                monkeypatch.delitem(sys.modules, name)

    return add


def run_cli(
    *args: str, targets: tuple[Path, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCORE_")}
    full_env["PYTHONPATH"] = os.pathsep.join(str(t) for t in targets)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "aiocore", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


# -- a working third-party plugin ---------------------------------------------


def test_third_party_backend_discovered_and_usable(good_target: Path, on_path: Any) -> None:
    on_path(good_target)
    reg = PluginRegistry(env={})
    info = reg.plugins["select"]
    assert info.status == "loaded"
    assert not info.builtin
    assert info.dist == "aiocore-selectplugin 1.2.3"
    assert info.provides == ["backend:select"]
    assert reg.backends["select"].plugin == "select"

    import aiocore_selectplugin as plug

    r, w = os.pipe()
    try:
        with aiocore.AioContext(backend="select", registry=reg) as ctx:
            assert ctx.backend_name == "select"
            assert plug.CREATED[-1] is ctx
            seen: list[int] = []
            ctx.set_fd_handler(r, lambda fd: seen.append(len(os.read(fd, 10))), opaque=r)
            os.write(w, b"abc")
            for _ in range(10):
                if seen:
                    break
                ctx.poll(True)
            assert seen == [3]
            ctx.set_fd_handler(r, None)
        assert plug.CLOSING[-1] is ctx
    finally:
        os.close(r)
        os.close(w)


def test_third_party_backend_options_from_config(
    good_target: Path, on_path: Any, tmp_path: Path
) -> None:
    on_path(good_target)
    (tmp_path / "aiocore.toml").write_text('backend = "select"\n[backends.select]\nmax_fd = 4000\n')
    reg = PluginRegistry(env={})
    with aiocore.AioContext(registry=reg) as ctx:
        assert ctx.backend_name == "select"
        assert ctx.backend_statistics()["max_fd"] == 4000
    (tmp_path / "aiocore.toml").write_text('backend = "select"\n[backends.select]\nmax_fd = "x"\n')
    with pytest.raises(
        aiocore.ConfigError, match=r"aiocore.toml: key backends.select.max_fd: .*int"
    ):
        aiocore.AioContext(registry=reg)
    (tmp_path / "aiocore.toml").write_text('backend = "select"\n[backends.select]\nmaxfd = 3\n')
    with pytest.raises(aiocore.ConfigError, match=r"no option 'maxfd'; accepted: max_fd"):
        aiocore.AioContext(registry=reg)


def test_third_party_backend_blocked_by_name(good_target: Path, on_path: Any) -> None:
    on_path(good_target)
    reg = PluginRegistry(env={"AIOCORE_BLOCK_PLUGINS": "select"})
    assert reg.plugins["select"].status == "blocked"
    assert "select" not in reg.backends
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'select'.*blocked"):
        aiocore.AioContext(backend="select", registry=reg)


def test_autoload_disabled_skips_entry_points(good_target: Path, on_path: Any) -> None:
    on_path(good_target)
    reg = PluginRegistry(env={"AIOCORE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "select" not in reg.plugins
    assert {"poll", "epoll", "auto"} <= set(reg.backends)


def test_cli_lists_third_party_backend_and_plugin(good_target: Path) -> None:
    proc = run_cli("backends", "--json", targets=(good_target,))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {b["name"]: b for b in data["backends"]}
    assert rows["select"]["available"] is True
    assert rows["select"]["plugin"] == "select"
    assert rows["select"]["distribution"] == "aiocore-selectplugin 1.2.3"

    proc = run_cli("plugins", targets=(good_target,))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("select "))
    assert "loaded" in line
    assert "aiocore-selectplugin 1.2.3" in line
    assert "backend:select" in line

    proc = run_cli(
        "plugins", "--json", targets=(good_target,), AIOCORE_BLOCK_PLUGINS="select,epoll"
    )
    data = json.loads(proc.stdout)
    status = {p["name"]: p["status"] for p in data["plugins"]}
    assert status["select"] == "blocked"
    assert status["epoll"] == "blocked"
    assert status["poll"] == "loaded"


def test_cli_env_selects_third_party_backend(good_target: Path) -> None:
    proc = run_cli("info", "--json", targets=(good_target,), AIOCORE_BACKEND="select")
    data = json.loads(proc.stdout)
    assert data["settings"]["backend"] == {
        "value": ["select"],
        "origin": "environment variable AIOCORE_BACKEND",
    }
    assert data["selection"]["selected"] == "select"


# -- broken plugins -----------------------------------------------------------


def test_broken_plugins_are_skipped_with_named_warnings(bad_target: Path, on_path: Any) -> None:
    on_path(bad_target)
    with pytest.warns(PluginWarning) as record:
        reg = PluginRegistry(env={"AIOCORE_BLOCK_PLUGINS": "dupe_epoll"})
    messages = "\n".join(str(w.message) for w in record)
    assert "plugin 'broken_import'" in messages
    assert "failed to import" in messages
    assert "plugin 'misspelt'" in messages
    assert "aiocore_register_backend" in messages
    assert "plugin 'raising'" in messages
    assert "boom in registration" in messages
    for name in ("broken_import", "misspelt", "raising"):
        assert reg.plugins[name].status == "failed"
        assert reg.plugins[name].dist == "aiocore-badplugins 0.0.1"
    # Built-ins are unaffected and contexts work.
    with aiocore.AioContext(backend="poll", registry=reg) as ctx:
        assert not ctx.poll(False)


def test_strict_mode_raises_on_broken_plugin(bad_target: Path, on_path: Any) -> None:
    on_path(bad_target)
    with pytest.raises(PluginError, match=r"broken_import.*AIOCORE_STRICT_PLUGINS"):
        PluginRegistry(env={"AIOCORE_STRICT_PLUGINS": "1", "AIOCORE_BLOCK_PLUGINS": "dupe_epoll"})


def test_strict_mode_passes_once_broken_ones_are_blocked(bad_target: Path, on_path: Any) -> None:
    on_path(bad_target)
    reg = PluginRegistry(
        env={
            "AIOCORE_STRICT_PLUGINS": "1",
            "AIOCORE_BLOCK_PLUGINS": "broken_import,misspelt,raising,dupe_epoll",
        }
    )
    assert all(reg.plugins[n].status == "blocked" for n in ("broken_import", "misspelt"))


def test_duplicate_backend_name_is_a_clear_error(bad_target: Path, on_path: Any) -> None:
    on_path(bad_target)
    with (
        pytest.warns(PluginWarning),
        pytest.raises(
            PluginError,
            match=r"backend 'epoll' is registered by two plugins: 'epoll' .* and 'dupe_epoll'",
        ),
    ):
        PluginRegistry(env={})


def test_cli_reports_broken_plugins(bad_target: Path) -> None:
    proc = run_cli("plugins", targets=(bad_target,), AIOCORE_BLOCK_PLUGINS="dupe_epoll")
    assert proc.returncode == 0, proc.stderr
    assert "broken_import" in proc.stdout
    assert "failed to import" in proc.stdout
    proc = run_cli("backends", targets=(bad_target,))
    assert proc.returncode == 1
    assert "registered by two plugins" in proc.stderr


# -- in-process plugin objects -------------------------------------------------


def test_unmarked_misspelt_hook_is_caught() -> None:
    plugin = types.SimpleNamespace(aiocore_register_backendz=lambda register: None)
    with pytest.warns(PluginWarning, match="aiocore_register_backendz"):
        reg = PluginRegistry(autoload=False, env={}, plugins=[("typo", plugin)])
    assert reg.plugins["typo"].status == "failed"


def test_unmarked_correct_hook_is_used() -> None:
    from aiocore_plugins.poll import PollBackend

    class Other(PollBackend):
        name = "other"

    plugin = types.SimpleNamespace(aiocore_register_backends=lambda register: register(Other))
    reg = PluginRegistry(autoload=False, env={}, plugins=[("other", plugin)])
    assert reg.backends["other"].cls is Other


def test_blocking_builtin_removes_its_backend() -> None:
    reg = PluginRegistry(autoload=False, env={"AIOCORE_BLOCK_PLUGINS": "epoll"})
    assert "epoll" not in reg.backends
    assert reg.plugins["epoll"].status == "blocked"
    with pytest.raises(UnknownBackendError, match=r"known backends: .*poll"):
        aiocore.AioContext(backend="epoll", registry=reg)


def test_auto_stays_on_poll_when_epoll_blocked() -> None:
    reg = PluginRegistry(autoload=False, env={"AIOCORE_BLOCK_PLUGINS": "epoll"})
    notifiers = [aiocore.EventNotifier(registry=reg) for _ in range(80)]
    try:
        with aiocore.AioContext(backend="auto", registry=reg) as ctx:
            for n in notifiers:
                ctx.set_event_notifier(n, lambda e: e.test_and_clear())
            ctx.poll(False)
            assert ctx.backend_name == "poll"
            notifiers[-1].set()
            assert ctx.poll(False)
            for n in notifiers:
                ctx.set_event_notifier(n, None)
    finally:
        for n in notifiers:
            n.close()


def test_lifecycle_hook_failure_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def created(ctx: Any) -> None:
        raise ValueError("hook failed")

    plugin = types.SimpleNamespace(aiocore_context_created=created)
    reg = PluginRegistry(autoload=False, env={}, plugins=[("flaky", plugin)])
    with (
        caplog.at_level("WARNING", logger="aiocore"),
        aiocore.AioContext(backend="poll", registry=reg) as ctx,
    ):
        assert not ctx.closed
    assert "plugin 'flaky' raised in aiocore_context_created" in caplog.text

    strict = PluginRegistry(autoload=False, env={}, strict=True, plugins=[("flaky", plugin)])
    with pytest.raises(PluginError, match="flaky"):
        aiocore.AioContext(backend="poll", registry=strict)


def test_two_plugins_with_one_name_skip_the_second() -> None:
    """Blocking by name cannot tell them apart: the second is skipped, named.

    It used to raise PluginError in every mode, naming AIOCORE_BLOCK_PLUGINS
    as the way out, which blocked both: one installed distribution with an
    entry point called ``poll`` made every AioContext() fail.
    """
    a = types.SimpleNamespace()
    with pytest.warns(PluginWarning, match="two plugins are named 'poll'.*second is skipped"):
        reg = PluginRegistry(autoload=False, env={}, plugins=[("poll", a)])
    assert reg.plugins["poll"].builtin
    with aiocore.AioContext(backend="poll", registry=reg) as ctx:
        assert ctx.backend_name == "poll"
    with pytest.raises(PluginError, match=r"two plugins are named 'poll'.*rename"):
        PluginRegistry(autoload=False, env={}, strict=True, plugins=[("poll", a)])


def test_one_module_under_two_names_keeps_the_first() -> None:
    """Refusing the alias unregistered the first name's hooks from pluggy."""
    created: list[object] = []

    def on_created(ctx: Any) -> None:
        created.append(ctx)

    plugin = types.SimpleNamespace(aiocore_context_created=on_created)
    with pytest.warns(PluginWarning, match="'alias'.* is the same object as plugin 'good'"):
        reg = PluginRegistry(
            autoload=False,
            env={},
            builtins=("notifier", "poll"),
            plugins=[("good", plugin), ("alias", plugin)],
        )
    assert reg.plugins["good"].status == "loaded"
    assert reg.plugins["alias"].status == "failed"
    with aiocore.AioContext(backend="poll", registry=reg) as ctx:
        pass
    assert created == [ctx]


def _backend_plugin(*classes: Any) -> object:
    def register(register: Any) -> None:
        for cls in classes:
            register(cls)

    return types.SimpleNamespace(aiocore_register_backends=register)


def test_a_backend_constructor_error_names_its_plugin() -> None:
    reg = PluginRegistry(
        autoload=False,
        env={},
        builtins=("notifier",),
        plugins=[("refuser", _backend_plugin(_Refusing))],
    )
    with pytest.raises(
        PluginError,
        match=r"backend 'refusing' \(plugin 'refuser', None\) failed to start: "
        r"RuntimeError: kernel refused feature X",
    ) as info:
        aiocore.AioContext(backend="refusing", registry=reg)
    assert isinstance(info.value.__cause__, RuntimeError)
    # aiocore info / backends report it on the selection line (a traceback before).
    result = selection_of(reg, "refusing")
    assert "refusing could not be opened: backend 'refusing'" in result["error"]


def selection_of(reg: PluginRegistry, backend: str) -> dict[str, Any]:
    from aiocore._cli import selection

    old = os.environ.get("AIOCORE_BACKEND")
    os.environ["AIOCORE_BACKEND"] = backend
    try:
        return selection(reg)
    finally:
        if old is None:
            del os.environ["AIOCORE_BACKEND"]
        else:
            os.environ["AIOCORE_BACKEND"] = old


class _Named(Backend):
    def update(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Refusing(_Named):
    name = "refusing"

    def __init__(self, setup: Any) -> None:
        raise RuntimeError("kernel refused feature X")


def _named(name: object, options: object = None) -> type[Backend]:
    attrs: dict[str, object] = {"name": name}
    if options is not None:
        attrs["options"] = options
    return type("Custom", (_Named,), attrs)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ((_named(None),), r"Custom.name must be a backend name .*got None"),
        ((_named("a,b"),), r"Custom.name must be a backend name .*got 'a,b'"),
        ((_named(""),), r"Custom.name must be a backend name .*got ''"),
        ((_named("dup"), _named("dup")), r"backend 'dup' is registered twice by this plugin"),
        ((_named("opts", {"depth": 5}),), r"Custom.options must map option names .* to "),
    ],
)
def test_registered_backends_are_checked_in_the_plugins_hook(
    classes: tuple[type[Backend], ...], message: str
) -> None:
    """A bad name or options failed later, in every context, naming nothing.

    With ``name = None`` a typo like ``backend='epol'`` gave a TypeError from
    sorting the names; ``options = {"depth": 5}`` broke every AioContext();
    a second class under one name silently replaced the first.
    """
    with pytest.warns(
        PluginWarning, match=r"plugin 'custom' .*raised in aiocore_register_backends"
    ):
        reg = PluginRegistry(
            autoload=False,
            env={},
            builtins=("notifier", "poll"),
            plugins=[("custom", _backend_plugin(*classes))],
        )
    assert reg.plugins["custom"].status == "failed"
    assert re.search(message, reg.plugins["custom"].error or "")
    assert set(reg.backends) == {"poll"}
    with pytest.raises(UnknownBackendError, match="unknown backend 'epol'"):
        aiocore.AioContext(backend="epol", registry=reg)
    with aiocore.AioContext(backend="poll", registry=reg):
        pass


def test_register_with_the_wrong_arity_names_what_it_takes() -> None:
    plugin = types.SimpleNamespace(
        aiocore_register_backends=lambda register: register("x", _named("x"))
    )
    with pytest.warns(PluginWarning, match=r"register\(\) takes one Backend subclass, got 2"):
        PluginRegistry(autoload=False, env={}, builtins=(), plugins=[("arity", plugin)])


@pytest.mark.parametrize("name", ["close", "_hidden"])
def test_source_names_ctx_sources_cannot_reach_are_refused(name: str) -> None:
    """``ctx.sources.close`` is the namespace's method; ``_`` names raise AttributeError."""
    plugin = types.SimpleNamespace(
        aiocore_register_sources=lambda register: register(name, lambda ctx: object())
    )
    with pytest.warns(PluginWarning, match=rf"source name must be .*got '{name}'"):
        reg = PluginRegistry(autoload=False, env={}, builtins=(), plugins=[("src", plugin)])
    assert name not in reg.sources


def test_strict_lifecycle_hooks_all_run_before_the_first_error() -> None:
    """A raising closing hook skipped the next plugin's: its resources leaked."""
    calls: list[str] = []

    def failing(ctx: Any) -> None:
        calls.append("B")
        raise RuntimeError("B fails in closing")

    a = types.SimpleNamespace(aiocore_context_closing=lambda ctx: calls.append("A"))
    b = types.SimpleNamespace(aiocore_context_closing=failing)
    reg = PluginRegistry(
        autoload=False,
        env={},
        strict=True,
        builtins=("notifier", "poll"),
        plugins=[("a", a), ("b", b)],
    )
    ctx = aiocore.AioContext(backend="poll", registry=reg)
    with pytest.raises(PluginError, match="plugin 'b' raised in aiocore_context_closing"):
        ctx.close()
    assert sorted(calls) == ["A", "B"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": "epoll"}, r"block must be a list of plugin names \(str\), got 'epoll'"),
        ({"builtins": "poll"}, r"builtins must be a list of plugin names \(str\), got 'poll'"),
        ({"block": [1]}, r"block must be a list of plugin names"),
        ({"plugins": [types]}, r"plugins must be a list of \(name, plugin object\) pairs"),
    ],
)
def test_registry_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    """``block="epoll"`` blocked the letters e, p, o, l and left epoll loaded."""
    with pytest.raises(TypeError, match=message):
        PluginRegistry(autoload=False, env={}, **kwargs)


def test_unknown_backend_says_which_plugin_did_not_load() -> None:
    """The CLI hides load warnings, so the error itself must say it."""

    def broken() -> None:
        raise ImportError("needs libfoo")

    bad = types.SimpleNamespace(aiocore_register_backends=lambda register: broken())
    with pytest.warns(PluginWarning):
        reg = PluginRegistry(
            autoload=False, env={}, builtins=("notifier", "poll"), plugins=[("select", bad)]
        )
    with pytest.raises(
        UnknownBackendError,
        match=r"unknown backend 'select' \(plugin 'select' did not load: .*needs libfoo\)",
    ):
        aiocore.AioContext(backend="select", registry=reg)
    with pytest.raises(
        UnknownBackendError, match=r"plugins that did not load: 'select'; see 'aiocore plugins'"
    ):
        aiocore.AioContext(backend="other", registry=reg)


def test_no_registry_is_created_at_import() -> None:
    code = (
        "import aiocore, aiocore._plugins as p, sys; "
        "assert p._default is None; "
        "assert not any(m.startswith('aiocore_plugins.') for m in sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_builtin_plugin_loads() -> None:
    from aiocore._plugins import BUILTIN_PLUGINS

    reg = PluginRegistry(autoload=False, env={}, strict=True)
    assert [p.name for p in reg.plugins.values()] == list(BUILTIN_PLUGINS)
    assert all(p.status == "loaded" and p.builtin for p in reg.plugins.values())
    assert {"poll", "epoll", "auto", "io_uring", "kqueue"} <= set(reg.backends)
    assert {"eventfd", "pipe"} <= set(reg.notifiers)


def test_a_backend_update_bug_is_a_plugin_error_and_changes_nothing() -> None:
    """update() may raise only OSError; anything else is a plugin's bug.

    A KeyError from it reached the user as is, naming no plugin.  Now it is a
    PluginError naming the backend and plugin: an add or change is undone
    (the call changes nothing), and a removal still forgets the handler.
    """
    import socket

    from aiocore_plugins.poll import PollBackend

    class Buggy(PollBackend):
        name = "buggy"
        armed = False

        def update(self, fd: int, old_mask: int, new_mask: int) -> None:
            if Buggy.armed:
                raise KeyError(fd)
            super().update(fd, old_mask, new_mask)

    reg = PluginRegistry(
        autoload=False, env={}, builtins=("notifier",), plugins=[("bug", _backend_plugin(Buggy))]
    )
    a, b = socket.socketpair()
    try:
        with aiocore.AioContext(backend="buggy", registry=reg) as ctx:
            Buggy.armed = True
            message = r"backend 'buggy' \(plugin 'bug', None\) raised KeyError in update"
            with pytest.raises(PluginError, match=message) as info:
                ctx.set_fd_handler(a.fileno(), lambda _o: None)
            assert isinstance(info.value.__cause__, KeyError)
            assert a.fileno() not in ctx.handler_fds()  # the add changed nothing
            Buggy.armed = False
            ctx.set_fd_handler(a.fileno(), lambda _o: None)
            Buggy.armed = True
            with pytest.raises(PluginError, match="raised KeyError in update"):
                ctx.set_fd_handler(a.fileno(), None)
            assert a.fileno() not in ctx.handler_fds()  # a removal still forgets it
            Buggy.armed = False
    finally:
        Buggy.armed = False
        a.close()
        b.close()


def test_every_source_is_closed_even_after_a_base_exception() -> None:
    """A context closes its sources newest first; one whose close() raises,
    even a BaseException, does not keep the older ones open, and the first
    error is raised once all were tried."""
    closed: list[str] = []

    class Source:
        def __init__(self, name: str, exc: BaseException | None) -> None:
            self.name, self.exc = name, exc

        def close(self) -> None:
            closed.append(self.name)
            if self.exc is not None:
                raise self.exc

    def register_sources(register: Any) -> None:
        register("older", lambda ctx: Source("older", None))
        register("middle", lambda ctx: object())  # no close(): skipped
        register("newer", lambda ctx: Source("newer", KeyboardInterrupt()))

    plugin = types.SimpleNamespace(aiocore_register_sources=register_sources)
    reg = PluginRegistry(autoload=False, env={}, plugins=[("src", plugin)])
    ctx = aiocore.AioContext(registry=reg)
    ctx.sources.older, ctx.sources.middle, ctx.sources.newer  # noqa: B018
    with pytest.raises(KeyboardInterrupt):
        ctx.close()
    assert closed == ["newer", "older"]
    assert ctx.closed
