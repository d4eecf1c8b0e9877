"""``aiocore soak``: mixed load for a given time, then an account of what was lost.

Everything the load sends is expected back, so the run checks itself::

    $ aiocore soak --seconds 10 --backend auto
    $ python -m aiocore soak --seconds 60 --backend poll,epoll,io_uring --json

Per backend, for the given number of seconds:

* **events**: a writer thread sends bytes to 16 socketpairs whose handlers
  (some with ``io_poll``, some external) drain them; every byte sent must be
  read.  While it runs, the home thread's BHs replace handlers (same fd, new
  callbacks) and another thread, holding ``ctx.acquire()``, removes and
  re-adds them; readiness pending at a change must reach the new handler.
* **BHs**: other threads schedule oneshots; each must run exactly once.  A
  self-rescheduling BH chain runs alongside, sometimes with a nested poll.
* **timers**: REALTIME timers re-arm themselves 0.2-3 ms ahead; each arming
  must fire, never early.
* **notifier sets**: a thread sets an :class:`EventNotifier` registered on the
  context and waits until its handler saw it.
* **wake-ups**: a second context, in a thread of its own with nothing else to
  do (so nothing else could wake it), is woken by a BH scheduled from another
  thread while it sleeps in ``poll(True)``; a wake-up not delivered within a
  second is lost (and the fd kept for that purpose un-wedges the loop).

At the end the load stops, the loop drains what is in flight (bounded), and
each kind of event is accounted for on its own: ``lost`` counts what was sent
but not delivered, ``doubled`` what was delivered more often than sent (a
byte read twice, a oneshot run twice, a timer fired twice for one arming),
and ``timers_early`` the timers that fired before their deadline.  The two
counts never offset each other (one byte lost and one BH run twice is lost 1,
doubled 1); the exit status is 1 unless all three are 0 and nothing raised.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ._cli import COMMANDS
from ._clocks import Clock, clock_get_ns
from ._context import AioContext
from ._notifier import EventNotifier
from ._plugins import PluginRegistry, default_registry

__all__ = ["SoakResult", "soak"]

N_PAIRS = 16
#: A wake-up or notifier set not seen within this is lost.
DELIVERY_S = 1.0
#: How long the end of a run may take to drain what is in flight.
DRAIN_S = 5.0


@dataclass
class SoakResult:
    """The counters of one soak run on one backend."""

    backend: str
    seconds: float = 0.0
    polls: int = 0
    events: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    handler_changes: int = 0
    bhs_scheduled: int = 0
    bhs_run: int = 0
    bh_chain: int = 0
    nested_polls: int = 0
    timers_armed: int = 0
    timers_fired: int = 0
    timers_pending: int = 0
    timers_early: int = 0
    notifier_sets: int = 0
    notifier_seen: int = 0
    wakeups: int = 0
    wakeups_lost: int = 0
    max_wakeup_us: int = 0
    errors: list[str] = field(default_factory=list)

    def shortfalls(self) -> dict[str, int]:
        """Per kind of event: sent minus delivered (> 0: lost, < 0: doubled)."""
        return {
            "bytes": self.bytes_sent - self.bytes_received,
            "BHs": self.bhs_scheduled - self.bhs_run,
            "timers": self.timers_armed - self.timers_fired - self.timers_pending,
            "notifier sets": self.notifier_sets - self.notifier_seen,
            "wake-ups": self.wakeups_lost,
        }

    @property
    def lost(self) -> int:
        """Events sent and never delivered, over every kind (0 on a correct loop)."""
        return sum(n for n in self.shortfalls().values() if n > 0)

    @property
    def doubled(self) -> int:
        """Events delivered more often than sent, over every kind (0 on a correct loop).

        Counted apart from :attr:`lost`: a doubled event never makes up for a
        lost one, in the same kind or another.
        """
        return sum(-n for n in self.shortfalls().values() if n < 0)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing doubled, no timer early, nothing raised."""
        return self.lost == 0 and self.doubled == 0 and self.timers_early == 0 and not self.errors

    def problems(self) -> str:
        """What went wrong, per kind, in one line; empty when :attr:`ok` but for errors."""
        short = self.shortfalls()
        parts = []
        if self.lost:
            kinds = ", ".join(f"{kind} {n}" for kind, n in short.items() if n > 0)
            parts.append(f"LOST {self.lost} ({kinds})")
        if self.doubled:
            kinds = ", ".join(f"{kind} {-n}" for kind, n in short.items() if n < 0)
            parts.append(f"DOUBLED {self.doubled} ({kinds})")
        if self.timers_early:
            parts.append(f"EARLY timers {self.timers_early}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost, "doubled": self.doubled, "ok": self.ok}


class _Load:
    """The mixed load on one context; see the module docstring."""

    def __init__(self, ctx: AioContext, result: SoakResult, seed: int) -> None:
        self.ctx = ctx
        self.r = result
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()  # counters touched by several threads
        self.pairs = [socket.socketpair() for _ in range(N_PAIRS)]
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
        self.notifier = EventNotifier(registry=ctx.registry)
        self.notifier_seen = threading.Event()
        for i in range(N_PAIRS):
            self._set_handler(i)
        ctx.set_event_notifier(self.notifier, self._on_notifier)
        self.chain = ctx.bh_new(self._on_chain)
        self.chain.schedule()
        self.timers = [ctx.timer_new_ns(Clock.REALTIME, self._on_timer, i) for i in range(4)]
        self.deadlines = [0] * len(self.timers)
        for t in self.timers:
            self._arm(t)

    # -- home-thread callbacks -------------------------------------------------

    def _set_handler(self, i: int) -> None:
        variant = self.rng.randrange(3)
        io_poll = (lambda _o: False) if variant == 1 else None
        self.ctx.set_fd_handler(
            self.pairs[i][0], self._on_read, None, io_poll, i, is_external=variant == 2
        )

    def _on_read(self, i: Any) -> None:
        sock = self.pairs[i][0]
        self.r.events += 1
        for _ in range(64):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            if not data:
                return
            with self.lock:
                self.r.bytes_received += len(data)

    def _on_notifier(self, e: EventNotifier) -> None:
        if e.test_and_clear():
            self.r.notifier_seen += 1
            self.notifier_seen.set()

    def _on_chain(self, _opaque: object) -> None:
        r = self.r
        r.bh_chain += 1
        if self.stop.is_set():
            return
        rng = self.rng
        if rng.random() < 0.05:
            i = rng.randrange(N_PAIRS)
            self._set_handler(i)
            r.handler_changes += 1
        if rng.random() < 0.01:
            r.nested_polls += 1
            self.ctx.poll(False)
        # Bursts of 50 runs, restarted by a timer: in between the loop sleeps,
        # so the other threads' wake-ups meet a blocked poll(True).
        if r.bh_chain % 50:
            self.chain.schedule()

    def _arm(self, t: Any) -> None:
        i = t._opaque
        deadline = clock_get_ns(Clock.REALTIME) + self.rng.randrange(200_000, 3_000_000)
        self.deadlines[i] = deadline
        self.r.timers_armed += 1
        t.mod_ns(deadline)

    def _on_timer(self, i: Any) -> None:
        self.r.timers_fired += 1
        if clock_get_ns(Clock.REALTIME) < self.deadlines[i]:
            self.r.timers_early += 1
        if not self.stop.is_set():
            self._arm(self.timers[i])
            if i == 0 and not self.chain.scheduled:
                self.chain.schedule()

    def _on_oneshot(self, _opaque: object) -> None:
        with self.lock:
            self.r.bhs_run += 1

    # -- other threads -----------------------------------------------------------

    def writer(self) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            _a, b = self.pairs[rng.randrange(N_PAIRS)]
            n = rng.randrange(1, 512)
            try:
                sent = b.send(b"s" * n)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            with self.lock:
                self.r.bytes_sent += sent
            if rng.random() < 0.3:
                time.sleep(0.0001)

    def scheduler(self) -> None:
        rng = random.Random(self.rng.random())
        ctx = self.ctx
        while not self.stop.is_set():
            with self.lock:
                self.r.bhs_scheduled += 1
            ctx.bh_schedule_oneshot(self._on_oneshot)
            if rng.random() < 0.1:
                self.notifier_seen.clear()
                self.r.notifier_sets += 1
                self.notifier.set()
                if not self.notifier_seen.wait(DELIVERY_S) and not self.stop.is_set():
                    self.r.errors.append("a notifier set was not seen within 1 s")
            time.sleep(rng.random() * 0.001)

    def churner(self) -> None:
        """Remove and re-add handlers from another thread, holding acquire()."""
        rng = random.Random(self.rng.random())
        ctx = self.ctx
        while not self.stop.is_set():
            i = rng.randrange(N_PAIRS)
            ctx.acquire()
            try:
                ctx.set_fd_handler(self.pairs[i][0], None)
                ctx.set_fd_handler(self.pairs[i][0], self._on_read, None, None, i)
                self.r.handler_changes += 2
            finally:
                ctx.release()
            time.sleep(rng.random() * 0.002)

    def close(self) -> None:
        ctx = self.ctx
        self.r.timers_pending = sum(t.pending for t in self.timers)
        for a, _b in self.pairs:
            ctx.set_fd_handler(a, None)
        ctx.set_event_notifier(self.notifier, None)
        self.chain.delete()
        for t in self.timers:
            t.delete()
        for a, b in self.pairs:
            a.close()
            b.close()
        self.notifier.close()


def _wakeups(
    backend: str, registry: PluginRegistry, result: SoakResult, stop: threading.Event
) -> None:
    """Wake a context that has nothing else to do, from another thread; count losses."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    woken = threading.Event()
    done = threading.Event()
    kick_r, kick_w = os.pipe()
    os.set_blocking(kick_r, False)

    def home() -> None:
        ctx = AioContext(backend=backend, registry=registry)
        box["ctx"] = ctx
        box["bh"] = ctx.bh_new(lambda _o: woken.set())
        # The emergency kick: a wake-up lost by the loop is repaired by
        # writing here, so one loss does not end the run.
        ctx.set_fd_handler(kick_r, lambda _o: os.read(kick_r, 4096))
        ready.set()
        try:
            while not done.is_set():
                ctx.poll(True)
        finally:
            ctx.set_fd_handler(kick_r, None)
            ctx.close()

    thread = threading.Thread(target=home, name="aiocore-soak-wakeups", daemon=True)
    thread.start()
    try:
        ready.wait(5)
        bh = box["bh"]
        while not stop.is_set():
            time.sleep(random.random() * 0.002)  # let it fall asleep
            woken.clear()
            start = time.perf_counter_ns()
            bh.schedule()
            if woken.wait(DELIVERY_S):
                latency = (time.perf_counter_ns() - start) // 1000
                result.wakeups += 1
                result.max_wakeup_us = max(result.max_wakeup_us, latency)
            else:
                result.wakeups_lost += 1
                os.write(kick_w, b"k")
    finally:
        done.set()
        os.write(kick_w, b"k")
        thread.join(DRAIN_S)
        os.close(kick_r)
        os.close(kick_w)
        if thread.is_alive():
            result.errors.append("the wake-up context's thread did not stop")


def soak(
    backend: str,
    seconds: float,
    *,
    registry: PluginRegistry | None = None,
    seed: int | None = None,
) -> SoakResult:
    """Run the mixed load on *backend* for *seconds* in this thread; return the counters."""
    registry = default_registry() if registry is None else registry
    result = SoakResult(backend)
    ctx = AioContext(backend=backend, registry=registry)
    result.backend = ctx.backend_name
    errors = result.errors

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")

        return run

    ctx.set_exception_handler(lambda _c, exc: errors.append(f"{type(exc).__name__}: {exc}"))
    load = _Load(ctx, result, random.randrange(2**32) if seed is None else seed)
    stop_wake = threading.Event()
    threads = [
        threading.Thread(target=guarded(load.writer), daemon=True),
        threading.Thread(target=guarded(load.scheduler), daemon=True),
        threading.Thread(target=guarded(load.churner), daemon=True),
        threading.Thread(
            target=guarded(lambda: _wakeups(backend, registry, result, stop_wake)), daemon=True
        ),
    ]
    start = time.monotonic()
    try:
        for t in threads:
            t.start()
        end = start + seconds
        while time.monotonic() < end:
            ctx.poll(True)
            result.polls += 1
        load.stop.set()
        stop_wake.set()
        for t in threads:
            t.join(DRAIN_S)
            if t.is_alive():
                errors.append(f"thread {t.name} did not stop")
        # Drain what is in flight: bounded in time, and over once nothing has
        # moved for a while (what is lost does not come).
        drain_end = time.monotonic() + DRAIN_S
        moved = time.monotonic()
        while time.monotonic() < drain_end and (
            result.bytes_received < result.bytes_sent or result.bhs_run < result.bhs_scheduled
        ):
            if ctx.poll(False):
                moved = time.monotonic()
            elif time.monotonic() - moved > 0.3:
                break
            result.polls += 1
        ctx.poll(False)
        result.seconds = round(time.monotonic() - start, 3)
    finally:
        load.close()
        ctx.close()
    return result


# -- the command -------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="run time per backend (10)")
    p.add_argument(
        "--backend",
        default="auto",
        help="backend name, or a comma-separated list run one after the other (auto)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed, for a replay")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


_COLUMNS = (
    ("backend", "backend"),
    ("seconds", "s"),
    ("polls", "polls"),
    ("events", "events"),
    ("bhs_run", "BHs"),
    ("bh_chain", "chain"),
    ("timers_fired", "timers"),
    ("wakeups", "wake-ups"),
    ("max_wakeup_us", "max wake us"),
    ("notifier_seen", "notifier"),
    ("handler_changes", "changes"),
    ("nested_polls", "nested"),
    ("timers_early", "early"),
    ("doubled", "doubled"),
    ("lost", "lost"),
)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.seconds <= 0:
        out.write(f"aiocore soak: --seconds must be > 0, got {args.seconds}\n")
        return 2
    names = [n.strip() for n in args.backend.split(",") if n.strip()]
    results = [soak(name, args.seconds, seed=args.seed) for name in names]
    if args.json:
        json.dump([r.as_dict() for r in results], out, indent=2)
        out.write("\n")
    else:
        rows = [[h for _k, h in _COLUMNS]]
        for r in results:
            d = r.as_dict()
            rows.append([str(d[k]) for k, _h in _COLUMNS])
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            out.write("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + "\n")
        for r in results:
            problems = r.problems()
            if problems:
                out.write(f"{r.backend}: {problems}\n")
            for e in r.errors[:10]:
                out.write(f"{r.backend}: error: {e}\n")
    return 0 if all(r.ok for r in results) else 1


COMMANDS["soak"] = ("run mixed load for a while and account for every event", _add_arguments, _run)
