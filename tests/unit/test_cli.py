"""The ``aiocore`` command: output that a user (and a script) relies on."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from aiocore import _plugins
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
