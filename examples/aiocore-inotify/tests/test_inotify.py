"""Tests of the inotify source, on every backend, with ``aiocore.testing``.

Run from this folder with the distribution installed (or on ``sys.path``):
``python -m pytest``.  The conformance class checks the source contract; the
functions below check what inotify itself does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiocore_inotify as ino
import pytest

from aiocore import AioContext
from aiocore.testing import SourceConformance, run_until


class TestInotifyConformance(SourceConformance):
    source_name = "inotify"

    def make_handle(self, source: Any, tmp_path: Path) -> Any:
        return source.watch(tmp_path, lambda _event: None)


def test_found_through_the_entry_point(aiocore_registry: Any) -> None:
    info = aiocore_registry.sources["inotify"]
    plugin = aiocore_registry.plugins[info.plugin]
    assert plugin.name == "inotify"
    assert not plugin.builtin
    assert plugin.dist is not None and plugin.dist.startswith("aiocore-inotify ")


def test_create_modify_delete(no_fd_leak: None, aiocore_ctx: AioContext, tmp_path: Path) -> None:
    events: list[ino.InotifyEvent] = []
    w = aiocore_ctx.sources.inotify.watch(tmp_path, events.append)
    f = tmp_path / "hello.txt"
    f.write_text("hi")
    f.unlink()
    run_until(aiocore_ctx, lambda: any(e.mask & ino.IN_DELETE for e in events))
    kinds = [e.mask & ~ino.IN_ISDIR for e in events]
    assert kinds[0] == ino.IN_CREATE
    assert ino.IN_CLOSE_WRITE in kinds
    assert kinds[-1] == ino.IN_DELETE
    assert {e.name for e in events} == {"hello.txt"}
    assert all(e.path == str(tmp_path) for e in events)
    w.close()


def test_rename_pairs_share_a_cookie(aiocore_ctx: AioContext, tmp_path: Path) -> None:
    events: list[ino.InotifyEvent] = []
    (tmp_path / "a").write_text("x")
    w = aiocore_ctx.sources.inotify.watch(
        tmp_path, events.append, mask=ino.IN_MOVED_FROM | ino.IN_MOVED_TO
    )
    os.rename(tmp_path / "a", tmp_path / "b")
    run_until(aiocore_ctx, lambda: len(events) == 2)
    assert [e.name for e in events] == ["a", "b"]
    assert events[0].cookie == events[1].cookie != 0
    w.close()


def test_two_watches_on_one_directory_get_their_own_masks(
    aiocore_ctx: AioContext, tmp_path: Path
) -> None:
    creates: list[str] = []
    deletes: list[str] = []
    w1 = aiocore_ctx.sources.inotify.watch(
        tmp_path, lambda e: creates.append(e.name), mask=ino.IN_CREATE
    )
    w2 = aiocore_ctx.sources.inotify.watch(
        tmp_path, lambda e: deletes.append(e.name), mask=ino.IN_DELETE
    )
    assert w1.wd == w2.wd
    (tmp_path / "f").write_text("")
    (tmp_path / "f").unlink()
    run_until(aiocore_ctx, lambda: bool(creates) and bool(deletes))
    assert creates == ["f"] and deletes == ["f"]
    w1.close()
    (tmp_path / "g").write_text("")
    (tmp_path / "g").unlink()
    run_until(aiocore_ctx, lambda: len(deletes) == 2)
    assert creates == ["f"]
    w2.close()


def test_deleted_directory_ends_the_watch(
    no_fd_leak: None, aiocore_ctx: AioContext, tmp_path: Path
) -> None:
    d = tmp_path / "sub"
    d.mkdir()
    events: list[ino.InotifyEvent] = []
    w = aiocore_ctx.sources.inotify.watch(d, events.append)
    d.rmdir()
    run_until(aiocore_ctx, lambda: w.closed)
    assert any(e.mask & ino.IN_DELETE_SELF for e in events)
    assert aiocore_ctx.handler_fds() == []  # last watch gone: fd closed


def test_bad_inputs(no_fd_leak: None, aiocore_ctx: AioContext, tmp_path: Path) -> None:
    src = aiocore_ctx.sources.inotify
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got int"):
        src.watch(3, print)
    with pytest.raises(TypeError, match="callback must be a callable, got str"):
        src.watch(tmp_path, "cb")
    with pytest.raises(ValueError, match="mask must contain at least one event bit"):
        src.watch(tmp_path, print, mask=ino.IN_ISDIR)
    with pytest.raises(FileNotFoundError, match="inotify_add_watch"):
        src.watch(tmp_path / "missing", print)
    assert src.watches == []
    assert aiocore_ctx.handler_fds() == []
