"""Differential, property-based tests: every backend against a model of SPEC.

Hypothesis drives random sequences of steps (handler add/change/remove, also
from inside callbacks and nested polls; slots made readable, drained, filled
and emptied; notifier sets; BH schedule/idle/cancel/delete and oneshots; timer
mod/anticipate/delete on the virtual clock, clock steps and enabling;
disable/enable external; notify; ``poll(False)`` and ``poll(True)``) through
:class:`DifferentialMachine`, once per available backend.  Each step runs on a
real context (:mod:`.harness`) and on the reference model (:mod:`.model`);
the callbacks, their order where SPEC defines one, every backend wait's
timeout and ``poll()``'s return value must match.  ``poll(True)`` is only
stepped when the model says something is ready or due, and is bounded by an
alarm anyway.

Profiles (``HYPOTHESIS_PROFILE``, default ``ci``):

* ``ci``: 80 examples of up to 40 steps per backend, derandomized (the same
  examples on every run), no example database;
* ``soak``: 3000 examples of up to 60 steps per backend, examples saved in
  ``.hypothesis/`` at the repository root, so a failure found while soaking
  is replayed first next time::

      HYPOTHESIS_PROFILE=soak python -m pytest tests/reliability -k differential

A failure found is kept in ``test_regressions.py`` as a plain
test that replays its steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiocore import Clock, PluginRegistry, clock_enable, clock_get_ns, virtual_clock_step

from .harness import Harness
from .model import Model
from .specs import (
    MAX_BHS,
    N_BHS,
    N_SLOTS,
    N_TIMERS,
    SELF,
    Action,
    CallbackSpec,
    HandlerSpec,
)

_ROOT = Path(__file__).resolve().parents[2]

settings.register_profile(
    "ci",
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    database=None,
    # The same examples on every run: CI results do not flicker; the soak
    # profile explores.
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "soak",
    max_examples=3000,
    stateful_step_count=60,
    deadline=None,
    database=DirectoryBasedExampleDatabase(str(_ROOT / ".hypothesis" / "differential")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "soak"):
    PROFILE = "ci"

# -- strategies ------------------------------------------------------------------

slots = st.integers(0, N_SLOTS - 1)
bh_indices = st.integers(0, MAX_BHS - 1)
timer_indices = st.integers(0, N_TIMERS - 1)
#: Action targets: often the callback's own slot, BH or timer.
_SELF_OR = st.just(SELF)
slot_targets = _SELF_OR | slots
bh_targets = _SELF_OR | st.integers(0, N_BHS - 1)
timer_targets = _SELF_OR | timer_indices
#: Expiries relative to virtual "now": in the past, now, soon, later.
deltas = st.sampled_from([-1_000_000, 0, 0, 1_000, 1_000_000, 3_000_000])

# Hypothesis leans towards the first branch of a one_of (the "simplest"), so
# the first branches below are the interactions that matter most: handler
# changes from callbacks, changes that meet pending readiness, self-re-arming.
_LEAF = st.one_of(
    st.builds(
        Action,
        kind=st.sampled_from(["bh_schedule", "bh_schedule_idle", "bh_cancel", "bh_delete"]),
        target=bh_targets,
    ),
    st.builds(Action, kind=st.just("oneshot")),
    st.builds(Action, kind=st.just("timer_mod"), target=timer_targets, arg=deltas),
    st.builds(Action, kind=st.just("timer_del"), target=timer_targets),
    st.builds(
        Action,
        kind=st.sampled_from(["make_readable", "drain", "fill", "unfill"]),
        target=slot_targets,
    ),
    st.builds(Action, kind=st.just("nested_poll")),
    st.builds(Action, kind=st.just("none")),
)


def callback_specs(action: st.SearchStrategy[Action]) -> st.SearchStrategy[CallbackSpec]:
    return st.builds(CallbackSpec, consume=st.booleans(), action=action)


def handler_specs(action: st.SearchStrategy[Action]) -> st.SearchStrategy[HandlerSpec]:
    # The simplest (first) choice is a callback, so that simple examples
    # still have handlers: hypothesis leans towards simple examples.
    cb = callback_specs(action) | st.none()
    return st.builds(
        HandlerSpec,
        io_read=cb,
        io_write=cb,
        io_poll=st.booleans(),
        io_poll_ready=cb,
        is_external=st.booleans(),
    )


#: Handlers set from inside a callback have callbacks with leaf actions only.
_INNER_HANDLERS = handler_specs(_LEAF) | st.none()
_SET_HANDLER = st.builds(
    Action, kind=st.just("set_handler"), target=slot_targets, handler=_INNER_HANDLERS
)
ACTIONS = st.one_of(_SET_HANDLER, _LEAF, _SET_HANDLER)
CALLBACKS = callback_specs(ACTIONS)
_NESTED = st.builds(Action, kind=st.just("nested_poll"))
#: BHs often reschedule themselves, change a handler (whose readiness of this
#: poll is already recorded) or nest a poll (finishing their parent's pass).
BH_CALLBACKS = callback_specs(
    st.one_of(
        st.builds(Action, kind=st.just("set_handler"), target=slots, handler=_INNER_HANDLERS),
        st.builds(
            Action,
            kind=st.sampled_from(["bh_schedule", "bh_delete", "bh_schedule_idle"]),
            target=st.just(SELF),
        ),
        _NESTED,
        ACTIONS,
    )
)
#: Timers often re-arm themselves, due at once or later, or nest a poll.
TIMER_CALLBACKS = callback_specs(
    st.one_of(
        st.builds(Action, kind=st.just("timer_mod"), target=st.just(SELF), arg=deltas),
        _NESTED,
        st.builds(Action, kind=st.just("timer_mod"), target=timer_indices, arg=deltas),
        ACTIONS,
    )
)
_FULL_HANDLERS = handler_specs(ACTIONS)
#: Mostly adds and changes; a removal in one step of four.
HANDLERS = st.one_of(_FULL_HANDLERS, _FULL_HANDLERS, _FULL_HANDLERS, st.none())


# -- the machine -------------------------------------------------------------------


class DifferentialMachine(RuleBasedStateMachine):
    """One real context on ``backend`` and the model, stepped together."""

    backend: ClassVar[str] = "poll"
    registry: ClassVar[PluginRegistry]

    def __init__(self) -> None:
        super().__init__()
        self.real: Harness | None = None
        self.model: Model | None = None

    def _step(self) -> tuple[Harness, Model]:
        assert self.real is not None and self.model is not None
        self.real.trace.clear()
        self.model.begin(self.real.trace)
        return self.real, self.model

    @initialize(
        bh_specs=st.lists(BH_CALLBACKS, min_size=N_BHS, max_size=N_BHS),
        timer_specs=st.lists(TIMER_CALLBACKS, min_size=N_TIMERS, max_size=N_TIMERS),
        handlers=st.lists(HANDLERS, min_size=N_SLOTS, max_size=N_SLOTS),
        readable=st.lists(st.sampled_from([True, False]), min_size=N_SLOTS, max_size=N_SLOTS),
    )
    def setup(
        self,
        bh_specs: list[CallbackSpec],
        timer_specs: list[CallbackSpec],
        handlers: list[HandlerSpec | None],
        readable: list[bool],
    ) -> None:
        """A context with a handler on most slots and some slots readable."""
        clock_enable(Clock.VIRTUAL, True)
        self.real = Harness(self.backend, self.registry, bh_specs, timer_specs)
        self.model = Model(bh_specs, timer_specs, clock_get_ns(Clock.VIRTUAL), True)
        for slot, (spec, ready) in enumerate(zip(handlers, readable, strict=True)):
            self._set_handler(slot, spec)
            if ready:
                self._kernel(slot, "make_readable")

    def teardown(self) -> None:
        if self.real is not None:
            self.real.close()
        clock_enable(Clock.VIRTUAL, False)

    # Hypothesis picks among the enabled rules uniformly, so the frequent
    # kinds of step (polls, handler changes, readiness changes) have several
    # rules, and the rare ones share one rule with a sub-choice.

    # -- handlers and slots ------------------------------------------------------

    def _set_handler(self, slot: int, spec: HandlerSpec | None) -> None:
        real, model = self._step()
        real.set_handler(slot, spec)
        model.set_handler(slot, spec)
        model.end()

    @rule(slot=slots, spec=HANDLERS)
    def set_handler(self, slot: int, spec: HandlerSpec | None) -> None:
        self._set_handler(slot, spec)

    @rule(slot=slots, spec=handler_specs(ACTIONS))
    def add_handler(self, slot: int, spec: HandlerSpec) -> None:
        self._set_handler(slot, spec)

    def _kernel(self, slot: int, op: str) -> None:
        real, model = self._step()
        action = Action(kind=op, target=slot)  # type: ignore[arg-type]
        real.perform(action)
        model.perform(action)
        model.end()

    @rule(slot=slots, op=st.sampled_from(["make_readable", "drain"]))
    def readable(self, slot: int, op: str) -> None:
        self._kernel(slot, op)

    @rule(slot=slots, op=st.sampled_from(["fill", "unfill", "make_readable"]))
    def writable(self, slot: int, op: str) -> None:
        self._kernel(slot, op)

    @rule(slot=slots, value=st.booleans())
    def poll_flag(self, slot: int, value: bool) -> None:
        real, model = self._step()
        real.poll_flag[slot] = value
        model.poll_flag[slot] = value

    # -- BHs ---------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(
            ["bh_schedule", "bh_schedule", "bh_schedule_idle", "bh_cancel", "bh_delete"]
        ),
        k=bh_indices,
    )
    def bh_op(self, kind: str, k: int) -> None:
        real, model = self._step()
        action = Action(kind=kind, target=k)  # type: ignore[arg-type]
        real.perform(action)
        model.perform(action)
        model.end()

    @rule(new=st.booleans(), spec=BH_CALLBACKS)
    def bh_new_or_oneshot(self, new: bool, spec: CallbackSpec) -> None:
        real, model = self._step()
        if new and len(real.bhs) < MAX_BHS:
            real.bh_new(spec)
            model.bh_new(spec)
        else:
            real.oneshot(spec)
            model.oneshot(spec)
        model.end()

    # -- timers and the virtual clock -------------------------------------------

    @rule(t=timer_indices, delta=deltas, how=st.sampled_from(["mod", "anticipate", "delete"]))
    def timer(self, t: int, delta: int, how: str) -> None:
        self._timer(t, delta, how)

    @rule(t=timer_indices, delta=deltas)
    def timer_mod(self, t: int, delta: int) -> None:
        self._timer(t, delta, "mod")

    def _timer(self, t: int, delta: int, how: str) -> None:
        real, model = self._step()
        if how == "delete":
            real.timers[t].delete()
            model.timer_del(model.timers[t])
        else:
            real.timer_mod(t, delta, how == "anticipate")
            model.timer_arm(model.timers[t], model.vnow + delta, how == "anticipate")

    @rule(
        ns=st.sampled_from([0, 1_000, 1_000_000, 2_000_000, 5_000_000]),
        enable=st.sampled_from([None, None, None, None, True, False]),
    )
    def clock(self, ns: int, enable: bool | None) -> None:
        _real, model = self._step()
        if enable is None:
            virtual_clock_step(ns)
            model.vnow += ns
            model.notified = True
            return
        clock_enable(Clock.VIRTUAL, enable)
        if enable != model.venabled:
            model.notified = True
        model.venabled = enable

    # -- external clients, notify ------------------------------------------------

    @rule(what=st.sampled_from(["disable", "enable", "notify"]))
    def external_or_notify(self, what: str) -> None:
        real, model = self._step()
        if what == "notify":
            real.ctx.notify()
            model.notified = True
        elif what == "disable":
            real.ctx.disable_external()
            model.external_disabled += 1
        elif model.external_disabled == 0:
            with pytest.raises(RuntimeError, match="enable_external"):
                real.ctx.enable_external()
        else:
            real.ctx.enable_external()
            model.external_disabled -= 1
            if model.external_disabled == 0:
                model.notified = True

    # -- polls ----------------------------------------------------------------------

    def _poll(self, blocking: bool) -> None:
        real, model = self._step()
        got = real.poll(blocking)
        want = model.poll(blocking)
        model.end()
        assert got == want, f"poll({blocking}) returned {got}, SPEC says {want}"

    @rule()
    def poll_nonblocking(self) -> None:
        self._poll(False)

    @rule()
    def poll_nonblocking_again(self) -> None:
        self._poll(False)

    @precondition(lambda self: self.model is not None and self.model.ready_now())
    @rule()
    def poll_blocking(self) -> None:
        self._poll(True)

    @precondition(lambda self: self.model is not None and self.model.ready_now())
    @rule()
    def poll_blocking_again(self) -> None:
        self._poll(True)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def observable_state_agrees(self) -> None:
        real, model = self.real, self.model
        if real is None or model is None:
            return
        ctx = real.ctx
        assert sorted(ctx.handler_fds()) == sorted(real.fd(s) for s in model.nodes)
        assert ctx.external_disabled == model.external_disabled
        for bh, mbh in zip(real.bhs, model.bhs, strict=True):
            assert bh.scheduled == (mbh.where is not None), (bh, mbh)
            assert bh.deleted == mbh.deleted
        for timer, mtimer in zip(real.timers, model.timers, strict=True):
            want = -1 if mtimer.entry is None else mtimer.entry[0]
            assert timer.expire_time_ns == want, (timer, mtimer)


def run_differential(backend: str, registry: PluginRegistry, profile: str = PROFILE) -> None:
    """Run the machine on *backend* under the named settings profile."""
    machine = type(
        f"Differential_{backend.replace('-', '_')}",
        (DifferentialMachine,),
        {"backend": backend, "registry": registry},
    )
    run_state_machine_as_test(machine, settings=settings.get_profile(profile))


def test_differential(backend: str, registry: PluginRegistry, no_fd_leak: None) -> None:
    run_differential(backend, registry)
