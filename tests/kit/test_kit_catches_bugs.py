"""``aiocore.testing`` fails broken plugins and passes correct ones.

Each run is a pytester subprocess, so the kit is used exactly as a plugin
author uses it.  The broken plugins are vendored from a user audit
(``epoll_variants.py``, ``linepipe_variants.py``); before these checks the
kit passed every one of them, and hung on the backend that ignores its
timeout.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

HERE = Path(__file__).parent
DOCS_EXAMPLES = HERE.parent.parent / "docs" / "examples"
#: A safety net: a kit that hangs fails the run instead of hanging the suite.
SUBPROCESS_TIMEOUT_S = 120


def _outcomes(result: pytest.RunResult) -> dict[str, str]:
    """``{test id: "passed" | "failed" | "error" | "skipped"}`` from ``-rA`` output."""
    rank = {"passed": 0, "skipped": 0, "error": 1, "failed": 2}
    outcomes: dict[str, str] = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        outcome = word.lower()
        if outcome not in rank:
            continue
        if outcome == "skipped":  # "SKIPPED [1] file:line: reason": no test id
            continue
        test_id = rest.split(" - ")[0].split("::", 1)[1]
        if rank[outcome] >= rank[outcomes.get(test_id, "passed")]:
            outcomes[test_id] = outcome
    return outcomes


def _copy(pytester: pytest.Pytester, *paths: Path) -> None:
    for path in paths:
        (pytester.path / path.name).write_text(path.read_text())


# ---------------------------------------------------------------------------
# Backends (items: the kit's missing checks, the watchdog, the closed fd)
# ---------------------------------------------------------------------------

_BACKEND_CONFTEST = """
import aiocore
import aiocore_select
import epoll_variants
import pytest

pytest_plugins = ["aiocore.testing"]

@pytest.fixture(scope="session")
def aiocore_registry():
    return aiocore.PluginRegistry(
        builtins=["notifier"],
        plugins=[("vsel", epoll_variants), ("select", aiocore_select)],
        env={},
        autoload=False,
    )
"""

_BACKEND_TESTS = """
import aiocore
from aiocore.testing import BackendConformance, run_until

class TestVsel(BackendConformance):
    backend_name = "vsel"

class TestDocsSelect(BackendConformance):
    backend_name = "select"

class TestNodrop(BackendConformance):
    backend_name = "vsel_nodrop"

class TestErrhup(BackendConformance):
    backend_name = "vsel_errhup"

class TestRounddown(BackendConformance):
    backend_name = "vsel_rounddown"

class TestSilent(BackendConformance):
    backend_name = "vsel_silent"

class TestNotimeout(BackendConformance):
    backend_name = "vsel_notimeout"
    deadline_s = 1.0

def test_run_until_on_a_backend_that_ignores_its_timeout(aiocore_registry):
    with aiocore.AioContext(backend="vsel_notimeout", registry=aiocore_registry) as ctx:
        ctx.notify()  # the context must wake at close, whatever happens here
        run_until(ctx, lambda: False, timeout=0.5, what="nothing")
"""

#: What each broken backend must fail (it may fail more: one bug often
#: breaks several rules).
_MUST_FAIL = {
    "TestNodrop": [
        "test_a_removed_fd_is_no_longer_watched",
        "test_remove_then_re_add_the_same_fd",
    ],
    "TestErrhup": [
        "test_pipe_hang_up_runs_io_read",
        "test_pipe_error_runs_io_write",
        "test_hang_up_reaches_a_write_only_handler",
    ],
    "TestRounddown": ["test_sub_millisecond_timers_do_not_spin"],
    "TestSilent": [
        "test_closed_fd_is_reported_once[read]",
        "test_closed_fd_is_reported_once[write]",
    ],
    "TestNotimeout": ["test_readiness_runs_io_read", "test_not_ready_means_not_called"],
}


def test_backend_conformance_fails_each_broken_backend(pytester: pytest.Pytester) -> None:
    if not hasattr(select, "epoll"):
        pytest.skip("the vendored backends run on epoll (Linux)")
    _copy(pytester, HERE / "epoll_variants.py", DOCS_EXAMPLES / "aiocore-select/aiocore_select.py")
    pytester.makeconftest(_BACKEND_CONFTEST)
    pytester.makepyfile(test_backends=_BACKEND_TESTS)
    # The correct backends run everything; each broken one only what it
    # must fail (the backend that ignores its timeout takes the watchdog's
    # second per test).
    selected = ["TestVsel", "TestDocsSelect", "run_until"]
    selected += [
        f"({cls} and {test.split('[')[0]})" for cls, tests in _MUST_FAIL.items() for test in tests
    ]
    result = pytester.runpytest_subprocess(
        "-q",
        "-p",
        "no:cacheprovider",
        "-rA",
        "-k",
        " or ".join(selected),
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    got = _outcomes(result)
    out = result.stdout.str()
    correct = {k: v for k, v in got.items() if k.startswith(("TestVsel::", "TestDocsSelect::"))}
    assert len(correct) >= 2 * 20, out
    # select(2) has no hang-up set: a write-only fd's HUP is invisible to the
    # docs' example backend, a limitation docs/writing-a-backend.rst states.
    assert correct.pop("TestDocsSelect::test_hang_up_reaches_a_write_only_handler") == "failed"
    assert set(correct.values()) == {"passed"}, {k: v for k, v in correct.items() if v != "passed"}
    for cls, tests in _MUST_FAIL.items():
        for test in tests:
            assert got.get(f"{cls}::{test}") == "failed", (f"{cls}::{test}", out)
    assert got.get("test_run_until_on_a_backend_that_ignores_its_timeout") == "failed", out
    for pattern in (  # the failures say what is wrong
        "E *wait() calls before a 30 ms timer fired: the removed fd, still ready, ends every*",
        "E *io_read did not run when the pipe's writer closed (a hang-up: is EVENT_HUP*",
        "E *wait() calls for * of 20 timers 0.5 ms apart: a busy loop (is a sub-millisecond*",
        "E *a closed fd must be reported exactly once (EVENT_NVAL from wait(), or OSError from*",
        "E *TestNotimeout::test_readiness_runs_io_read*within 1.0 s*the watchdog woke its*",
        "E *TestNotimeout::test_not_ready_means_not_called did not finish within 1.0 s*",
        "E *Failed: nothing not reached within 0.5 s*",
    ):
        result.stdout.fnmatch_lines([pattern])


# ---------------------------------------------------------------------------
# Sources (callbacks after close, sources that do not own their fds) and the
# parametrization following an overridden registry
# ---------------------------------------------------------------------------

_SOURCE_CONFTEST = """
import aiocore
import aiocore_lines
import epoll_variants
import linepipe_variants
import pytest

pytest_plugins = ["aiocore.testing"]

class OnlyVsel:  # the correct backend alone
    @staticmethod
    @aiocore.hookimpl
    def aiocore_register_backends(register):
        register(epoll_variants.VselBackend)

@pytest.fixture(scope="session")
def aiocore_registry():
    # Installed entry points are not loaded: the broken one is excluded.
    return aiocore.PluginRegistry(
        builtins=["notifier", "poll"],
        plugins=[("vsel", OnlyVsel), ("linepipe", linepipe_variants), ("lines", aiocore_lines)],
        env={},
        autoload=False,
    )
"""

_SOURCE_TESTS = """
import os
from aiocore.testing import SourceConformance

class TestLinePipe(SourceConformance):  # every backend of the override: poll, vsel
    source_name = "linepipe"

    def make_handle(self, source, tmp_path):
        return source.open(self.callback)

    def trigger(self, handle):
        handle.write(b"a line\\n")

class TestLinePipeCbAfter(TestLinePipe):
    source_name = "linepipe_cbafter"
    backends = ["poll"]

class TestNoTrigger(SourceConformance):
    source_name = "linepipe"
    backends = ["poll"]

    def make_handle(self, source, tmp_path):
        return source.open(self.callback)

class LinesKit(SourceConformance):
    # The docs' LineReader: the caller owns the fds it hands to watch().
    source_name = "lines"
    backends = ["poll"]

    def make_handle(self, source, tmp_path):
        r, w = os.pipe()
        source.watch(r, self.callback)
        return source, r, w

    def close_handle(self, handle):
        handle[0].unwatch(handle[1])

class TestLinesOwningTheFds(LinesKit):  # wrong: the kit blames the source for the pipes
    pass

class TestLinesWithoutRelease(LinesKit):
    owns_fds = False
"""

_OVERRIDE_WITH_ARGS_TESTS = """
import aiocore
import linepipe_variants
import pytest
from aiocore.testing import SourceConformance

@pytest.fixture(scope="session")
def aiocore_registry(tmp_path_factory):  # takes a fixture: cannot be called at collection
    return aiocore.PluginRegistry(
        builtins=["notifier", "poll"], plugins=[("linepipe", linepipe_variants)],
        env={}, autoload=False,
    )

class TestOverrideWithArgs(SourceConformance):
    source_name = "linepipe"

    def make_handle(self, source, tmp_path):
        return source.open(self.callback)
"""


def _broken_installed_plugin(root: Path) -> Path:
    """A distribution whose ``aiocore`` entry point cannot be imported, on a path of its own."""
    site = root / "site"
    info = site / "broken_aiocore_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-aiocore-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[aiocore]\nbroken = no_such_module_here\n")
    return site


def test_source_conformance_callbacks_owned_fds_and_overrides(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy(
        pytester,
        HERE / "epoll_variants.py",
        HERE / "linepipe_variants.py",
        DOCS_EXAMPLES / "aiocore_lines.py",
    )
    pytester.makeconftest(_SOURCE_CONFTEST)
    pytester.makepyfile(
        test_sources=_SOURCE_TESTS, test_override_with_args=_OVERRIDE_WITH_ARGS_TESTS
    )
    # Installed but broken: the strict default registry would fail on it.
    site = str(_broken_installed_plugin(pytester.path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    )
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-rA", timeout=SUBPROCESS_TIMEOUT_S
    )
    got = _outcomes(result)
    out = result.stdout.str()
    # The parametrization follows the override: poll and vsel, not epoll.
    linepipe = {k: v for k, v in got.items() if k.startswith("TestLinePipe::")}
    assert set(linepipe.values()) == {"passed"}, out
    assert len(linepipe) == 1 + 2 * 5, linepipe
    assert sorted({k.split("[")[1] for k in linepipe if "[" in k}) == ["poll]", "vsel]"]
    # A callback after close() is caught; without trigger() the check is skipped.
    assert got["TestLinePipeCbAfter::test_no_callback_after_close[poll]"] == "failed"
    result.stdout.fnmatch_lines(
        ["*the callback ran 1 time(s) after close_handle() returned (closed 1 poll(s) after*"]
    )
    assert "TestNoTrigger::test_no_callback_after_close[poll]" not in got
    result.stdout.fnmatch_lines(
        ["*SKIPPED*TestNoTrigger defines no trigger(handle): callbacks after close_handle()*"]
    )
    # owns_fds: a source handed its fds fails the fd checks unless the test
    # says so, and saying so needs release().
    assert got["TestLinesOwningTheFds::test_closed_with_the_context[poll]"] == "failed"
    assert got["TestLinesWithoutRelease::test_closed_with_the_context[poll]"] == "failed"
    result.stdout.fnmatch_lines(["*TestLinesWithoutRelease sets owns_fds = False and must*"])
    # An override that takes fixtures: the default names, non-strict (the
    # broken plugin does not break collection); those it lacks are skipped.
    assert got["TestOverrideWithArgs::test_made_once_per_context[poll]"] == "passed"
    assert "TestOverrideWithArgs::test_made_once_per_context[epoll]" not in got
    result.stdout.fnmatch_lines(["*SKIPPED*backend 'epoll' is not registered in aiocore_registry*"])
    assert result.ret == 1  # failures, not a collection error (ret 2) or an internal error


def test_the_docs_line_reader_passes_the_kit(pytester: pytest.Pytester) -> None:
    """docs/writing-a-source.rst's LineReader and its test, as the docs show them."""
    _copy(
        pytester,
        DOCS_EXAMPLES / "aiocore_lines.py",
        DOCS_EXAMPLES / "lines_kit" / "conftest.py",
        DOCS_EXAMPLES / "lines_kit" / "test_lines.py",
    )
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-rA", timeout=SUBPROCESS_TIMEOUT_S
    )
    got = _outcomes(result)
    assert got, result.stdout.str()
    assert set(got.values()) == {"passed"}, result.stdout.str()
    assert "TestLineReader::test_no_callback_after_close[poll]" in got
    assert result.ret == 0
