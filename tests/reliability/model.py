"""A reference model of SPEC: what one ``AioContext`` must do, in pure Python.

No OS, no threads, no aiocore import beyond two mask constants: the model keeps
its own fd table, BH queue, timer list, notification flag and "kernel" state of
every slot (readable, writable), and predicts, for each step of a differential
test, the callbacks that run and what ``poll()`` returns.  It is written from
SPEC, section by section; the numbered comments in :meth:`Model.poll` are the
steps of SPEC 2.

Where SPEC defines an order (BHs FIFO; timers by expiry, then by arming order;
``io_read`` before ``io_write`` of one record; the phases of one ``poll()``),
the model dictates it.  Where SPEC leaves it undefined (which fd a dispatch
visits first, the order of ``io_poll`` calls, whether a backend's
``need_wait()`` asks for a zero-timeout wait), the model *replays* the real
run's choice, after checking that it is one SPEC allows: the real trace is
read through a cursor, and at a choice point the model looks at the next real
item, accepts it if it is one of the allowed ones, and simulates on from
there.  Any other difference is a :class:`Mismatch`.

Silent visits are the one thing a trace cannot show: a dispatch that passes
over a ready record with no matching callback (readiness inherited from a
record with other callbacks, or an external handler while external clients
are disabled) clears its readiness without a call.  Whether that happened
before a later callback changed the record decides whether the new record
inherits it (SPEC 3).  The harness therefore records the record's pending
readiness just before every change (``("peek", slot, mask)``), and the model
accepts "already cleared" exactly when the record was silent and still
waiting in a dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aiocore import EVENT_IN, EVENT_OUT

from .specs import (
    MAX_DEPTH,
    N_SLOTS,
    Action,
    CallbackSpec,
    HandlerSpec,
    Owner,
    TraceItem,
    is_socket,
    normalize,
    resolve,
)

#: SPEC 7: an idle BH caps a blocking wait at 10 ms.
IDLE_BH_TIMEOUT_NS: Final = 10_000_000
IO_MASK: Final = EVENT_IN | EVENT_OUT


class Mismatch(AssertionError):
    """The real context did something the model of SPEC does not allow."""


@dataclass(eq=False)
class Record:
    """One handler registration (SPEC 3: every change makes a new record)."""

    slot: int
    gen: int
    spec: HandlerSpec
    revents: int = 0
    deleted: bool = False

    @property
    def mask(self) -> int:
        return (EVENT_IN if self.spec.io_read else 0) | (EVENT_OUT if self.spec.io_write else 0)


@dataclass(eq=False)
class Batch:
    """One BH pass: the BHs scheduled when it began, and how far it got."""

    items: list[MBH]
    pos: int = 0


@dataclass(eq=False)
class MBH:
    label: TraceItem
    spec: CallbackSpec
    #: None, "live" (queued for the next pass) or the Batch holding it.
    where: object = None
    idle: bool = False
    deleted: bool = False


@dataclass(eq=False)
class MTimer:
    index: int
    spec: CallbackSpec
    #: (expire_ns, arming sequence number) while armed.
    entry: tuple[int, int] | None = None


@dataclass
class Model:
    """SPEC's view of one context, its slots, BHs and virtual-clock timers."""

    bh_specs: Sequence[CallbackSpec]
    timer_specs: Sequence[CallbackSpec]
    vnow: int
    venabled: bool
    readable: list[bool] = field(default_factory=lambda: [False] * N_SLOTS)
    filled: list[bool] = field(default_factory=lambda: [False] * N_SLOTS)
    poll_flag: list[bool] = field(default_factory=lambda: [False] * N_SLOTS)
    gens: list[int] = field(default_factory=lambda: [0] * N_SLOTS)
    nodes: dict[int, Record] = field(default_factory=dict)
    poll_ready: list[Record] = field(default_factory=list)
    notified: bool = False
    external_disabled: int = 0
    depth: int = 0
    oneshots: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        self.bhs = [MBH(("bh", k), spec) for k, spec in enumerate(self.bh_specs)]
        self.live: dict[MBH, None] = {}
        self.batch: Batch | None = None
        #: Batches a pass took before finishing an older one (QEMU's slices).
        self.slices: list[Batch] = []
        self.timers = [MTimer(t, spec) for t, spec in enumerate(self.timer_specs)]
        #: The fds each active dispatch (outermost first) has yet to visit.
        self.remaining: list[list[int]] = []
        self.trace: list[TraceItem] = []
        self.pos = 0

    # -- reading the real trace ------------------------------------------------

    def begin(self, trace: list[TraceItem]) -> None:
        """Start checking one step against the real *trace*."""
        self.trace = trace
        self.pos = 0

    def end(self) -> None:
        """The step is over: every real item must have been predicted."""
        if self.pos != len(self.trace):
            self.fail(f"the real run did more: {self.trace[self.pos :]}")

    def fail(self, what: str) -> None:
        done = self.trace[: self.pos]
        rest = self.trace[self.pos :]
        raise Mismatch(f"{what}\n  real trace so far: {done}\n  real trace from here: {rest}")

    def peek(self) -> TraceItem | None:
        return self.trace[self.pos] if self.pos < len(self.trace) else None

    def expect(self, item: TraceItem) -> None:
        got = self.peek()
        if got != item:
            self.fail(f"expected {item}, got {got}")
        self.pos += 1

    # -- kernel state of the slots --------------------------------------------

    def writable(self, slot: int) -> bool:
        # An eventfd is always writable, but notifier slots never ask for it.
        return not self.filled[slot]

    def ext_off(self, rec: Record) -> bool:
        return rec.spec.is_external and self.external_disabled > 0

    def ready_fds(self) -> list[tuple[int, int]]:
        """What a backend wait reports now: ready slots and their masks."""
        out = []
        for slot, rec in self.nodes.items():
            mask = rec.mask
            if not mask or self.ext_off(rec):
                continue
            ready = 0
            if mask & EVENT_IN and self.readable[slot]:
                ready |= EVENT_IN
            if mask & EVENT_OUT and self.writable(slot):
                ready |= EVENT_OUT
            if ready:
                out.append((slot, ready))
        return out

    def ready_now(self) -> bool:
        """True if a blocking poll() returns at once, or within an idle BH's 10 ms."""
        if self.live or self.batch is not None:
            return True
        if self.venabled and any(
            t.entry is not None and t.entry[0] <= self.vnow for t in self.timers
        ):
            return True
        if self.notified or self.poll_ready or self.ready_fds():
            return True
        return any(
            r.spec.io_poll and self.poll_flag[r.slot] and not self.ext_off(r)
            for r in self.nodes.values()
        )

    # -- SPEC 3: fd handlers ---------------------------------------------------

    def _silent(self, rec: Record) -> bool:
        return self.ext_off(rec) or first_call(rec) is None

    def _check_peek(self, slot: int) -> None:
        item = self.peek()
        if item is None or item[:2] != ("peek", slot):
            self.fail(f"expected a peek at slot {slot}, got {item}")
        self.pos += 1
        real = item[2]
        rec = self.nodes.get(slot)
        model = -1 if rec is None else rec.revents
        if real == model:
            return
        waiting = any(slot in level for level in self.remaining)
        if rec is not None and real == 0 and waiting and self._silent(rec):
            rec.revents = 0  # a dispatch passed over it silently: allowed
            return
        self.fail(f"slot {slot}: pending readiness {real}, SPEC says {model}")

    def set_handler(self, slot: int, spec: HandlerSpec | None) -> None:
        """``set_fd_handler``/``set_event_notifier`` (SPEC 3, 4)."""
        self._check_peek(slot)
        spec = normalize(spec, slot)
        old = self.nodes.get(slot)
        if spec is None:
            if old is None:
                return  # removing an absent fd is a no-op, and no notify
            old.deleted = True
            old.revents = 0
            del self.nodes[slot]
        else:
            self.gens[slot] += 1
            new = Record(slot, self.gens[slot], spec)
            if old is not None:
                # The new record inherits the old one's pending readiness.
                old.deleted = True
                new.revents = old.revents
                old.revents = 0
            self.nodes[slot] = new
        self.notified = True

    # -- SPEC 7: bottom halves -------------------------------------------------

    def bh_schedule(self, bh: MBH, k: int | None = None) -> None:
        if bh.where is None:
            if bh.deleted:
                self.expect(("refused", k))
                return
            bh.idle = False
            self.live[bh] = None
            bh.where = "live"
        elif bh.idle:
            bh.idle = False  # scheduled and idle-scheduled counts as non-idle
        else:
            return  # scheduling twice before it runs runs it once; no notify
        self.notified = True

    def bh_schedule_idle(self, bh: MBH, k: int) -> None:
        if bh.where is not None:
            return
        if bh.deleted:
            self.expect(("refused", k))
            return
        bh.idle = True
        self.live[bh] = None
        bh.where = "live"
        self.notified = True

    def bh_cancel(self, bh: MBH, delete: bool) -> None:
        if delete:
            bh.deleted = True
        if bh.where == "live":
            del self.live[bh]
        bh.where = None

    def oneshot(self, spec: CallbackSpec) -> None:
        bh = MBH(("oneshot", self.oneshots), spec)
        self.oneshots += 1
        self.bh_schedule(bh)
        bh.deleted = True

    def bh_new(self, spec: CallbackSpec) -> None:
        self.bhs.append(MBH(("bh", len(self.bhs)), spec))

    def run_bhs(self) -> bool:
        """One BH pass; a nested poll first finishes its parent's pass (SPEC 7).

        A pass that finishes an older batch (its parent's, or one an
        exception interrupted) takes its own batch first, so what the rest
        of the older one schedules waits for the next poll.
        """
        progress = False
        if self.batch is not None and self.live:
            self.slices.append(self.take_live())
        while True:
            if self.batch is None:
                if self.slices:
                    batch = self.slices.pop(0)
                elif self.live:
                    batch = self.take_live()
                else:
                    return progress
                self.batch = batch
            else:
                batch = self.batch
            while batch.pos < len(batch.items):
                bh = batch.items[batch.pos]
                batch.pos += 1
                if bh.where is not batch:
                    continue  # cancelled (or deleted) after the pass began
                bh.where = None
                if not bh.idle:
                    progress = True
                self.expect(bh.label)
                self.callback(bh.spec, None, "bh", bh.label)  # type: ignore[arg-type]
            if self.batch is batch:
                self.batch = None
            if not self.slices:
                return progress

    def take_live(self) -> Batch:
        batch = Batch(list(self.live))
        self.live = {}
        for bh in batch.items:
            bh.where = batch
        return batch

    # -- SPEC 8: timers (virtual clock) ---------------------------------------

    def timer_arm(self, t: MTimer, expire: int, anticipate: bool) -> None:
        expire = max(expire, 0)
        if anticipate and t.entry is not None and t.entry[0] <= expire:
            return
        t.entry = (expire, self.seq)
        self.seq += 1
        earliest = min(x.entry for x in self.timers if x.entry is not None)
        if t.entry == earliest:
            self.notified = True

    def timer_del(self, t: MTimer) -> None:
        t.entry = None

    def run_timers(self) -> bool:
        """Pop due timers by (expiry, arming order); ones armed meanwhile wait."""
        if not self.venabled:
            return False
        progress = False
        now = self.vnow
        limit = self.seq
        while True:
            due = [
                t
                for t in self.timers
                if t.entry is not None and t.entry[0] <= now and t.entry[1] < limit
            ]
            if not due:
                return progress
            t = min(due, key=lambda x: x.entry)  # type: ignore[arg-type, return-value]
            t.entry = None
            progress = True
            self.expect(("timer", t.index))
            self.callback(t.spec, None, "timer", ("timer", t.index))

    def deadline(self) -> int:
        if not self.venabled:
            return -1
        armed = [t.entry[0] for t in self.timers if t.entry is not None]
        return max(min(armed) - self.vnow, 0) if armed else -1

    def compute_timeout(self) -> int:
        """SPEC 2 step 3."""
        if any(not bh.idle for bh in self.live) or self.batch is not None or self.poll_ready:
            return 0
        timeout = IDLE_BH_TIMEOUT_NS if self.live else -1
        deadline = self.deadline()
        if deadline >= 0 and (timeout < 0 or deadline < timeout):
            timeout = deadline
        return timeout

    # -- SPEC 2: one poll() ----------------------------------------------------

    def poll(self, blocking: bool) -> bool:
        self.depth += 1
        try:
            return self._poll(blocking)
        finally:
            self.depth -= 1

    def _poll(self, blocking: bool) -> bool:
        # 3.
        timeout = self.compute_timeout() if blocking else 0
        progress = False
        # 4. Poll mode is off (poll_max_ns = 0): a pending notification zeroes
        # the timeout, then every io_poll is tried once (SPEC 5, 6).
        if self.notified:
            timeout = 0
        pollers = [r for r in self.nodes.values() if r.spec.io_poll]
        if pollers:
            expected = sorted(
                ("poll", r.slot, r.gen) for r in pollers if not self.ext_off(r)
            )
            got = self.trace[self.pos : self.pos + len(expected)]
            if sorted(got) != expected:  # type: ignore[type-var]
                self.fail(f"io_poll calls: expected {expected} in any order, got {got}")
            self.pos += len(expected)
            for item in got:
                rec = self.nodes[item[1]]  # type: ignore[index]
                if self.poll_flag[rec.slot]:
                    progress = True
                    timeout = 0
                    # Listed once: a nested poll that finds a handler its
                    # parent already found runs io_poll_ready once, as
                    # QEMU's ready list moves a node instead of adding it.
                    if rec.spec.io_poll_ready is not None and all(
                        r is not rec for r in self.poll_ready
                    ):
                        self.poll_ready.append(rec)
        # 5. Wait unless every handler has io_poll and nothing is due; a
        # backend may still ask for a zero-timeout wait (need_wait()).
        must_wait = timeout != 0 or any(not r.spec.io_poll for r in self.nodes.values())
        item = self.peek()
        if must_wait or (item is not None and item[0] == "wait"):
            self.expect(("wait", timeout))
            events = self.ready_fds()
        else:
            events = []
        # 6.
        self.notified = False
        # 8. Record readiness, run BHs, dispatch fds, run timers.
        for slot, mask in events:
            self.nodes[slot].revents |= mask
        if (self.live or self.batch is not None) and self.run_bhs():
            progress = True
        if (events or self.poll_ready) and self.dispatch([slot for slot, _ in events]):
            progress = True
        if any(t.entry is not None for t in self.timers) and self.run_timers():
            progress = True
        # 9.
        return progress

    def dispatch(self, slots: list[int]) -> bool:
        progress = False
        while self.poll_ready:
            rec = self.poll_ready.pop(0)
            # SPEC 5: io_poll_ready only for a hit with no fd readiness;
            # with readiness, the fd dispatch below runs io_read instead.
            if rec.deleted or rec.revents or self.ext_off(rec):
                continue
            progress = True
            self.expect(("ready", rec.slot, rec.gen))
            assert rec.spec.io_poll_ready is not None
            self.callback(rec.spec.io_poll_ready, rec, "ready")
        remaining = list(slots)
        self.remaining.append(remaining)
        try:
            while remaining:
                candidates: dict[TraceItem, int] = {}
                for slot in remaining:
                    rec = self.nodes.get(slot)
                    if rec is None or not rec.revents or self.ext_off(rec):
                        continue
                    call = first_call(rec)
                    if call is not None:
                        candidates[(call, slot, rec.gen)] = slot
                if not candidates:
                    # What is left is visited silently: readiness cleared.
                    for slot in remaining:
                        rec = self.nodes.get(slot)
                        if rec is not None:
                            rec.revents = 0
                    break
                item = self.peek()
                if item not in candidates:
                    self.fail(f"fd dispatch: expected one of {sorted(candidates)}, got {item}")
                assert item is not None
                slot = candidates[item]
                remaining.remove(slot)
                rec = self.nodes[slot]
                revents = rec.revents
                # The write half stays on the record while io_read runs, so
                # a record io_read installs inherits it (SPEC 3), and a
                # nested poll that dispatches the fd takes it.
                rec.revents = revents & EVENT_OUT
                if revents & EVENT_IN and rec.spec.io_read is not None:
                    progress = True
                    self.expect(("read", slot, rec.gen))
                    self.callback(rec.spec.io_read, rec, "read")
                    cur = self.nodes.get(slot)
                    if cur is None:
                        continue
                    rec = cur
                if rec.revents & EVENT_OUT:
                    rec.revents &= ~EVENT_OUT
                    if rec.spec.io_write is not None and not rec.deleted and not self.ext_off(rec):
                        progress = True
                        self.expect(("write", slot, rec.gen))
                        self.callback(rec.spec.io_write, rec, "write")
        finally:
            self.remaining.pop()
        return progress

    # -- callbacks and their actions --------------------------------------------

    def callback(
        self, spec: CallbackSpec, rec: Record | None, kind: str, owner: Owner | None = None
    ) -> None:
        if rec is not None:
            owner = ("slot", rec.slot)
            if spec.consume:
                if kind == "write":
                    self.fill(rec.slot)
                else:
                    self.readable[rec.slot] = False
        self.perform(resolve(spec.action, owner))

    def fill(self, slot: int) -> None:
        if is_socket(slot):
            self.filled[slot] = True

    def perform(self, action: Action) -> None:
        kind = action.kind
        if kind == "none":
            return
        if kind == "set_handler":
            self.set_handler(action.target, action.handler)
        elif kind in ("bh_schedule", "bh_schedule_idle", "bh_cancel", "bh_delete"):
            k = action.target % len(self.bhs)
            bh = self.bhs[k]
            if kind == "bh_schedule":
                self.bh_schedule(bh, k)
            elif kind == "bh_schedule_idle":
                self.bh_schedule_idle(bh, k)
            else:
                self.bh_cancel(bh, kind == "bh_delete")
        elif kind == "oneshot":
            self.oneshot(CallbackSpec())
        elif kind == "timer_mod":
            self.timer_arm(self.timers[action.target], self.vnow + action.arg, False)
        elif kind == "timer_del":
            self.timer_del(self.timers[action.target])
        elif kind == "make_readable":
            self.readable[action.target] = True
        elif kind == "drain":
            self.readable[action.target] = False
        elif kind == "fill":
            self.fill(action.target)
        elif kind == "unfill":
            self.filled[action.target] = False
        elif kind == "nested_poll":
            if self.depth < MAX_DEPTH:
                self.expect(("nest",))
                progress = self.poll(False)
                self.expect(("nested", progress))
        else:  # pragma: no cover
            raise AssertionError(kind)


def first_call(rec: Record) -> str | None:
    """The first callback a dispatch of *rec* makes now, or None (silent)."""
    if rec.revents & EVENT_IN and rec.spec.io_read is not None:
        return "read"
    if rec.revents & EVENT_OUT and rec.spec.io_write is not None:
        return "write"
    return None
