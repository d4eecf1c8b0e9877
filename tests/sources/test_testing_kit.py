"""``aiocore.testing`` run against the built-in plugins: the kit passes on known-good code.

The classes below are exactly what an outside plugin writes (see the
``examples/aiocore-inotify`` distribution, whose own tests the suite runs in
``test_example_plugin.py``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from aiocore.testing import BackendConformance, SourceConformance

pytest_plugins = ("aiocore.testing", "pytester")


class TestPollConformance(BackendConformance):
    backend_name = "poll"


class TestEpollConformance(BackendConformance):
    backend_name = "epoll"


class TestIoUringConformance(BackendConformance):
    backend_name = "io_uring"


class TestAutoConformance(BackendConformance):
    backend_name = "auto"


class TestSocketSourceConformance(SourceConformance):
    source_name = "socket"
    #: The clients trigger() connects are the test's; release() closes them.
    owns_fds = False

    @pytest.fixture(autouse=True)
    def _clients(self) -> None:
        self.clients: dict[Any, list[socket.socket]] = {}

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        def on_connection(stream: Any) -> None:
            self.callback(stream)
            stream.close()

        listener = source.listen(("127.0.0.1", 0), on_connection)
        self.clients[listener] = []
        return listener

    def trigger(self, handle: Any) -> None:
        client = socket.create_connection(handle.address[:2], timeout=5)
        self.clients[handle].append(client)

    def release(self, handle: Any) -> None:
        for client in self.clients.pop(handle, []):
            client.close()


class TestSocketStreamConformance(SourceConformance):
    source_name = "socket"
    #: The peer end is the test's (release() closes it); the stream owns its end.
    owns_fds = False

    @pytest.fixture(autouse=True)
    def _peers(self) -> None:
        self.peers: dict[Any, socket.socket] = {}

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        a, b = socket.socketpair()
        stream = source.stream(a, self.callback, on_eof=lambda: None)
        self.peers[stream] = b
        return stream

    def trigger(self, handle: Any) -> None:
        self.peers[handle].send(b"x")

    def close_handle(self, handle: Any) -> None:
        handle.abort()

    def release(self, handle: Any) -> None:
        peer = self.peers.pop(handle, None)
        if peer is not None:
            peer.close()


class TestTimerSourceConformance(SourceConformance):
    source_name = "timer"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.periodic(1_000_000, self.callback)

    def trigger(self, handle: Any) -> None:
        pass  # due every millisecond


class TestNotifierSourceConformance(SourceConformance):
    source_name = "notifier"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.new(self.callback)

    def trigger(self, handle: Any) -> None:
        handle.set()


class TestMisconfiguredSubclassFails:
    def test_missing_backend_name_is_reported(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(
            """
            from aiocore.testing import BackendConformance, SourceConformance
            pytest_plugins = ("aiocore.testing",)

            class TestNoName(BackendConformance):
                pass

            class TestNoHandle(SourceConformance):
                source_name = "timer"
            """
        )
        result = pytester.runpytest_subprocess(
            "-q", "-p", "no:cacheprovider", "-k", "readiness or attaches and epoll"
        )
        result.stdout.fnmatch_lines(["*must set backend_name*", "*must implement make_handle()*"])


# A plugin with three sources, run through the kit in a pytester subprocess
# (so it is checked the way an outside plugin is): "leaky_close" is a source
# whose close() does nothing, "leaky_handle" one whose handles remove their
# handler but forget their fds, "sound" the same done right.  Their fds are
# sockets, whose finalizer would close what the source forgot: the kit must
# not let that hide the leak.
_BROKEN_PLUGIN = """
import socket
from aiocore import hookimpl

class Handle:
    def __init__(self, ctx, forget_fds):
        self.a, self.b = socket.socketpair()
        self.ctx, self.forget_fds, self.closed = ctx, forget_fds, False
        ctx.set_fd_handler(self.a, lambda _o: None)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if not self.ctx.closed:
            self.ctx.set_fd_handler(self.a, None)
        if not self.forget_fds:
            self.a.close()
            self.b.close()

class Source:
    close_does_nothing = forget_fds = False

    def __init__(self, ctx):
        self.ctx, self.made = ctx, []

    def new(self):
        handle = Handle(self.ctx, self.forget_fds)
        self.made.append(handle)
        return handle

    def close(self):
        if not self.close_does_nothing:
            for handle in self.made:
                handle.close()

class LeakyClose(Source):
    close_does_nothing = True

class LeakyHandle(Source):
    forget_fds = True

@hookimpl
def aiocore_register_sources(register):
    register("leaky_close", LeakyClose)
    register("leaky_handle", LeakyHandle)
    register("sound", Source)
"""

_BROKEN_TESTS = """
import socket
import pytest
import broken_plugin
from aiocore import PluginRegistry
from aiocore.testing import SourceConformance

@pytest.fixture(scope="session")
def aiocore_registry():
    return PluginRegistry(plugins=[("broken", broken_plugin)], env={})

class Kit(SourceConformance):
    def make_handle(self, source, tmp_path):
        return source.new()

class TestLeakyClose(Kit):
    source_name = "leaky_close"

class TestLeakyHandle(Kit):
    source_name = "leaky_handle"

class TestSound(Kit):
    source_name = "sound"

def test_a_socket_left_to_its_finalizer(no_fd_leak):
    socket.socket()  # never closed: only socket.__del__ closes it
"""


def _outcomes(result: pytest.RunResult) -> dict[str, str]:
    """``{test id: "passed" | "failed" | "error"}`` from ``-rA`` output."""
    rank = {"passed": 0, "error": 1, "failed": 2}
    outcomes: dict[str, str] = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        outcome = word.lower()
        if outcome in rank:
            test_id = rest.split(" - ")[0].split("::", 1)[1]
            # A test that passed may error in teardown, one that failed too:
            # keep the worst.
            if rank[outcome] >= rank[outcomes.get(test_id, "passed")]:
                outcomes[test_id] = outcome
    return outcomes


def test_the_kit_fails_a_source_that_leaves_its_fds_to_finalizers(
    pytester: pytest.Pytester,
) -> None:
    """The fd checks run while the handles are referenced, and ResourceWarning fails.

    Before, the kit compared fds only in ``no_fd_leak``'s teardown, after the
    test's locals were gone and ``socket.__del__`` had closed what the source
    forgot (its ResourceWarning ignored): all of these passed.
    """
    pytester.makeconftest('pytest_plugins = ("aiocore.testing",)')
    pytester.makepyfile(broken_plugin=_BROKEN_PLUGIN, test_broken=_BROKEN_TESTS)
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-rA", "-k", "poll and not epoll or finalizer"
    )
    got = _outcomes(result)
    expected = {
        "TestLeakyClose::test_closed_with_the_context[poll]": "failed",
        "TestLeakyClose::test_no_fd_leak_over_many_contexts[poll]": "failed",
        "TestLeakyClose::test_handle_attaches_and_detaches[poll]": "passed",
        "TestLeakyHandle::test_handle_attaches_and_detaches[poll]": "failed",
        "TestLeakyHandle::test_closed_with_the_context[poll]": "failed",
        "TestLeakyHandle::test_no_fd_leak_over_many_contexts[poll]": "failed",
        "TestSound::test_handle_attaches_and_detaches[poll]": "passed",
        "TestSound::test_closed_with_the_context[poll]": "passed",
        "TestSound::test_no_fd_leak_over_many_contexts[poll]": "passed",
        "test_a_socket_left_to_its_finalizer": "error",
    }
    assert {k: got.get(k) for k in expected} == expected, result.stdout.str()
    for pattern in (
        "*ctx.close() with 3 handles of <broken_plugin.LeakyClose*left file descriptors "
        "open: {*socket:*",
        "*30 contexts closed with a handle of source 'leaky_close' each left file "
        "descriptors open*",
        "*closing <broken_plugin.Handle*left file descriptors open*",
        "*closed by the garbage collector, not by its owner (1 ResourceWarning): "
        "unclosed <socket.socket*",
    ):
        result.stdout.fnmatch_lines([pattern])
