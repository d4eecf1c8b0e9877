"""The vocabulary of the differential tests: what a step or a callback does.

Both sides of the differential test read these plain, frozen records: the
reference model (:mod:`tests.reliability.model`) interprets them against its
own bookkeeping, the harness (:mod:`tests.reliability.harness`) performs them
on a real :class:`aiocore.AioContext`.  Nothing here knows SPEC; it only says
*what is asked*, never what should happen.

A *slot* is one file descriptor the test controls completely: slots
``0 .. N_SOCKETS-1`` are one end of a non-blocking socketpair (readable when the
peer sent a byte, not writable once its small send buffer is filled), the
others are :class:`aiocore.EventNotifier` objects (readable when set).

Trace items, appended by the real callbacks and by the wait spy, and predicted
by the model:

* ``("poll", slot, gen)``, ``("read", slot, gen)``, ``("write", slot, gen)``,
  ``("ready", slot, gen)``: ``io_poll``, ``io_read``, ``io_write`` and
  ``io_poll_ready`` of the handler record number *gen* of *slot*;
* ``("bh", k)``, ``("oneshot", n)``, ``("timer", t)``;
* ``("wait", timeout_ns)``: one call of the backend's ``wait``;
* ``("nest",)`` and ``("nested", progress)``: around a nested ``poll(False)``;
* ``("peek", slot, revents)``: the undispatched readiness (IN/OUT bits) of
  *slot*'s record just before a callback changes it, ``-1`` if it has none;
  it lets the model tell which fds a dispatch already passed over silently
  (an unobservable order SPEC leaves undefined);
* ``("refused", k)``: ``schedule()`` of a deleted BH raised ``RuntimeError``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

#: Socketpair slots, then notifier slots.  Few, so that actions meet.
N_SOCKETS: Final = 2
N_NOTIFIERS: Final = 1
N_SLOTS: Final = N_SOCKETS + N_NOTIFIERS
#: BHs made at the start of each example; ``bh_new`` adds up to MAX_BHS.
N_BHS: Final = 3
MAX_BHS: Final = 6
#: Virtual-clock timers made at the start of each example.
N_TIMERS: Final = 3
#: Top-level poll() is depth 1; a nested poll() action is skipped at this depth.
MAX_DEPTH: Final = 2

ActionKind: TypeAlias = Literal[
    "none",
    "set_handler",
    "bh_schedule",
    "bh_schedule_idle",
    "bh_cancel",
    "bh_delete",
    "oneshot",
    "timer_mod",
    "timer_del",
    "make_readable",
    "drain",
    "fill",
    "unfill",
    "nested_poll",
]

TraceItem: TypeAlias = tuple[object, ...]

#: An action target meaning "the callback's own": its slot, BH or timer.
SELF: Final = -1
#: Who runs a callback: ("slot", n), ("bh", k), ("timer", t) or ("oneshot", n).
Owner: TypeAlias = tuple[str, int]

_SLOT_ACTIONS: Final = ("set_handler", "make_readable", "drain", "fill", "unfill")


@dataclass(frozen=True)
class Action:
    """One side effect of a callback.

    *target* is a slot, a BH index (modulo the pool size), a timer index or
    :data:`SELF` (see :func:`resolve`);
    *arg* the timer expiry relative to virtual "now" (ns); *handler* the new
    handler of ``set_handler`` (``None`` removes).
    """

    kind: ActionKind = "none"
    target: int = 0
    arg: int = 0
    handler: HandlerSpec | None = None


NO_ACTION: Final = Action()


@dataclass(frozen=True)
class CallbackSpec:
    """What a callback does: consume its own readiness (drain a readable fd,
    fill a writable one), then one :class:`Action`."""

    consume: bool = False
    action: Action = NO_ACTION


@dataclass(frozen=True)
class HandlerSpec:
    """The callbacks of one ``set_fd_handler``/``set_event_notifier`` call.

    ``io_poll`` returns the slot's current poll flag (a test input).
    """

    io_read: CallbackSpec | None = None
    io_write: CallbackSpec | None = None
    io_poll: bool = False
    io_poll_ready: CallbackSpec | None = None
    is_external: bool = False

    @property
    def empty(self) -> bool:
        return self.io_read is None and self.io_write is None and not self.io_poll


def is_socket(slot: int) -> bool:
    return slot < N_SOCKETS


def normalize(spec: HandlerSpec | None, slot: int) -> HandlerSpec | None:
    """Fit *spec* to *slot*: a notifier has no ``io_write``; empty means remove."""
    if spec is None:
        return None
    if not is_socket(slot) and spec.io_write is not None:
        spec = replace(spec, io_write=None)
    if not spec.io_poll and spec.io_poll_ready is not None:
        spec = replace(spec, io_poll_ready=None)
    return None if spec.empty else spec


def resolve(action: Action, owner: Owner | None) -> Action:
    """Replace a :data:`SELF` target by the owner's slot, BH or timer (else 0)."""
    if action.target != SELF:
        return action
    if action.kind in _SLOT_ACTIONS:
        want = "slot"
    elif action.kind.startswith("bh_"):
        want = "bh"
    else:
        want = "timer"
    target = owner[1] if owner is not None and owner[0] == want else 0
    return replace(action, target=target)
