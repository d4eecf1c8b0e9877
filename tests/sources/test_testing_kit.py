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

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.listen(("127.0.0.1", 0), lambda s: s.close())


class TestSocketStreamConformance(SourceConformance):
    source_name = "socket"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        a, b = socket.socketpair()
        b.close()  # the stream sees end of file; it still owns and closes a
        return source.stream(a, lambda _d: None, on_eof=lambda: None)

    def close_handle(self, handle: Any) -> None:
        handle.abort()


class TestTimerSourceConformance(SourceConformance):
    source_name = "timer"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.periodic(1_000_000, lambda _o: None)


class TestNotifierSourceConformance(SourceConformance):
    source_name = "notifier"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.new(lambda: None)


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
