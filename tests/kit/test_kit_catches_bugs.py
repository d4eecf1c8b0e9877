"""``aiocore.testing`` fails broken plugins and passes correct ones.

Each run is a pytester subprocess, so the kit is used exactly as a plugin
author uses it.  The broken plugins are vendored from a user audit
(``epoll_variants.py``); before these checks the kit passed every one of
them, and hung on the backend that ignores its timeout.
"""

from __future__ import annotations

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
# Backends: the kit's missing checks, the watchdog, the closed fd
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
