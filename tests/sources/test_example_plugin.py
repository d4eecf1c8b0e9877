"""The example third-party plugin, ``examples/aiocore-inotify``, end to end.

pip installs it from its folder into a temporary target (as
``tests/unit/test_plugin_loading.py`` does for its test distributions); then
it is discovered through its entry point, listed by ``aiocore plugins``, used
through ``ctx.sources.inotify``, and its own test suite, written with
``aiocore.testing``, runs against the installed copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiocore import AioContext, PluginRegistry
from tests.conftest import pip_install

from ._helpers import run_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "aiocore-inotify"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the example source uses Linux inotify"
)


@pytest.fixture(scope="session")
def inotify_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("aiocore-inotify")
    pip_install(EXAMPLE, target)
    assert list(target.glob("aiocore_inotify-*.dist-info")), "no metadata installed"
    return target


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCORE_")}
    env["PYTHONPATH"] = str(target)
    return env


def test_discovered_and_used_through_ctx_sources(
    inotify_target: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(inotify_target))
    for name in list(sys.modules):
        if name.startswith("aiocore_inotify"):
            monkeypatch.delitem(sys.modules, name)
    reg = PluginRegistry(env={}, strict=True)
    info = reg.plugins["inotify"]
    assert info.status == "loaded"
    assert not info.builtin
    assert info.dist == "aiocore-inotify 0.1.0"
    assert info.provides == ["source:inotify"]
    import aiocore_inotify

    assert Path(aiocore_inotify.__file__).is_relative_to(inotify_target)
    events: list[Any] = []
    with AioContext(registry=reg) as ctx:
        watch = ctx.sources.inotify.watch(tmp_path, events.append)
        (tmp_path / "new-file").write_text("x")
        run_until(ctx, lambda: any(e.name == "new-file" for e in events))
        assert watch in ctx.sources.inotify.watches
    assert watch.closed  # closed with the context


def test_blocked_by_its_name(inotify_target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(inotify_target))
    reg = PluginRegistry(env={"AIOCORE_BLOCK_PLUGINS": "inotify"})
    assert reg.plugins["inotify"].status == "blocked"
    assert "inotify" not in reg.sources


def test_listed_by_aiocore_plugins(inotify_target: Path) -> None:
    env = _env(inotify_target)
    proc = subprocess.run(
        [sys.executable, "-m", "aiocore", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("inotify "))
    assert "entry point (aiocore)" in line
    assert "aiocore-inotify 0.1.0" in line
    assert "source:inotify" in line
    # The built-in sources are listed the same way.
    for builtin in ("source:socket", "source:timer", "source:notifier"):
        assert builtin in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "aiocore", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["inotify"]["provides"] == ["source:inotify"]
    assert plugins["socket_source"]["provides"] == ["source:socket"]


def test_its_own_suite_passes_with_aiocore_testing(inotify_target: Path, tmp_path: Path) -> None:
    """Run the plugin's tests against the installed copy (not the source folder)."""
    shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        env=_env(inotify_target),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    # The conformance class alone is 5 tests per available backend.
    assert passed >= 20, summary
