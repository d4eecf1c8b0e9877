"""Shared fixtures: one registry for the suite, backends as parameters, leak checks.

* ``registry``: a :class:`aiocore.PluginRegistry` built for the test session with
  the built-in plugins, entry points switched off (so an installed third-party
  plugin cannot change results) and the labelled kqueue test double added.
* ``backend``: parametrized over every backend that registry knows.  An
  unavailable backend is skipped with its reason, unless it is listed in
  ``AIOCORE_REQUIRE_BACKENDS`` (comma-separated), which CI sets for the backends
  the machine must have: then the skip becomes a failure.
* ``ctx``: an :class:`aiocore.AioContext` on that backend, closed afterwards.
* Every test runs in its own temporary directory with no ``AIOCORE_*``
  variables but ``AIOCORE_REQUIRE_BACKENDS``, so no config file or environment
  of the developer's leaks in, and the process-wide virtual clock is reset.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before the import below: the kit's asserts are rewritten only if pytest
# knows before the module is first imported (tests/sources relies on it).
pytest.register_assert_rewrite("aiocore.testing")

import aiocore  # noqa: E402
from aiocore import _clocks, _plugins  # noqa: E402
from aiocore.testing import _fds_left, _no_finalizer_closes, open_fds  # noqa: E402

_PRESERVED_ENV = ("AIOCORE_REQUIRE_BACKENDS", "AIOCORE_LIBURING")


def _extra_plugins() -> list[tuple[str, Any]]:
    extra: list[tuple[str, Any]] = []
    try:
        double = importlib.import_module("tests.backends.kqueue_double")
    except ImportError:
        return extra
    extra.append(("kqueue-double", double))
    return extra


def required_backends() -> set[str]:
    """Backends this machine must have (``AIOCORE_REQUIRE_BACKENDS``)."""
    raw = os.environ.get("AIOCORE_REQUIRE_BACKENDS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def skip_or_fail_unavailable(name: str, reason: str) -> None:
    """Skip for an unavailable backend, or fail if this machine must have it."""
    if name in required_backends():
        pytest.fail(
            f"backend {name!r} is required here (AIOCORE_REQUIRE_BACKENDS) but unavailable: "
            f"{reason}",
            pytrace=False,
        )
    pytest.skip(f"backend {name!r} unavailable: {reason}")


_REGISTRY: aiocore.PluginRegistry | None = None


def session_registry() -> aiocore.PluginRegistry:
    """The suite's registry, built once.

    Not strict: a built-in that fails to load must not hide every other
    result; ``test_every_builtin_plugin_loads`` fails for it instead.
    """
    global _REGISTRY
    if _REGISTRY is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", aiocore.PluginWarning)
            _REGISTRY = aiocore.PluginRegistry(
                autoload=False, block=(), strict=False, plugins=_extra_plugins(), env={}
            )
    return _REGISTRY


def backend_names() -> list[str]:
    names = list(session_registry().backends)
    # A backend the machine must have but no plugin registered is a failure
    # too: make it a parameter so the test run shows it.
    for name in sorted(required_backends()):
        if name not in names:
            names.append(name)
    return names


@pytest.fixture(scope="session")
def registry() -> aiocore.PluginRegistry:
    return session_registry()


@pytest.fixture(params=backend_names())
def backend(request: pytest.FixtureRequest, registry: aiocore.PluginRegistry) -> str:
    name: str = request.param
    if name not in registry.backends:
        skip_or_fail_unavailable(name, "no plugin registers it (did its plugin fail to load?)")
    reason = registry.probe(name)
    if reason is not None:
        skip_or_fail_unavailable(name, reason)
    return name


@pytest.fixture
def ctx(backend: str, registry: aiocore.PluginRegistry) -> Iterator[aiocore.AioContext]:
    context = aiocore.AioContext(backend=backend, registry=registry)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("AIOCORE_") and key not in _PRESERVED_ENV:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # auto reads what `aiocore bench` measured on this machine; tests must not
    # depend on whether a developer ran it.
    monkeypatch.setenv("AIOCORE_MEASUREMENTS", str(tmp_path / "no-measurements.json"))
    _clocks._reset_for_tests()
    yield
    _clocks._reset_for_tests()
    # The process's default registry (AioContext() without registry=, the
    # CLI) is built from the environment of the test that first used it: a
    # test that blocked a plugin (AIOCORE_BLOCK_PLUGINS) must not hand that
    # registry to the next test of the same worker.  Rebuilt lazily, so only
    # tests that use it pay for it.
    _plugins.reset_default_registry()


def pip_install(source: Path, target: Path) -> None:
    """``pip install`` the distribution in *source* into the folder *target*.

    Installs from a copy, because pip builds in the source tree (``build/``,
    ``*.egg-info``): under ``pytest -n`` two workers may install the same
    distribution at once, and a test run should leave the checkout as it was.
    """
    work = target.parent / f"{target.name}-src"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "--target",
        str(target),
        str(work),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"pip failed to install {source}:\n{proc.stdout}\n{proc.stderr}"
    assert list(target.glob("*.dist-info")), f"{source} installed no metadata into {target}"


def fork() -> int:
    """``os.fork()`` without Python 3.12's warning about a multi-threaded parent.

    The warning is about a child that goes on to use locks another thread
    held at the fork (logging, imports, malloc in C code).  The children the
    tests fork only sleep, write to an fd or a shared mapping and
    ``os._exit()``; under ``pytest -n`` the parent always has threads
    (execnet's), so the warning would say nothing about these tests.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        return os.fork()


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor open.

    The kit's check (:mod:`aiocore.testing`): garbage the test made is
    collected first, and an fd that only a finalizer closed (a
    ``ResourceWarning``) fails the test too, since its owner forgot it.
    """
    before = open_fds()
    with _no_finalizer_closes("the test"):
        yield
    _fds_left(before, "the test")


