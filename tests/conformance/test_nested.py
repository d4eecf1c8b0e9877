"""Nested ``poll()`` from callbacks: SPEC 2 (steps 1, 3, 9), 3 and 7.

A nested poll from an fd callback dispatches what became ready in the nested
wait; a node is never dispatched twice for one readiness report; a handler
removed before (or during) a nested poll is not called by either level; a
nested poll inside a BH first finishes the parent's pass, and its
``compute_timeout()`` counts the parent's unfinished BHs, so a nested blocking
poll does not block; nested polls from timer callbacks run each timer once.
"""

from __future__ import annotations

from collections.abc import Callable

from aiocore import BH, AioContext, Clock, clock_enable, clock_get_ns, virtual_clock_step

from ._support import Guard, Pair, Recorder, WaitSpy


def test_nested_poll_dispatches_what_became_ready(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    p1, p2 = pairs(), pairs()
    events: list[str] = []
    nested_result: list[bool] = []

    def outer(_opaque: object) -> None:
        events.append("outer-start")
        p1.read_a()
        p2.send_to_a()  # p2 was not ready in the parent's report
        nested_result.append(ctx.poll(False))
        events.append("outer-end")

    def inner(_opaque: object) -> None:
        events.append("inner")
        p2.read_a()

    ctx.set_fd_handler(p1.a, outer)
    ctx.set_fd_handler(p2.a, inner)
    ctx.poll(False)
    p1.send_to_a()
    assert ctx.poll(False) is True
    assert events == ["outer-start", "inner", "outer-end"]
    assert nested_result == [True]


def test_nested_blocking_poll_waits_for_readiness(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    guard = Guard(ctx)
    p1, p2 = pairs(), pairs()
    events: list[str] = []

    def outer(_opaque: object) -> None:
        p1.read_a()
        p2.send_to_a()
        for _ in range(5):
            ctx.poll(True)
            if "inner" in events:
                break

    ctx.set_fd_handler(p1.a, outer)
    def inner(_opaque: object) -> None:
        events.append("inner")
        p2.read_a()

    ctx.set_fd_handler(p2.a, inner)
    ctx.poll(False)
    p1.send_to_a()
    ctx.poll(False)
    assert events == ["inner"]
    assert not guard.fired


def test_node_is_never_dispatched_twice_for_one_report(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    # Both fds are ready in the parent's report.  Whichever runs first drains
    # itself and polls nested: the other is dispatched there (its readiness
    # is still there), and the parent must not dispatch it again.
    p1, p2 = pairs(), pairs()
    calls = {p1.a: 0, p2.a: 0}
    nested = [0]

    def make(p: Pair) -> Callable[[object], None]:
        def cb(_opaque: object) -> None:
            calls[p.a] += 1
            p.read_a()
            if nested[0] < 3:
                nested[0] += 1
                ctx.poll(False)

        return cb

    ctx.set_fd_handler(p1.a, make(p1))
    ctx.set_fd_handler(p2.a, make(p2))
    ctx.poll(False)
    p1.send_to_a()
    p2.send_to_a()
    assert ctx.poll(False) is True
    assert calls == {p1.a: 1, p2.a: 1}
    assert ctx.poll(False) is False
    assert calls == {p1.a: 1, p2.a: 1}


def test_node_not_drained_is_dispatched_at_most_once_per_level(
    ctx: AioContext, pair: Pair
) -> None:
    # A handler that does not drain and polls nested: the nested wait reports
    # it again (a new report), so it may run once per level, never more.
    depth = [0]
    calls: list[int] = []

    def cb(_opaque: object) -> None:
        calls.append(depth[0])
        if depth[0] < 2:
            depth[0] += 1
            ctx.poll(False)
            depth[0] -= 1

    ctx.set_fd_handler(pair.a, cb)
    ctx.poll(False)
    pair.send_to_a()
    ctx.poll(False)
    assert calls in ([0], [0, 1], [0, 1, 2])
    ctx.set_fd_handler(pair.a, None)


def test_handler_removed_before_a_nested_poll_is_not_called_at_any_level(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    p1, p2 = pairs(), pairs()
    calls: list[int] = []

    def make(me: Pair, other: Pair) -> Callable[[object], None]:
        def cb(_opaque: object) -> None:
            calls.append(me.a)
            me.read_a()
            ctx.set_fd_handler(other.a, None)
            ctx.poll(False)

        return cb

    ctx.set_fd_handler(p1.a, make(p1, p2))
    ctx.set_fd_handler(p2.a, make(p2, p1))
    ctx.poll(False)
    p1.send_to_a()
    p2.send_to_a()
    ctx.poll(False)
    assert len(calls) == 1


def test_handler_removed_in_a_nested_poll_is_not_called_by_the_parent(
    ctx: AioContext, pairs: Callable[[], Pair]
) -> None:
    # Three ready fds; the first dispatched polls nested; the one dispatched
    # there removes the third, which the parent's pass must then skip.
    ps = [pairs(), pairs(), pairs()]
    calls: list[int] = []
    state = {"nested": False}

    def make(idx: int) -> Callable[[object], None]:
        p = ps[idx]

        def cb(_opaque: object) -> None:
            calls.append(idx)
            p.read_a()
            if not state["nested"]:
                state["nested"] = True
                ctx.poll(False)
            else:
                for other in ps:
                    if other is not p and other.a in ctx.handler_fds() and not_called(other):
                        ctx.set_fd_handler(other.a, None)

        return cb

    def not_called(p: Pair) -> bool:
        return ps.index(p) not in calls

    for i in range(3):
        ctx.set_fd_handler(ps[i].a, make(i))
    ctx.poll(False)
    for p in ps:
        p.send_to_a()
    ctx.poll(False)
    # First (nested poller) and second (remover) ran; the removed one never.
    assert len(calls) == 2
    removed = [i for i in range(3) if ps[i].a not in ctx.handler_fds()]
    assert len(removed) == 1
    assert removed[0] not in calls


def test_nested_poll_in_a_bh_first_finishes_the_parent_pass(ctx: AioContext) -> None:
    events: list[str] = []

    def first(_opaque: object) -> None:
        events.append("a-start")
        assert ctx.poll(False) is True
        events.append("a-end")

    bhs = [ctx.bh_new(first), ctx.bh_new(lambda _o: events.append("b"))]
    bhs.append(ctx.bh_new(lambda _o: events.append("c")))
    for bh in bhs:
        bh.schedule()
    assert ctx.poll(False) is True
    assert events == ["a-start", "b", "c", "a-end"]
    assert ctx.poll(False) is False
    assert events == ["a-start", "b", "c", "a-end"]


def test_nested_blocking_poll_in_a_bh_does_not_block(ctx: AioContext, spy: WaitSpy) -> None:
    # compute_timeout() counts the parent's unfinished BHs: timeout 0.
    guard = Guard(ctx, 2000)
    events: list[str] = []

    def first(_opaque: object) -> None:
        events.append("a-start")
        spy.reset()
        ctx.poll(True)
        events.append("a-end")

    ctx.bh_new(first).schedule()
    ctx.bh_new(lambda _o: events.append("b")).schedule()
    ctx.poll(False)
    assert events == ["a-start", "b", "a-end"]
    assert all(t == 0 for t in spy.timeouts), spy.timeouts
    assert not guard.fired


def test_nested_blocking_poll_in_a_bh_with_fds_does_not_block(
    ctx: AioContext, pair: Pair, spy: WaitSpy
) -> None:
    # Same, with a handler without io_poll so that the wait really happens.
    guard = Guard(ctx, 2000)
    ctx.set_fd_handler(pair.a, lambda _o: None)
    events: list[str] = []

    def first(_opaque: object) -> None:
        spy.reset()
        ctx.poll(True)
        events.append("a-end")

    ctx.bh_new(first).schedule()
    ctx.bh_new(lambda _o: events.append("b")).schedule()
    ctx.poll(False)
    assert events == ["b", "a-end"]
    assert spy.timeouts == [0]
    assert not guard.fired


def test_bh_rescheduled_in_a_nested_pass_runs_once_per_pass(ctx: AioContext) -> None:
    runs: list[int] = []
    holder: list[BH] = []

    def again(_opaque: object) -> None:
        runs.append(1)
        if len(runs) < 3:
            holder[0].schedule()

    def outer(_opaque: object) -> None:
        ctx.poll(False)

    holder.append(ctx.bh_new(again))
    ctx.bh_new(outer).schedule()
    holder[0].schedule()
    ctx.poll(False)
    # "again" ran in the parent's pass (finished by the nested poll), and at
    # most once more in the nested poll's own pass.
    assert 1 <= len(runs) <= 2
    for _ in range(5):
        ctx.poll(False)
    assert len(runs) == 3


def test_nested_poll_in_a_timer_runs_each_timer_once(ctx: AioContext) -> None:
    clock_enable(Clock.VIRTUAL, True)
    rec = Recorder()

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        ctx.poll(False)

    now = clock_get_ns(Clock.VIRTUAL)
    ctx.timer_new_ns(Clock.VIRTUAL, first).mod_ns(now)
    for name in "bcd":
        ctx.timer_new_ns(Clock.VIRTUAL, rec.cb(name)).mod_ns(now)
    virtual_clock_step(1)
    ctx.poll(False)
    for _ in range(3):
        ctx.poll(False)
    assert sorted(rec.names()) == ["a", "b", "c", "d"]
    assert rec.names()[0] == "a"


def test_progress_of_nested_and_parent(ctx: AioContext, pair: Pair) -> None:
    nested: list[bool] = []

    def bh(_opaque: object) -> None:
        nested.append(ctx.poll(False))

    ctx.bh_new(bh).schedule()
    # The nested poll has nothing to do: no progress there; the parent ran a BH.
    assert ctx.poll(False) is True
    assert nested == [False]
