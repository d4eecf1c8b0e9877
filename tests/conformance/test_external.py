"""SPEC section 9: external clients.

``is_external`` handlers are neither dispatched nor polled nor waited on while
``disable_external()`` is in force; the counter nests; ``enable_external()``
notifies when it reaches 0 and raises ``RuntimeError`` when unbalanced;
internal handlers, BHs and timers go on; handlers added, changed or removed
while disabled behave on enable.  (``auto`` not upgrading while disabled is in
``test_auto_upgrade.py``; poll mode counting disabled external handlers is in
``test_poll_mode.py``.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from aiocore import AioContext, Clock, clock_enable, clock_get_ns

from ._support import Pair, Recorder, WaitSpy, make_pipe


def test_disabled_external_handler_is_not_dispatched(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"), rec.cb("write"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    assert ctx.external_disabled == 1
    for _ in range(3):
        assert ctx.poll(False) is False
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.external_disabled == 0
    assert ctx.poll(False) is True
    assert rec.names() == ["read", "write"]


def test_internal_handlers_bhs_and_timers_go_on(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    ext, internal = pairs(), pairs()
    rec = Recorder()
    ctx.set_fd_handler(ext.a, rec.cb("external"), is_external=True)
    ctx.set_fd_handler(internal.a, rec.cb("internal"))
    ctx.disable_external()
    ext.send_to_a()
    internal.send_to_a()
    ctx.bh_schedule_oneshot(rec.cb("bh"))
    ctx.timer_new_ns(Clock.REALTIME, rec.cb("timer")).mod_ns(0)
    assert ctx.poll(False) is True
    assert rec.names() == ["bh", "internal", "timer"]
    ctx.enable_external()


def test_disable_nests(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    ctx.disable_external()
    assert ctx.external_disabled == 2
    ctx.enable_external()
    assert ctx.external_disabled == 1
    assert ctx.poll(False) is False
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["read"]


def test_unbalanced_enable_raises_and_changes_nothing(ctx: AioContext, pair: Pair) -> None:
    with pytest.raises(RuntimeError):
        ctx.enable_external()
    assert ctx.external_disabled == 0
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"), is_external=True)
    pair.send_to_a()
    assert ctx.poll(False) is True
    assert rec.names() == ["read"]
    ctx.disable_external()
    ctx.enable_external()
    with pytest.raises(RuntimeError):
        ctx.enable_external()
    assert ctx.external_disabled == 0
    assert ctx.poll(False) is True
    assert rec.names() == ["read", "read"]


def test_enable_notifies_when_it_reaches_zero(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ctx, "notify", lambda: calls.append(1))
    ctx.disable_external()
    ctx.disable_external()
    assert calls == []
    ctx.enable_external()
    assert calls == []
    ctx.enable_external()
    assert calls == [1]


def test_disabled_external_handler_is_not_polled(ctx: AioContext) -> None:
    r, w = make_pipe()
    try:
        polls: list[object] = []

        def io_poll(opaque: object) -> bool:
            polls.append(opaque)
            return True

        ctx.set_fd_handler(r, lambda _o: None, None, io_poll, "ext", is_external=True)
        ctx.disable_external()
        for _ in range(3):
            assert ctx.poll(False) is False
        assert polls == []
        ctx.enable_external()
        assert ctx.poll(False) is True
        assert polls == ["ext"]
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)


def test_disabled_external_handler_is_not_waited_on(ctx: AioContext, pair: Pair) -> None:
    # A ready external fd must not wake a blocking poll while disabled:
    # otherwise, being level-triggered, every poll(True) returns at once.
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    fired: list[int] = []
    ctx.timer_new_ms(Clock.REALTIME, lambda _o: fired.append(1)).mod(
        clock_get_ns(Clock.REALTIME) // 1_000_000 + 30
    )
    ctx.poll(False)
    returns = 0
    for _ in range(50):
        ctx.poll(True)
        returns += 1
        if fired:
            break
    assert fired == [1]
    assert returns <= 2, f"poll(True) returned {returns} times: the external fd was waited on"
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["read"]


def test_external_handler_added_while_disabled(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.disable_external()
    ctx.set_fd_handler(pair.a, rec.cb("read"), is_external=True)
    pair.send_to_a()
    assert ctx.poll(False) is False
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["read"]


def test_external_handler_changed_while_disabled(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("old"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    ctx.set_fd_handler(pair.a, rec.cb("new"), rec.cb("write"), is_external=True)
    assert ctx.poll(False) is False
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["new", "write"]


def test_external_handler_removed_while_disabled(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("read"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    ctx.set_fd_handler(pair.a, None)
    assert pair.a not in ctx.handler_fds()
    ctx.enable_external()
    for _ in range(2):
        assert ctx.poll(False) is False
    assert rec.calls == []
    # And it can be registered again, as internal now.
    ctx.set_fd_handler(pair.a, rec.cb("again"))
    assert ctx.poll(False) is True
    assert rec.names() == ["again"]


def test_handler_switched_between_external_and_internal(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("ext"), is_external=True)
    pair.send_to_a()
    ctx.disable_external()
    ctx.set_fd_handler(pair.a, rec.cb("int"))
    assert ctx.poll(False) is True
    assert rec.names() == ["int"]
    ctx.set_fd_handler(pair.a, rec.cb("ext2"), is_external=True)
    rec.clear()
    assert ctx.poll(False) is False
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["ext2"]


def test_readiness_reported_before_disable_is_not_dispatched_while_disabled(
    ctx: AioContext, pair: Pair, spy: WaitSpy
) -> None:
    # The wait reports the external fd; a BH (run before fd dispatch)
    # disables external clients: the handler must not run in this dispatch.
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("ext"), is_external=True)
    ctx.poll(False)
    ctx.bh_schedule_oneshot(lambda _o: ctx.disable_external())
    pair.send_to_a()
    spy.reset()
    ctx.poll(False)
    assert spy.reported_mask(pair.a)
    assert rec.calls == []
    ctx.enable_external()
    assert ctx.poll(False) is True
    assert rec.names() == ["ext"]


def test_disabled_external_handler_gets_no_poll_hooks(ctx: AioContext) -> None:
    r1, w1 = make_pipe()
    r2, w2 = make_pipe()
    try:
        rec = Recorder()
        state = {"hit": False}
        ext_polls: list[int] = []

        def ext_poll(_opaque: object) -> bool:
            ext_polls.append(1)
            return False

        ctx.set_fd_handler(r1, rec.cb("ext-read"), None, ext_poll, is_external=True)
        ctx.set_fd_poll(r1, rec.cb("ext-begin"), rec.cb("ext-end"))
        ctx.set_fd_handler(r2, rec.cb("int-read"), None, lambda _o: state["hit"])
        ctx.set_fd_poll(r2, rec.cb("int-begin"), rec.cb("int-end"))
        ctx.disable_external()
        ctx.set_poll_params(10**9, 0, 0)
        clock_enable(Clock.VIRTUAL, True)
        ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(
            clock_get_ns(Clock.VIRTUAL) + 50_000_000
        )
        ctx.poll(False)
        assert ctx.poll_ns > 0
        state["hit"] = True
        assert ctx.poll(True) is True
        ctx.poll(False)
        assert rec.names() == ["int-begin", "int-end"]
        assert ext_polls == []
        ctx.enable_external()
        ctx.poll(False)
        assert ext_polls == [1]
    finally:
        for fd in (r1, r2):
            ctx.set_fd_handler(fd, None)
        for fd in (r1, w1, r2, w2):
            os.close(fd)
