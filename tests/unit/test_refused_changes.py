"""A handler change the kernel refuses changes nothing (SPEC 12)."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

import aiocore


def test_epoll_refuses_regular_file_and_nothing_changes(registry: aiocore.PluginRegistry) -> None:
    with aiocore.AioContext("epoll", registry=registry) as ctx, tempfile.TemporaryFile() as f:
        before = ctx.handler_fds()
        with pytest.raises(PermissionError, match="regular file or directory"):
            ctx.set_fd_handler(f.fileno(), lambda _: None)
        assert ctx.handler_fds() == before
        assert not ctx.poll(False)


def test_refused_change_keeps_the_old_handler(registry: aiocore.PluginRegistry) -> None:
    a, b = socket.socketpair()
    seen: list[str] = []
    with aiocore.AioContext("epoll", registry=registry) as ctx:
        ctx.set_fd_handler(a, lambda _: seen.append("old") or a.recv(1))
        fd = a.fileno()
        # Close the fd behind the context's back (what SPEC 3 tells users not
        # to do), then try to change the handler: epoll_ctl(MOD) fails EBADF.
        a.detach()
        os.close(fd)
        with pytest.raises(OSError):
            ctx.set_fd_handler(fd, lambda _: seen.append("new"), lambda _: None)
        assert ctx.handler_fds() == [fd]
        node = ctx._table.nodes[fd]
        assert not node.deleted
        assert node.io_write is None  # the old record, not the refused one
        assert node.mask == aiocore.EVENT_IN
        # Removing it reports epoll's error through the exception handler.
        errors: list[BaseException] = []
        ctx.set_exception_handler(lambda c, e: errors.append(e))
        ctx.set_fd_handler(fd, None)
        assert ctx.handler_fds() == []
        assert len(errors) == 1
        assert isinstance(errors[0], OSError)
    b.close()
    assert seen == []
