"""SPEC section 5 (poll mode, adaptive busy polling) and SPEC 2 steps 4, 5 and 7.

The ``PollMode.adjust`` rule unit-tested directly (keep / shrink / grow from
4000 ns, grow 0 meaning 2, shrink 0 meaning 0, the clamp, the boundaries); the
same rule driven through a context with ``io_poll`` handlers whose running time
the test controls (an exact grow/shrink sequence of ``poll_ns``); the default
(polling off); ``set_poll_params`` (reset, notify, bad values change nothing);
``io_poll_begin``/``io_poll_end`` on transitions only; a handler without
``io_poll`` disabling poll mode (external ones too, even while disabled); the
notifier's own hit ending the busy loop without progress; polling time
subtracted from the timeout; ``io_poll_ready``; the rule that a
non-blocking poll where every handler has ``io_poll`` makes no system call;
the lone handler's hit dispatched straight from the busy round (only when
nothing may come first, a notification made by the callback kept); and no
eventfd write for a notify() while the loop spins (the late announcement).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiocore import (
    SCALE_MS,
    AioContext,
    Clock,
    EventNotifier,
    PluginRegistry,
    clock_enable,
    clock_get_ns,
)
from aiocore._pollmode import PollMode

from ._support import ExcLog, Guard, Recorder, WaitSpy, make_pipe

INITIAL = 4000


# -- the rule, unit-tested ----------------------------------------------------------


def run_adjust(pm: PollMode, blocks: list[int]) -> list[int]:
    out = []
    for block in blocks:
        pm.adjust(block)
        out.append(pm.ns)
    return out


def test_adjust_grows_from_4000_by_2_and_clamps() -> None:
    pm = PollMode(32768, 0, 0)
    assert pm.ns == 0
    assert run_adjust(pm, [32767] * 6) == [4000, 8000, 16000, 32000, 32768, 32768]


def test_adjust_grows_by_the_given_factor() -> None:
    pm = PollMode(100_000, 3, 0)
    assert run_adjust(pm, [99_999] * 5) == [4000, 12000, 36000, 100_000, 100_000]


def test_adjust_first_window_is_clamped_too() -> None:
    pm = PollMode(1000, 0, 0)
    assert run_adjust(pm, [999]) == [1000]


def test_adjust_keeps_when_block_fits_the_window() -> None:
    pm = PollMode(1_000_000, 0, 2)
    pm.adjust(10)
    assert pm.ns == INITIAL
    assert run_adjust(pm, [INITIAL, 1, 0, 3999]) == [INITIAL] * 4


def test_adjust_shrinks_when_block_exceeds_max() -> None:
    pm = PollMode(32768, 0, 2)
    run_adjust(pm, [32767] * 5)
    assert pm.ns == 32768
    assert run_adjust(pm, [32769] * 4) == [16384, 8192, 4096, 2048]


def test_adjust_shrink_zero_resets() -> None:
    pm = PollMode(32768, 0, 0)
    run_adjust(pm, [32767] * 3)
    assert pm.ns == 16000
    assert run_adjust(pm, [10**9]) == [0]


def test_adjust_block_equal_to_max_neither_grows_nor_shrinks() -> None:
    pm = PollMode(32768, 0, 2)
    pm.adjust(100)
    assert pm.ns == INITIAL
    assert run_adjust(pm, [32768]) == [INITIAL]


def test_adjust_shrink_from_zero_stays_zero() -> None:
    pm = PollMode(32768, 0, 4)
    assert run_adjust(pm, [10**9]) == [0]


def test_set_params_resets_the_window() -> None:
    pm = PollMode(32768, 0, 0)
    pm.adjust(100)
    assert pm.ns == INITIAL
    pm.set_params(65536, 4, 2)
    assert (pm.ns, pm.max_ns, pm.grow, pm.shrink) == (0, 65536, 4, 2)


# -- the context's parameters ---------------------------------------------------------


def test_polling_is_off_by_default(ctx: AioContext) -> None:
    assert ctx.poll_max_ns == 0
    assert ctx.poll_ns == 0


def test_constructor_sets_poll_params(backend: str, registry: PluginRegistry) -> None:
    with AioContext(
        backend=backend, registry=registry, poll_max_ns=5000, poll_grow=3, poll_shrink=4
    ) as ctx:
        assert (ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink, ctx.poll_ns) == (5000, 3, 4, 0)


def test_set_poll_params_sets_resets_and_notifies(
    ctx: AioContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.set_poll_params(10**9, 0, 0)
    ctx.poll(False)
    assert ctx.poll_ns == INITIAL
    calls: list[int] = []
    monkeypatch.setattr(ctx, "notify", lambda: calls.append(1))
    ctx.set_poll_params(50_000, 3, 2)
    assert (ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink, ctx.poll_ns) == (50_000, 3, 2, 0)
    assert calls == [1]


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        ((-1, 0, 0), ValueError, "max_ns"),
        ((0, -1, 0), ValueError, "grow"),
        ((0, 0, -1), ValueError, "shrink"),
        ((1.5, 0, 0), TypeError, "max_ns"),
        ((0, "2", 0), TypeError, "grow"),
        ((0, 0, None), TypeError, "shrink"),
    ],
)
def test_bad_poll_params_change_nothing(
    ctx: AioContext, args: tuple[object, object, object], exc: type[Exception], name: str
) -> None:
    ctx.set_poll_params(10**9, 3, 5)
    ctx.poll(False)
    before = (ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink, ctx.poll_ns)
    assert before == (10**9, 3, 5, INITIAL)
    with pytest.raises(exc, match=name):
        ctx.set_poll_params(*args)  # type: ignore[arg-type]
    assert (ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink, ctx.poll_ns) == before


def test_bad_constructor_poll_params(backend: str, registry: PluginRegistry) -> None:
    with pytest.raises(ValueError, match="poll_max_ns"):
        AioContext(backend=backend, registry=registry, poll_max_ns=-1)
    with pytest.raises(TypeError, match="poll_grow"):
        AioContext(backend=backend, registry=registry, poll_grow=2.0)  # type: ignore[arg-type]


# -- fixtures for the context tests ------------------------------------------------------


class PollHandler:
    """A handler on an empty pipe's read end (never fd-ready) with ``io_poll``.

    ``result`` decides what ``io_poll`` returns (a bool or a callable);
    ``delay_s`` makes each ``io_poll`` call take at least that long.
    """

    def __init__(self, ctx: AioContext, *, hooks: bool = True, external: bool = False) -> None:
        self.ctx = ctx
        self.r, self.w = make_pipe()
        self.rec = Recorder()
        self.polls = 0
        self.delay_s = 0.0
        self.result: bool | Callable[[], bool] = False
        ctx.set_fd_handler(
            self.r, self.rec.cb("read"), None, self.io_poll, "op", is_external=external
        )
        if hooks:
            ctx.set_fd_poll(self.r, self.rec.cb("begin"), self.rec.cb("end"))

    def io_poll(self, opaque: object) -> bool:
        assert opaque == "op"
        self.polls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        result = self.result
        return result() if callable(result) else result

    @property
    def hooks(self) -> list[str]:
        return [n for n in self.rec.names() if n in ("begin", "end")]

    def close(self) -> None:
        if not self.ctx.closed and self.r in self.ctx.handler_fds():
            self.ctx.set_fd_handler(self.r, None)
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def handlers(ctx: AioContext) -> Iterator[Callable[..., PollHandler]]:
    made: list[PollHandler] = []

    def make(**kwargs: bool) -> PollHandler:
        h = PollHandler(ctx, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def arm_virtual(ctx: AioContext, ns: int) -> None:
    """A VIRTUAL timer *ns* ahead: a finite, exact timeout for blocking polls."""
    clock_enable(Clock.VIRTUAL, True)
    ctx.timer_new_ns(Clock.VIRTUAL, lambda _o: None).mod_ns(clock_get_ns(Clock.VIRTUAL) + ns)


# -- the grow/shrink sequence through a context ----------------------------------------


def test_poll_ns_follows_the_grow_and_shrink_sequence(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    # Non-blocking polls never busy-poll (the window is 0) but call io_poll
    # once each; its delay sets block_ns.  The levels are a factor 10 apart,
    # so scheduling noise far below them cannot change a step.
    h = handlers(hooks=False)
    ctx.set_poll_params(10 * SCALE_MS, 10, 4)
    assert ctx.poll_ns == 0
    h.delay_s = 0.0005
    seen = []
    for _ in range(5):
        ctx.poll(False)
        seen.append(ctx.poll_ns)
    # 0 -> 4000 (first window) -> x10 while 0.5 ms exceeds the window -> keep.
    assert seen == [4000, 40_000, 400_000, 4_000_000, 4_000_000]
    h.delay_s = 0.006  # above the window, below max: grow, clamped at max
    ctx.poll(False)
    assert ctx.poll_ns == 10 * SCALE_MS
    ctx.poll(False)
    assert ctx.poll_ns == 10 * SCALE_MS
    h.delay_s = 0.012  # above max: shrink by 4
    ctx.poll(False)
    assert ctx.poll_ns == 2_500_000
    ctx.poll(False)
    assert ctx.poll_ns == 625_000
    assert h.hooks == []
    # shrink 0: back to 0 at once.
    ctx.set_poll_params(10 * SCALE_MS, 10, 0)
    h.delay_s = 0.0005
    ctx.poll(False)
    ctx.poll(False)
    assert ctx.poll_ns == 40_000
    h.delay_s = 0.012
    ctx.poll(False)
    assert ctx.poll_ns == 0


def test_poll_ns_stays_zero_with_polling_off(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    h = handlers()
    h.delay_s = 0.0002
    arm_virtual(ctx, 1 * SCALE_MS)
    for blocking in (False, True, False, True):
        ctx.poll(blocking)
        assert ctx.poll_ns == 0
    assert h.hooks == []


# -- begin/end transitions ---------------------------------------------------------------


def test_begin_and_end_run_on_transitions_only(
    ctx: AioContext, handlers: Callable[..., PollHandler], spy: WaitSpy
) -> None:
    h = handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    assert ctx.poll(False) is False
    assert ctx.poll_ns == INITIAL
    assert h.hooks == []
    # A hit: poll mode started, io_poll's true is progress, no wait.
    h.result = True
    assert ctx.poll(True) is True
    assert h.hooks == ["begin"]
    assert h.rec.calls[0] == ("begin", "op")
    assert ctx.poll(True) is True
    assert h.hooks == ["begin"]
    # A window with no hit ends poll mode; the try after the end hits.
    h.result = lambda: h.hooks[-1:] == ["end"]
    assert ctx.poll(True) is True
    assert h.hooks == ["begin", "end"]
    # Started again on the next window.
    h.result = True
    assert ctx.poll(True) is True
    assert h.hooks == ["begin", "end", "begin"]
    assert h.rec.count("read") == 0
    # Every poll found work by polling: a hit sets the timeout to 0, so no
    # blocking wait happened (the virtual timer is 50 ms away).
    assert all(t == 0 for t in spy.timeouts), spy.timeouts


@pytest.mark.parametrize("hook", ["begin", "end"])
def test_a_reraised_hook_error_still_gives_every_handler_its_hook(
    ctx: AioContext, handlers: Callable[..., PollHandler], hook: str
) -> None:
    # A re-raising exception handler makes poll() raise, but the transition
    # is recorded as made: the other handlers must get their io_poll_begin
    # (or io_poll_end) too, or one would later see an end without a begin.
    first, second = handlers(), handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)

    def boom(_opaque: object) -> None:
        raise ValueError(hook)

    if hook == "begin":
        ctx.set_fd_poll(first.r, boom, first.rec.cb("end"))
    ctx.set_exception_handler(ExcLog(reraise=True))
    first.result = second.result = True
    if hook == "begin":
        with pytest.raises(ValueError, match="begin"):
            ctx.poll(True)
    else:
        ctx.poll(True)
        ctx.set_fd_poll(first.r, first.rec.cb("begin"), boom)
        with pytest.raises(ValueError, match="end"):
            ctx.poll(False)  # a zero window ends poll mode
    assert second.hooks == (["begin"] if hook == "begin" else ["begin", "end"])
    ctx.set_exception_handler(None)


def test_an_external_handler_disabled_while_started_still_gets_its_end(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """The end went to the handlers not disabled *now*; the begin had gone to
    those not disabled *then*.  Disabled in between: no end, then a second
    begin (a ring would stay "polling" and its producer stop kicking)."""
    h = handlers(external=True)
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)
    h.result = True
    ctx.poll(True)
    assert h.hooks == ["begin"]
    ctx.disable_external()
    ctx.poll(False)  # a zero window ends poll mode
    assert h.hooks == ["begin", "end"]
    ctx.poll(True)  # started again: the disabled handler is left out ...
    ctx.enable_external()
    ctx.poll(False)  # ... so it gets no end either
    assert h.hooks == ["begin", "end"]
    ctx.poll(True)
    ctx.poll(False)
    assert h.hooks == ["begin", "end", "begin", "end"]


@pytest.mark.parametrize("hook", ["begin", "end"])
def test_a_base_exception_from_a_hook_still_gives_every_handler_its_hook(
    ctx: AioContext, handlers: Callable[..., PollHandler], hook: str
) -> None:
    """SPEC 12: a BaseException propagates with invariants restored.  One
    from the first handler's hook left the others without theirs, though
    the transition was recorded (a later end came without a begin)."""
    first, second = handlers(), handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)

    def interrupt(_opaque: object) -> None:
        raise KeyboardInterrupt

    first.result = second.result = True
    if hook == "begin":
        ctx.set_fd_poll(first.r, interrupt, first.rec.cb("end"))
        with pytest.raises(KeyboardInterrupt):
            ctx.poll(True)
        assert second.hooks == ["begin"]
        ctx.poll(False)
        assert second.hooks == ["begin", "end"]
        assert first.hooks == ["end"]  # its begin was the one that raised
    else:
        ctx.poll(True)
        ctx.set_fd_poll(first.r, first.rec.cb("begin"), interrupt)
        with pytest.raises(KeyboardInterrupt):
            ctx.poll(False)
        assert second.hooks == ["begin", "end"]
        ctx.poll(True)
        assert second.hooks == ["begin", "end", "begin"]


def test_two_reraised_hook_errors_in_a_nested_poll_are_each_handled_once(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """The second hook's error replaced the first as the one passing
    through, so the outer timer's pass handed the first one to the handler
    again."""
    first, second = handlers(), handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)
    seen: list[BaseException] = []

    def handler(c: AioContext, exc: BaseException) -> None:
        seen.append(exc)
        raise exc

    def boom(opaque: object) -> None:
        raise ValueError(f"begin {opaque}")

    for h in (first, second):
        ctx.set_fd_poll(h.r, boom, None)
    first.result = second.result = True
    ctx.set_exception_handler(handler)
    outer = ctx.timer_new_ns(Clock.REALTIME, lambda _o: ctx.poll(True))
    try:
        outer.mod_ns(0)
        with pytest.raises(ValueError, match="begin op"):
            ctx.poll(False)
        assert len(seen) == 2 and seen[0] is not seen[1]
    finally:
        outer.delete()
        ctx.set_exception_handler(None)


def test_nonblocking_poll_ends_poll_mode(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    h = handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)
    h.result = True
    ctx.poll(True)
    assert h.hooks == ["begin"]
    # A non-blocking poll has a zero window: poll mode stops, io_poll is
    # still tried once.
    polls = h.polls
    assert ctx.poll(False) is True
    assert h.hooks == ["begin", "end"]
    assert h.polls == polls + 1
    ctx.poll(False)
    assert h.hooks == ["begin", "end"]


def test_handler_without_io_poll_disables_poll_mode(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    h = handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)
    h.result = True
    ctx.poll(True)
    assert h.hooks == ["begin"]
    r, w = make_pipe()
    try:
        ctx.set_fd_handler(r, lambda _o: None)
        polls = h.polls
        # Polling is now disallowed: poll mode ends, io_poll is tried once
        # (its hit still makes the poll return at once).
        assert ctx.poll(True) is True
        assert h.hooks == ["begin", "end"]
        assert h.polls == polls + 1
        assert ctx.poll(True) is True
        assert h.hooks == ["begin", "end"]
        assert h.polls == polls + 2
        # Removing it allows polling again.
        ctx.set_fd_handler(r, None)
        ctx.poll(True)
        assert h.hooks == ["begin", "end", "begin"]
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)


def test_disabled_external_handler_without_io_poll_still_disables_poll_mode(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    h = handlers()
    r, w = make_pipe()
    try:
        ctx.set_fd_handler(r, lambda _o: None, is_external=True)
        ctx.disable_external()
        ctx.set_poll_params(10**9, 0, 0)
        arm_virtual(ctx, 50 * SCALE_MS)
        ctx.poll(False)
        assert ctx.poll_ns > 0
        h.result = True
        assert ctx.poll(True) is True
        assert h.hooks == []
        ctx.enable_external()
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)


def test_hooks_are_not_carried_over_to_a_new_handler(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    h = handlers()
    ctx.set_poll_params(10**9, 0, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    ctx.poll(False)
    # Replace the handler (same fd, same io_poll): the hooks are gone.
    ctx.set_fd_handler(h.r, h.rec.cb("read"), None, h.io_poll, "op")
    ctx.poll(False)
    h.result = True
    assert ctx.poll(True) is True
    assert h.hooks == []


def test_event_notifier_poll_hooks_get_the_notifier(
    ctx: AioContext, registry: PluginRegistry
) -> None:
    e = EventNotifier(registry=registry)
    try:
        rec = Recorder()
        ctx.set_event_notifier(e, lambda n: n.test_and_clear(), lambda _n: True)
        ctx.set_event_notifier_poll(e, rec.cb("begin"), rec.cb("end"))
        ctx.set_poll_params(10**9, 0, 0)
        arm_virtual(ctx, 50 * SCALE_MS)
        ctx.poll(False)
        assert ctx.poll(True) is True
        assert rec.calls == [("begin", e)]
        ctx.poll(False)
        assert rec.calls == [("begin", e), ("end", e)]
        ctx.set_event_notifier(e, None)
    finally:
        e.close()


def test_notifier_hit_ends_the_busy_loop_without_progress(
    ctx: AioContext, handlers: Callable[..., PollHandler], spy: WaitSpy
) -> None:
    h = handlers()
    # A 1 ms window (0 -> 4000 -> 1 ms), so the loop surely goes round again
    # after the io_poll call that notifies.
    ctx.set_poll_params(10**9, 250, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    h.delay_s = 0.0002
    ctx.poll(False)
    ctx.poll(False)
    assert ctx.poll_ns == 1 * SCALE_MS
    h.delay_s = 0.0
    h.result = True
    ctx.poll(True)
    assert h.hooks == ["begin"]

    def notify_once() -> bool:
        if h.polls == first_call:
            ctx.notify()
        return False

    first_call = h.polls + 1
    h.result = notify_once
    spy.reset()
    # The notifier's io_poll hits: the busy loop ends (a hit, so poll mode
    # stays started: no end hook), the timeout is zero, nothing progressed.
    assert ctx.poll(True) is False
    assert h.hooks == ["begin"]
    assert all(t == 0 for t in spy.timeouts), spy.timeouts


def test_polling_time_is_subtracted_from_the_timeout(
    ctx: AioContext, handlers: Callable[..., PollHandler], spy: WaitSpy
) -> None:
    h = handlers()
    # Two non-blocking polls of >0.1 ms grow the window 0 -> 4000 -> 1 ms.
    ctx.set_poll_params(10**9, 250, 0)
    h.delay_s = 0.0002
    ctx.poll(False)
    ctx.poll(False)
    h.delay_s = 0.0
    # Armed now, so a loaded machine's oversleeping above cannot eat the
    # timeout; 30 ms, so being preempted during the window cannot either.
    # Arming notifies: a non-blocking poll takes that notification.
    arm_virtual(ctx, 30 * SCALE_MS)
    ctx.poll(False)
    assert ctx.poll_ns == 1 * SCALE_MS
    spy.reset()
    # Busy-poll for the 1 ms window, no hit, then wait what is left of 30 ms.
    assert ctx.poll(True) is False
    assert h.hooks == ["begin", "end"]
    assert len(spy.timeouts) == 1
    assert 0 <= spy.timeouts[0] <= 29 * SCALE_MS


def test_io_poll_ready_runs_instead_of_io_read(ctx: AioContext) -> None:
    r, w = make_pipe()
    try:
        rec = Recorder()
        state = {"hits": 1}

        def io_poll(_opaque: object) -> bool:
            if state["hits"]:
                state["hits"] -= 1
                return True
            return False

        ctx.set_fd_handler(r, rec.cb("read"), None, io_poll, "op", io_poll_ready=rec.cb("ready"))
        assert ctx.poll(False) is True
        assert rec.calls == [("ready", "op")]
        assert ctx.poll(False) is False
        assert rec.calls == [("ready", "op")]
        # Real fd readiness (seen by a blocking poll's wait) goes to io_read.
        guard = Guard(ctx)
        ctx.poll(False)
        os.write(w, b"x")
        assert ctx.poll(True) is True
        assert rec.names() == ["ready", "read"]
        assert not guard.fired
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)


def test_a_hit_on_a_handler_the_wait_found_ready_runs_io_read_alone(ctx: AioContext) -> None:
    # SPEC 5: io_poll_ready is for a hit with *no* fd readiness (QEMU:
    # poll_ready && revents == 0).  When the wait also reports the fd (here a
    # handler without io_poll makes the backend wait), the one piece of work
    # is dispatched once, to io_read, not to both callbacks.
    r, w = make_pipe()
    other_r, other_w = make_pipe()
    try:
        rec = Recorder()
        ctx.set_fd_handler(
            r, rec.cb("read"), None, lambda _o: True, "op", io_poll_ready=rec.cb("ready")
        )
        ctx.set_fd_handler(other_r, lambda _o: None)  # no io_poll: the backend waits
        ctx.poll(False)
        rec.calls.clear()
        os.write(w, b"x")
        assert ctx.poll(False) is True
        assert rec.names() == ["read"]
        os.read(r, 1)
        # With nothing to read, the hit alone goes to io_poll_ready.
        assert ctx.poll(False) is True
        assert rec.names() == ["read", "ready"]
    finally:
        ctx.set_fd_handler(r, None)
        ctx.set_fd_handler(other_r, None)
        for fd in (r, w, other_r, other_w):
            os.close(fd)


# -- SPEC 2 step 5: no system call --------------------------------------------------------


def test_nonblocking_poll_with_io_poll_everywhere_makes_no_system_call(
    ctx: AioContext, handlers: Callable[..., PollHandler], spy: WaitSpy
) -> None:
    hs = [handlers(hooks=False) for _ in range(3)]
    for _ in range(10):
        ctx.poll(False)
        if not spy.backend_needs_wait():
            break
    spy.reset()
    quiet = 0
    for _ in range(10):
        if not spy.backend_needs_wait():
            quiet += 1
            calls = spy.calls
            assert ctx.poll(False) is False
            assert spy.calls == calls, "wait() called although every handler has io_poll"
        else:
            ctx.poll(False)
    assert quiet > 0, f"{ctx.backend_name}.need_wait() never settled to False"
    # A hit does not need the system call either.
    hs[1].result = True
    if not spy.backend_needs_wait():
        calls = spy.calls
        assert ctx.poll(False) is True
        assert spy.calls == calls


def test_nonblocking_poll_with_a_handler_without_io_poll_waits(
    ctx: AioContext, handlers: Callable[..., PollHandler], spy: WaitSpy
) -> None:
    handlers(hooks=False)
    r, w = make_pipe()
    try:
        ctx.set_fd_handler(r, lambda _o: None)
        ctx.poll(False)
        spy.reset()
        ctx.poll(False)
        assert spy.timeouts == [0]
    finally:
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)


def test_handler_removed_during_busy_polling_is_not_polled_again(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    a, b = handlers(hooks=False), handlers(hooks=False)
    ctx.set_poll_params(10**9, 250, 0)
    arm_virtual(ctx, 50 * SCALE_MS)
    a.delay_s = 0.0002
    ctx.poll(False)
    ctx.poll(False)
    a.delay_s = 0.0
    assert ctx.poll_ns == 1 * SCALE_MS
    removed_at: list[int] = []

    def a_result() -> bool:
        # The first call (in the busy loop) removes b, which comes after a in
        # the same round: b must not be polled any more, not even in it.
        if not removed_at:
            ctx.set_fd_handler(b.r, None)
            removed_at.append(b.polls)
        return False

    a.result = a_result
    b.result = True
    # The removal notifies, which ends the busy loop without progress.
    assert ctx.poll(True) is False
    assert removed_at
    assert b.polls == removed_at[0]
    assert b.rec.calls == []


def test_nothing_due_polls_for_the_whole_window(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    # No timer: the timeout is infinite and the window is poll_ns.  The hit
    # comes on a later call of the busy loop (never on the first try).
    h = handlers()
    ctx.set_poll_params(10**9, 250, 0)
    h.delay_s = 0.0002
    ctx.poll(False)
    ctx.poll(False)
    h.delay_s = 0.0
    assert ctx.poll_ns == 1 * SCALE_MS
    start = h.polls
    h.result = lambda: h.polls >= start + 5
    assert ctx.poll(True) is True
    assert h.hooks == ["begin"]
    assert h.polls == start + 5


def _grow_window_to(ctx: AioContext, h: PollHandler, max_ns: int) -> None:
    """Grow poll_ns to *max_ns* (grow factor 2500: 0 -> 4000 ns -> 10 ms -> capped)."""
    ctx.set_poll_params(max_ns, 2500, 0)
    for delay in (0.0002, 0.0002, 0.02):  # each block longer than the window: grows
        h.delay_s = delay
        ctx.poll(False)
    h.delay_s = 0.0
    assert ctx.poll_ns == max_ns


def test_io_poll_raising_in_the_busy_loop_is_reported_and_polling_goes_on(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """One pollable handler gets the busy loop's fast round; an exception from
    its io_poll goes to the exception handler and the window goes on."""
    h = handlers()
    _grow_window_to(ctx, h, 10**10)
    errors: list[BaseException] = []
    ctx.set_exception_handler(lambda _ctx, exc: errors.append(exc))
    start = h.polls

    def result() -> bool:
        if h.polls == start + 3:
            raise ValueError("io_poll boom")
        return h.polls >= start + 6

    h.result = result
    assert ctx.poll(True) is True
    assert [str(e) for e in errors] == ["io_poll boom"]
    assert h.polls == start + 6
    assert h.hooks == ["begin"]
    assert "read" not in h.rec.names()  # a hit without io_poll_ready runs no io_read


def test_handler_changes_from_another_thread_end_the_busy_loop(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """While the loop spins on one handler (a 10 s window), another thread
    holding ``acquire()`` adds a handler without io_poll: busy polling must
    stop (poll mode is no longer allowed) and the new fd's readiness be
    dispatched by a backend wait, long before the window would end."""
    h = handlers()
    _grow_window_to(ctx, h, 10**10)
    r, w = make_pipe()
    got: list[bytes] = []
    polls_at_change: list[int] = []

    def other_thread() -> None:
        time.sleep(0.05)
        ctx.acquire()
        try:
            ctx.set_fd_handler(r, lambda _o: got.append(os.read(r, 16)))
            polls_at_change.append(h.polls)
        finally:
            ctx.release()
        os.write(w, b"x")

    t = threading.Thread(target=other_thread)
    guard = Guard(ctx, 5000)  # bounds the test if busy polling never stopped
    ctx.poll(False)  # takes the guard's notify
    t.start()
    try:
        while not got and not guard.fired:
            ctx.poll(True)
    finally:
        t.join(5)
        guard.cancel()
        ctx.set_fd_handler(r, None)
        os.close(r)
        os.close(w)
    assert got == [b"x"]
    # Busy polling stopped within a round or two of the change (a loop that
    # missed it would call io_poll millions of times until the guard).
    assert polls_at_change and h.polls - polls_at_change[0] <= 10, h.polls
    ctx.poll(False)
    assert h.hooks == ["begin", "end"]  # poll mode ended: a handler without io_poll forbids it


# -- a busy-poll hit on its way to io_poll_ready ------------------------------------------
#
# poll() hands the fast round's hit straight to io_poll_ready unless something
# runs between the two that could poll nested (a BH) or raise (a BH, the wait);
# then the hit joins the context's poll-ready list.  These tests fail if it did
# not: the hit would be dispatched twice, or lost.


class ReadyState:
    """An ``io_poll`` result for a :class:`PollHandler`, with an ``io_poll_ready``.

    *level*: io_poll keeps reporting the work until io_poll_ready takes it (a
    ring index); else it reports it once (the hit consumes it).
    """

    def __init__(self, ctx: AioContext, h: PollHandler, *, level: bool) -> None:
        self.pending = False
        self.level = level
        self.ready_calls = 0
        ctx.set_fd_handler(h.r, h.rec.cb("read"), None, h.io_poll, "op", io_poll_ready=self.ready)
        h.result = self.found

    def found(self) -> bool:
        hit = self.pending
        if not self.level:
            self.pending = False
        return hit

    def ready(self, opaque: object) -> None:
        assert opaque == "op"
        self.ready_calls += 1
        self.pending = False


def test_a_hit_a_bh_polls_again_runs_io_poll_ready_once(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """The iteration's BHs run before the hit is dispatched; a BH that polls
    (nested) finds the same work and dispatches it, and the outer poll must
    not run it again (QEMU moves the node to the nested poll's ready list)."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    state = ReadyState(ctx, h, level=True)
    nested: list[bool] = []
    bh = ctx.bh_new(lambda _o: nested.append(ctx.poll(False)))
    bh.schedule_idle()  # an idle BH caps the timeout at 10 ms: the loop still busy-polls
    state.pending = True
    polls = h.polls
    assert ctx.poll(True) is True
    assert h.polls - polls == 2  # the outer busy round's hit, the nested poll's io_poll
    assert nested == [True]  # the nested poll dispatched it ...
    assert state.ready_calls == 1  # ... and nobody else
    bh.delete()


@pytest.mark.parametrize("where", ["bh", "wait"])
def test_a_hit_survives_an_exception_before_its_dispatch(
    ctx: AioContext, handlers: Callable[..., PollHandler], where: str
) -> None:
    """A BaseException escaping from a BH, or from the backend's wait, after
    a hit that io_poll reported once: the next poll() dispatches it, once."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    state = ReadyState(ctx, h, level=False)
    backend: Any = ctx._backend
    wait = backend.wait

    def interrupt(*_args: object) -> None:
        raise KeyboardInterrupt

    bh = ctx.bh_new(lambda _o: interrupt())
    if where == "bh":
        bh.schedule_idle()
    else:
        backend.wait = interrupt
        ctx._need_wait = lambda: True  # the backend asks for a wait even after a hit
    state.pending = True
    try:
        with pytest.raises(KeyboardInterrupt):
            ctx.poll(True)
    finally:
        backend.wait = wait
        ctx._backend_changed()
        bh.delete()
    assert state.ready_calls == 0 and not state.pending  # the hit took the work
    assert ctx.poll(False) is True
    assert state.ready_calls == 1
    assert ctx.poll(False) is False
    assert state.ready_calls == 1


# -- the lone handler's hit, dispatched straight from the busy round --------------------
#
# With one pollable handler and nothing else for SPEC 2 steps 5-8 to do before
# its io_poll_ready (no wait needed, no BH), poll() withdraws the announcement
# and calls io_poll_ready from the busy round.  It tests that condition once,
# before spinning, and relies on notify() for anything that changes it
# meanwhile.  These tests fail if the direct way ran when it must not, or
# dropped part of steps 6-8.


def _ready_handler(
    ctx: AioContext, h: PollHandler, io_poll_ready: Callable[[object], object]
) -> None:
    ctx.set_fd_handler(h.r, h.rec.cb("read"), None, h.io_poll, "op", io_poll_ready=io_poll_ready)
    ctx.poll(False)  # takes the change's notification


def test_a_notify_from_a_directly_dispatched_io_poll_ready_is_kept(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """A notify() made by io_poll_ready comes after step 6 (SPEC 6): the next
    poll(True) must find it and return at once, not spin and then sleep
    until the guard; the announcement must be withdrawn exactly once."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    state = ReadyState(ctx, h, level=False)

    def ready(opaque: object) -> None:
        state.ready(opaque)
        ctx.notify()

    guard = Guard(ctx, 5000)  # before the poll(False) that takes its notify
    _ready_handler(ctx, h, ready)
    try:
        state.pending = True
        assert ctx.poll(True) is True
        assert state.ready_calls == 1
        assert ctx._notify_me == 0
        assert ctx.poll(True) is False  # the kept notification: no progress, no sleep
        assert not guard.fired
        assert ctx._notify_me == 0
    finally:
        guard.cancel()


def test_a_bh_scheduled_by_io_poll_runs_before_the_hits_io_poll_ready(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """io_poll schedules a BH and reports work in the same call: SPEC 2 step 8
    runs BHs first, so the hit must not take the direct way (the BH's
    notify() tells it so)."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    order: list[str] = []
    bh = ctx.bh_new(lambda _o: order.append("bh"))
    _ready_handler(ctx, h, lambda _o: order.append("ready"))
    start = h.polls

    def result() -> bool:
        if h.polls == start + 3:
            bh.schedule()
            return True
        return False

    h.result = result
    try:
        assert ctx.poll(True) is True
        assert order == ["bh", "ready"]
    finally:
        bh.delete()


def test_a_handler_removed_by_its_own_io_poll_gets_no_io_poll_ready(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """io_poll removes its own handler and reports work: the removal's
    notify() keeps the hit off the direct way, whose io_poll_ready would
    run for a removed handler."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    ready: list[object] = []
    _ready_handler(ctx, h, ready.append)
    start = h.polls

    def result() -> bool:
        if h.polls == start + 3:
            ctx.set_fd_handler(h.r, None)
            return True
        return False

    h.result = result
    assert ctx.poll(True) is True  # io_poll returned true
    assert ready == []
    assert h.r not in ctx.handler_fds()


@pytest.mark.parametrize("reraise", [False, True])
def test_an_exception_from_a_directly_dispatched_io_poll_ready(
    ctx: AioContext, handlers: Callable[..., PollHandler], reraise: bool
) -> None:
    """It goes to the exception handler like any callback's; re-raised, it
    leaves poll() with the announcement withdrawn once, and the next hit is
    dispatched as before."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    state = ReadyState(ctx, h, level=False)
    log = ExcLog(reraise=reraise)
    ctx.set_exception_handler(log)

    def ready(opaque: object) -> None:
        state.ready(opaque)
        if state.ready_calls == 1:
            raise ValueError("ready boom")

    _ready_handler(ctx, h, ready)
    state.pending = True
    if reraise:
        with pytest.raises(ValueError, match="ready boom"):
            ctx.poll(True)
    else:
        assert ctx.poll(True) is True
    assert [str(e) for e in log.seen] == ["ready boom"]
    assert ctx._notify_me == 0
    state.pending = True
    assert ctx.poll(True) is True
    assert state.ready_calls == 2
    assert ctx._notify_me == 0


def test_a_notify_while_the_loop_busy_polls_writes_no_eventfd(
    ctx: AioContext, handlers: Callable[..., PollHandler]
) -> None:
    """The announcement comes only before a sleep (QEMU 5.1's order, SPEC 6):
    a notify() made while the loop spins sets ``notified``, which ends the
    busy loop, and kicks nothing; one made while it sleeps kicks (the
    protocol tests in tests/threads show that no wake-up is lost)."""
    h = handlers(hooks=False)
    _grow_window_to(ctx, h, 10**10)
    guard = Guard(ctx, 5000)
    ctx.poll(False)  # takes the guard's notification
    kicked: list[bool] = []
    start = h.polls

    def result() -> bool:
        if h.polls == start + 3:
            ctx.notify()
            kicked.append(ctx._kicked)
        return False

    h.result = result
    try:
        assert ctx.poll(True) is False  # ended by the notification, no progress
        assert kicked == [False]
        assert not guard.fired
        assert h.polls == start + 3  # the round that notified was the last
    finally:
        guard.cancel()
