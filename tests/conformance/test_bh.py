"""SPEC section 7: bottom halves.

schedule/schedule_idle/cancel/delete/oneshot, delete from its own callback,
scheduling after delete, FIFO order (the deliberate deviation from QEMU's LIFO),
a pass runs only the BHs scheduled when it began, a self-rescheduling BH does
not starve fds and timers, the idle BH's 10 ms cap on a blocking wait, and BHs
running before fd dispatch (SPEC 2 step 8).  The nested-poll rule of SPEC 7 is
in ``test_nested.py``, the cross-thread rules in ``test_threads.py``.
"""

from __future__ import annotations

import pytest

from aiocore import BH, SCALE_MS, AioContext, Clock, clock_enable, virtual_clock_step

from ._support import ExcLog, Guard, Pair, Recorder, WaitSpy

IDLE_CAP_NS = 10 * SCALE_MS


def test_schedule_runs_callback_with_opaque_at_next_poll(ctx: AioContext) -> None:
    rec = Recorder()
    token = object()
    bh = ctx.bh_new(rec.cb("bh"), token)
    assert rec.calls == []
    bh.schedule()
    assert bh.scheduled
    assert ctx.poll(False) is True
    assert rec.calls == [("bh", token)]
    assert not bh.scheduled
    # It ran once: nothing left.
    assert ctx.poll(False) is False
    assert rec.calls == [("bh", token)]


def test_schedule_twice_before_it_runs_runs_once(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"))
    bh.schedule()
    bh.schedule()
    assert ctx.poll(False) is True
    assert ctx.poll(False) is False
    assert rec.count("bh") == 1


def test_bh_can_be_rescheduled_after_running(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"))
    for i in range(1, 4):
        bh.schedule()
        assert ctx.poll(False) is True
        assert rec.count("bh") == i


def test_cancel_unschedules(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"))
    bh.schedule()
    bh.cancel()
    assert not bh.scheduled
    assert ctx.poll(False) is False
    assert rec.calls == []
    # Cancel of an unscheduled BH is harmless; it can be scheduled again.
    bh.cancel()
    bh.schedule()
    assert ctx.poll(False) is True
    assert rec.count("bh") == 1


def test_cancel_does_not_notify(ctx: AioContext, monkeypatch: pytest.MonkeyPatch) -> None:
    bh = ctx.bh_new(lambda _o: None)
    bh.schedule()
    ctx.poll(False)
    bh.schedule()
    ctx.poll(False)
    notified: list[int] = []
    monkeypatch.setattr(ctx, "notify", lambda: notified.append(1))
    bh2 = ctx.bh_new(lambda _o: None)
    bh2.cancel()
    assert notified == []


def test_delete_unschedules_and_retires(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"))
    bh.schedule()
    bh.delete()
    assert ctx.poll(False) is False
    assert rec.calls == []
    with pytest.raises(RuntimeError):
        bh.schedule()
    with pytest.raises(RuntimeError):
        bh.schedule_idle()
    # delete and cancel stay harmless.
    bh.delete()
    bh.cancel()
    assert ctx.poll(False) is False
    assert rec.calls == []


def test_delete_from_its_own_callback(ctx: AioContext) -> None:
    exc = ExcLog()
    ctx.set_exception_handler(exc)
    holder: list[BH] = []
    runs: list[int] = []

    def cb(_opaque: object) -> None:
        runs.append(1)
        holder[0].delete()

    bh = ctx.bh_new(cb)
    holder.append(bh)
    bh.schedule()
    assert ctx.poll(False) is True
    assert runs == [1]
    assert exc.seen == []
    with pytest.raises(RuntimeError):
        bh.schedule()
    assert ctx.poll(False) is False
    assert runs == [1]


def test_reschedule_then_delete_in_own_callback_does_not_run_again(ctx: AioContext) -> None:
    holder: list[BH] = []
    runs: list[int] = []

    def cb(_opaque: object) -> None:
        runs.append(1)
        holder[0].schedule()
        holder[0].delete()

    bh = ctx.bh_new(cb)
    holder.append(bh)
    bh.schedule()
    ctx.poll(False)
    for _ in range(3):
        ctx.poll(False)
    assert runs == [1]


def test_schedule_from_own_callback_after_delete_raises(ctx: AioContext) -> None:
    holder: list[BH] = []
    errors: list[BaseException] = []

    def cb(_opaque: object) -> None:
        holder[0].delete()
        try:
            holder[0].schedule()
        except RuntimeError as exc:
            errors.append(exc)

    bh = ctx.bh_new(cb)
    holder.append(bh)
    bh.schedule()
    ctx.poll(False)
    assert len(errors) == 1
    assert ctx.poll(False) is False


def test_oneshot_runs_once_with_opaque(ctx: AioContext) -> None:
    rec = Recorder()
    token = object()
    ctx.bh_schedule_oneshot(rec.cb("one"), token)
    assert rec.calls == []
    assert ctx.poll(False) is True
    assert rec.calls == [("one", token)]
    for _ in range(3):
        assert ctx.poll(False) is False
    assert rec.calls == [("one", token)]


def test_oneshot_default_opaque_is_none(ctx: AioContext) -> None:
    rec = Recorder()
    ctx.bh_schedule_oneshot(rec.cb("one"))
    ctx.poll(False)
    assert rec.calls == [("one", None)]


def test_fifo_order(ctx: AioContext) -> None:
    rec = Recorder()
    bhs = {name: ctx.bh_new(rec.cb(name)) for name in "abcdef"}
    order = ["d", "a", "f", "b", "e", "c"]
    for name in order:
        bhs[name].schedule()
    assert ctx.poll(False) is True
    assert rec.names() == order


def test_fifo_order_mixes_oneshots_and_bhs(ctx: AioContext) -> None:
    rec = Recorder()
    a = ctx.bh_new(rec.cb("a"))
    b = ctx.bh_new(rec.cb("b"))
    b.schedule()
    ctx.bh_schedule_oneshot(rec.cb("one"))
    a.schedule()
    ctx.bh_schedule_oneshot(rec.cb("two"))
    ctx.poll(False)
    assert rec.names() == ["b", "one", "a", "two"]


def test_cancel_and_reschedule_takes_its_new_place(ctx: AioContext) -> None:
    rec = Recorder()
    a = ctx.bh_new(rec.cb("a"))
    b = ctx.bh_new(rec.cb("b"))
    a.schedule()
    b.schedule()
    a.cancel()
    a.schedule()
    ctx.poll(False)
    assert rec.names() == ["b", "a"]


def test_bh_cancelled_by_earlier_bh_in_same_pass_does_not_run(ctx: AioContext) -> None:
    rec = Recorder()
    later: list[BH] = []

    def first(_opaque: object) -> None:
        rec.calls.append(("first", None))
        later[0].cancel()
        later[1].delete()

    a = ctx.bh_new(first)
    b = ctx.bh_new(rec.cb("b"))
    c = ctx.bh_new(rec.cb("c"))
    later.extend([b, c])
    a.schedule()
    b.schedule()
    c.schedule()
    ctx.poll(False)
    assert rec.names() == ["first"]
    assert ctx.poll(False) is False
    assert rec.names() == ["first"]


def test_bh_scheduled_during_a_pass_runs_in_the_next_poll(ctx: AioContext) -> None:
    rec = Recorder()
    b = ctx.bh_new(rec.cb("b"))

    def first(_opaque: object) -> None:
        rec.calls.append(("a", None))
        b.schedule()

    a = ctx.bh_new(first)
    a.schedule()
    assert ctx.poll(False) is True
    assert rec.names() == ["a"]
    assert ctx.poll(False) is True
    assert rec.names() == ["a", "b"]


def test_self_rescheduling_bh_runs_once_per_poll(ctx: AioContext) -> None:
    runs: list[int] = []
    holder: list[BH] = []

    def cb(_opaque: object) -> None:
        runs.append(1)
        holder[0].schedule()

    bh = ctx.bh_new(cb)
    holder.append(bh)
    bh.schedule()
    for i in range(1, 6):
        assert ctx.poll(False) is True
        assert len(runs) == i
    bh.delete()
    assert ctx.poll(False) is False


def test_self_rescheduling_bh_does_not_starve_fds_and_timers(
    ctx: AioContext, pair: Pair
) -> None:
    clock_enable(Clock.VIRTUAL, True)
    rec = Recorder()
    holder: list[BH] = []

    def cb(_opaque: object) -> None:
        rec.calls.append(("bh", None))
        holder[0].schedule()

    def on_read(_opaque: object) -> None:
        rec.calls.append(("fd", None))
        pair.read_a()

    bh = ctx.bh_new(cb)
    holder.append(bh)
    ctx.set_fd_handler(pair.a, on_read)
    timer = ctx.timer_new_ns(Clock.VIRTUAL, rec.cb("timer"))
    timer.mod_ns(virtual_clock_step(0) + 10)
    virtual_clock_step(10)
    pair.send_to_a()
    bh.schedule()
    # Blocking too: the rescheduled BH must not keep the loop from the fd and
    # the timer (each poll runs the BH exactly once).
    assert ctx.poll(True) is True
    assert rec.names() == ["bh", "fd", "timer"]
    bh.delete()


def test_schedule_idle_runs_but_is_not_progress(ctx: AioContext) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("idle"))
    bh.schedule_idle()
    assert ctx.poll(False) is False
    assert rec.names() == ["idle"]
    assert ctx.poll(False) is False
    assert rec.names() == ["idle"]


@pytest.mark.parametrize("first", ["schedule", "schedule_idle"])
def test_scheduled_and_idle_scheduled_counts_as_non_idle(ctx: AioContext, first: str) -> None:
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("bh"))
    second = "schedule_idle" if first == "schedule" else "schedule"
    getattr(bh, first)()
    getattr(bh, second)()
    assert ctx.poll(False) is True
    assert rec.names() == ["bh"]


def test_blocking_poll_with_only_an_idle_bh_returns_and_runs_it(ctx: AioContext) -> None:
    guard = Guard(ctx, 3000)
    ctx.poll(False)
    rec = Recorder()
    bh = ctx.bh_new(rec.cb("idle"))
    bh.schedule_idle()
    assert ctx.poll(True) is False
    assert rec.names() == ["idle"]
    assert not guard.fired


def test_idle_bh_caps_a_blocking_wait_at_10ms(ctx: AioContext, spy: WaitSpy) -> None:
    # Leave an idle BH scheduled with the notification already accepted: a BH
    # pass interrupted by a re-raising exception handler keeps the rest of
    # its batch for the next poll (SPEC 12).  A far timer (the guard) is the
    # only other deadline, so without the cap the wait would be ~3 s.
    guard = Guard(ctx, 3000)
    ctx.set_exception_handler(ExcLog(reraise=True))
    rec = Recorder()

    def boom(_opaque: object) -> None:
        raise ValueError("boom")

    ctx.bh_new(boom).schedule()
    ctx.bh_new(rec.cb("idle")).schedule_idle()
    with pytest.raises(ValueError, match="boom"):
        ctx.poll(False)
    assert rec.calls == []
    spy.reset()
    assert ctx.poll(True) is False
    assert rec.names() == ["idle"]
    # A cap: the wait may be shorter (0 is allowed), never longer than 10 ms.
    assert all(t <= IDLE_CAP_NS and t >= 0 for t in spy.timeouts), spy.timeouts
    assert not guard.fired


def test_a_resumed_pass_runs_what_it_schedules_in_the_next_poll(ctx: AioContext) -> None:
    # A pass interrupted by a re-raising handler is finished by the next
    # poll(), which also runs its own pass: what was scheduled before that
    # poll began (D), in the order scheduled after the old batch.  A BH the
    # rest of the old batch schedules (R, by itself) waits for the poll after,
    # as in any pass (SPEC 7), or a self-rescheduling BH could run twice in
    # one poll().
    ctx.set_exception_handler(ExcLog(reraise=True))
    rec = Recorder()
    runs = {"R": 0}

    def boom(_opaque: object) -> None:
        rec.calls.append(("A", None))
        raise ValueError("boom")

    def again(_opaque: object) -> None:
        runs["R"] += 1
        rec.calls.append(("R", None))
        if runs["R"] < 5:
            r.schedule()

    ctx.bh_new(boom).schedule()
    r = ctx.bh_new(again)
    r.schedule()
    with pytest.raises(ValueError, match="boom"):
        ctx.poll(False)
    assert rec.names() == ["A"]
    ctx.bh_new(rec.cb("D")).schedule()
    assert ctx.poll(False) is True
    assert rec.names() == ["A", "R", "D"]
    assert ctx.poll(False) is True
    assert rec.names() == ["A", "R", "D", "R"]


def test_bhs_run_before_fd_dispatch(ctx: AioContext, pair: Pair) -> None:
    rec = Recorder()
    ctx.set_fd_handler(pair.a, rec.cb("fd"))
    ctx.poll(False)
    pair.send_to_a()
    ctx.bh_new(rec.cb("bh")).schedule()
    assert ctx.poll(False) is True
    assert rec.names() == ["bh", "fd"]
    ctx.set_fd_handler(pair.a, None)


def test_bh_new_rejects_non_callable(ctx: AioContext) -> None:
    with pytest.raises(TypeError, match="cb"):
        ctx.bh_new("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cb"):
        ctx.bh_schedule_oneshot(None)  # type: ignore[arg-type]
    assert ctx.poll(False) is False

