"""The ``aiocore`` command: output that a user (and a script) relies on."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiocore import AioContext, BackendUnavailable, ConfigError, UnknownBackendError, _plugins
from aiocore._cli import main


@pytest.fixture(autouse=True)
def fresh_default_registry() -> None:
    # The CLI uses the process's default registry; rebuild it per test so an
    # environment set by one test is honoured.
    _plugins.reset_default_registry()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


def test_backends_table_lists_each_backend_with_status_and_provider() -> None:
    status, text = run("backends")
    assert status == 0
    lines = text.splitlines()
    assert lines[0].split() == ["BACKEND", "PLUGIN", "DISTRIBUTION", "STATUS"]
    rows = {
        ln.split()[0]: ln
        for ln in lines[1:]
        if ln and not ln.startswith(("selection", "plugin", "skipped"))
    }
    for name in ("poll", "epoll", "auto"):
        assert name in rows
        assert "available" in rows[name]
        assert "aiocore 0.1.0" in rows[name]
    sel = next(ln for ln in lines if ln.startswith("selection:"))
    assert "auto (requested [auto] by default)" in sel
    assert "runs on poll; it upgrades to epoll at 64 fds" in sel


def test_backends_json_parses_and_matches_registry() -> None:
    status, text = run("backends", "--json")
    assert status == 0
    data = json.loads(text)
    names = [b["name"] for b in data["backends"]]
    assert {"poll", "epoll", "auto"} <= set(names)
    for b in data["backends"]:
        assert b["available"] is (b["reason"] is None)
    assert data["selection"]["selected"] == "auto"
    assert data["selection"]["runs_on"] == "poll"


def test_env_backend_shows_in_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOCORE_BACKEND", "kqueue,epoll")
    status, text = run("backends")
    assert status == 0
    assert "skipped kqueue:" in text
    assert (
        "selection: epoll (requested [kqueue, epoll] by environment variable AIOCORE_BACKEND)"
        in text
    )


def test_plugins_lists_blockable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOCORE_BLOCK_PLUGINS", "epoll")
    status, text = run("plugins", "--json")
    assert status == 0
    data = json.loads(text)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["epoll"]["status"] == "blocked"
    assert by_name["poll"]["status"] == "loaded"
    assert by_name["poll"]["provides"] == ["backend:poll"]
    assert data["blocked"] == ["epoll"]
    status, text = run("backends", "--json")
    assert "epoll" not in [b["name"] for b in json.loads(text)["backends"]]


def test_no_command_prints_help() -> None:
    status, text = run()
    assert status == 2
    assert "backends" in text
    assert "plugins" in text
    assert "info" in text


def test_python_dash_m_works_the_same() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiocore", "backends", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(proc.stdout)["selection"]["selected"] == "auto"


def test_console_script_installed() -> None:
    import shutil

    exe = shutil.which("aiocore")
    assert exe is not None, "the aiocore console script is not on PATH"
    proc = subprocess.run([exe, "plugins"], capture_output=True, text=True, timeout=60, check=True)
    assert "PLUGIN" in proc.stdout


# -- `aiocore backends` agrees with AioContext() ------------------------------------


def context_error(registry: _plugins.PluginRegistry) -> str | None:
    """What ``AioContext()`` raises here (as the CLI sees it), or ``None``."""
    try:
        AioContext(registry=registry).close()
    except (ConfigError, UnknownBackendError, BackendUnavailable) as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        # An option of a backend that is not the one selected (auto runs on poll).
        (
            '[backends.io_uring]\nentries = "big"\n',
            "key backends.io_uring.entries: option 'entries' must be int, got str 'big'",
        ),
        (
            'backend = "io_uring"\n[backends.io_uring]\nentries = 100000\n',
            "key backends.io_uring.entries: option 'entries' must be in 1..32768, got 100000",
        ),
        (
            'backend = "epoll"\n[backends.io_uring]\ncq_entries = 4294967297\n',
            "option 'cq_entries' must be in 0..65536, got 4294967297",
        ),
        # The notifier is checked too.
        ('notifier = "bogus"\n', "key notifier: unknown notifier kind 'bogus'"),
    ],
)
def test_backends_reports_what_aiocore_context_would_raise(
    tmp_path: Path, toml: str, match: str
) -> None:
    (tmp_path / "aiocore.toml").write_text(toml)
    registry = _plugins.default_registry()
    error = context_error(registry)
    assert error is not None and match in error
    status, text = run("backends")
    assert status == 1
    sel = [ln for ln in text.splitlines() if ln.startswith("selection:")]
    assert sel == [f"selection: error: {error}"]
    assert "runs on" not in text
    status, text = run("backends", "--json")
    assert status == 1
    data = json.loads(text)["selection"]
    assert data["error"] == error
    assert "runs_on" not in data
    # info says the same, and exits 1 for it too.
    for extra in ((), ("--json",)):
        status, text = run("info", *extra)
        assert status == 1
        assert match in text


def test_backends_exits_1_when_the_selected_backend_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: _plugins.PluginRegistry, names: Any, *args: Any, **kw: Any) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_plugins.PluginRegistry, "open_backend", refuse)
    monkeypatch.setenv("AIOCORE_BACKEND", "poll")
    status, text = run("backends")
    assert status == 1
    sel = [ln for ln in text.splitlines() if ln.startswith("selection:")]
    assert len(sel) == 1
    assert sel[0].startswith(
        "selection: poll (requested [poll] by environment variable AIOCORE_BACKEND); "
        "a new context fails: poll could not be opened: [Errno 24]"
    )
    status, text = run("backends", "--json")
    assert status == 1
    assert json.loads(text)["selection"]["selected"] == "poll"


def test_demo_refused_backend_leaves_the_sigterm_handler_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The handler was installed before the context, and stayed on a refusal."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert run("demo", "echo", "--backend", "bogus")[0] == 1
    assert signal.getsignal(signal.SIGTERM) is before
    assert "unknown backend 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["port in use", "unresolvable host"])
def test_demo_listen_errors_are_messages(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A port in use or a host that does not resolve printed a traceback."""
    import signal
    import socket

    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if case == "port in use":
            args = ["--port", str(busy.getsockname()[1])]
            reason = "Address already in use"
        else:
            args = ["--host", "no-such-host.invalid"]
            reason = "is not a valid address"
        assert run("demo", "echo", "--backend", "poll", *args)[0] == 1
    err = capsys.readouterr().err
    assert err.startswith("aiocore demo echo: cannot listen on ")
    assert reason in err
    assert signal.getsignal(signal.SIGTERM) is before
