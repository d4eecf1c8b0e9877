"""The real side of the differential tests: specs performed on a real context.

:class:`Harness` owns one :class:`aiocore.AioContext` on one backend, the
slots (socketpairs with a 4 KiB send buffer, so "not writable" is one
``send`` loop away, and event notifiers), a pool of BHs and of virtual-clock
timers, and the trace.  Every callback it registers appends its trace item
*first*, then consumes its own readiness if asked, then performs its
:class:`~tests.reliability.specs.Action`, exactly as the model does.  The
backend's ``wait`` is wrapped to append ``("wait", timeout_ns)``.

Every blocking ``poll()`` runs under :func:`bounded`: a ``SIGALRM`` whose
handler raises :class:`PollHung`, so a backend that misses readiness fails the
test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from aiocore import (
    EVENT_IN,
    EVENT_OUT,
    AioContext,
    Clock,
    EventNotifier,
    PluginRegistry,
    clock_get_ns,
)

from .specs import (
    MAX_DEPTH,
    N_NOTIFIERS,
    N_SOCKETS,
    Action,
    CallbackSpec,
    HandlerSpec,
    Owner,
    TraceItem,
    is_socket,
    normalize,
    resolve,
)

SNDBUF = 4096
#: How long a poll(True) that should return at once may take before it fails.
BLOCK_LIMIT_S = 0.5


class PollHung(BaseException):
    """A poll() the test expected to return at once did not.

    A ``BaseException``, not an ``Exception``: the core propagates it at once
    (SPEC 12) instead of handing it to the exception handler, and hypothesis
    stops on it instead of shrinking, where every attempt that reproduces a
    hang or a livelock would cost the whole time limit (minutes in all).
    """


@contextlib.contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`PollHung` in the main thread if the block runs over *seconds*."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []
    message = f"{what} did not return within {seconds} s"

    def on_alarm(_signum: int, _frame: object) -> None:
        fired.append(1)
        raise PollHung(message)

    old = signal.signal(signal.SIGALRM, on_alarm)
    # Repeating: an exception raised where Python ignores it (a GC callback,
    # a __del__) must not let the block run on unbounded.
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds / 2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if fired:
        raise PollHung(message)


def _reraise(_ctx: AioContext, exc: BaseException) -> None:
    raise exc


class SocketSlot:
    """One end (``a``) of a socketpair; the test writes and reads ``b``."""

    def __init__(self) -> None:
        self.sa, self.sb = socket.socketpair()
        self.sa.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        self.sa.setblocking(False)
        self.sb.setblocking(False)

    def fileno(self) -> int:
        return self.sa.fileno()

    def make_readable(self) -> None:
        self.sb.send(b"r")

    def drain(self) -> None:
        _drain(self.sa)

    def fill(self) -> None:
        for _ in range(1000):
            try:
                self.sa.send(b"w" * 1024)
            except BlockingIOError:
                return
        raise AssertionError("a 4 KiB send buffer never filled")

    def unfill(self) -> None:
        _drain(self.sb)

    def close(self) -> None:
        self.sa.close()
        self.sb.close()


def _drain(sock: socket.socket) -> None:
    for _ in range(1000):
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            return
    raise AssertionError("a socket never drained")


class Harness:
    """A real context driven by specs; see the module docstring."""

    def __init__(
        self,
        backend: str,
        registry: PluginRegistry,
        bh_specs: list[CallbackSpec],
        timer_specs: list[CallbackSpec],
    ) -> None:
        self.trace: list[TraceItem] = []
        self.depth = 0
        self.sockets = [SocketSlot() for _ in range(N_SOCKETS)]
        self.notifiers = [EventNotifier(registry=registry) for _ in range(N_NOTIFIERS)]
        self.ctx = AioContext(backend=backend, registry=registry)
        self.ctx.set_exception_handler(_reraise)
        self.gens = [0] * (N_SOCKETS + N_NOTIFIERS)
        self.poll_flag = [False] * (N_SOCKETS + N_NOTIFIERS)
        self.registered: set[int] = set()
        self.oneshots = 0
        self.bhs = []
        for spec in bh_specs:
            self.bh_new(spec)
        self.timers = [
            self.ctx.timer_new_ns(Clock.VIRTUAL, self._cb(("timer", t), spec, ("timer", t), ""))
            for t, spec in enumerate(timer_specs)
        ]
        backend_obj: Any = self.ctx._backend
        inner = backend_obj.wait

        def wait(timeout_ns: int) -> list[tuple[int, int]]:
            self.trace.append(("wait", timeout_ns))
            return inner(timeout_ns)  # type: ignore[no-any-return]

        backend_obj.wait = wait

    def close(self) -> None:
        ctx = self.ctx
        if not ctx.closed:
            ctx.set_exception_handler(lambda _c, _e: None)
            while ctx.external_disabled:
                ctx.enable_external()
            for slot in list(self.registered):
                ctx.set_fd_handler(self.fd(slot), None)
            ctx.close()
        for s in self.sockets:
            s.close()
        for n in self.notifiers:
            n.close()

    # -- slots -------------------------------------------------------------

    def fd(self, slot: int) -> int:
        if is_socket(slot):
            return self.sockets[slot].fileno()
        return self.notifiers[slot - N_SOCKETS].fileno()

    def make_readable(self, slot: int) -> None:
        if is_socket(slot):
            self.sockets[slot].make_readable()
        else:
            self.notifiers[slot - N_SOCKETS].set()

    def drain(self, slot: int) -> None:
        if is_socket(slot):
            self.sockets[slot].drain()
        else:
            self.notifiers[slot - N_SOCKETS].test_and_clear()

    def fill(self, slot: int) -> None:
        if is_socket(slot):
            self.sockets[slot].fill()

    def unfill(self, slot: int) -> None:
        if is_socket(slot):
            self.sockets[slot].unfill()

    # -- callbacks -----------------------------------------------------------

    def _cb(
        self, label: TraceItem, spec: CallbackSpec, owner: Owner | None, kind: str
    ) -> Callable[[object], None]:
        action = spec.action

        def callback(_opaque: object) -> None:
            self.trace.append(label)
            if spec.consume and owner is not None and owner[0] == "slot":
                if kind == "write":
                    self.fill(owner[1])
                else:
                    self.drain(owner[1])
            self.perform(resolve(action, owner))

        return callback

    def _io_poll(self, slot: int, gen: int) -> Callable[[object], bool]:
        def io_poll(_opaque: object) -> bool:
            self.trace.append(("poll", slot, gen))
            return self.poll_flag[slot]

        return io_poll

    def set_handler(self, slot: int, spec: HandlerSpec | None) -> None:
        ctx = self.ctx
        fd = self.fd(slot)
        node = ctx._table.nodes.get(fd)
        pending = -1 if node is None else node.revents & (EVENT_IN | EVENT_OUT)
        self.trace.append(("peek", slot, pending))
        spec = normalize(spec, slot)
        if spec is None:
            if is_socket(slot):
                ctx.set_fd_handler(fd, None)
            else:
                ctx.set_event_notifier(self.notifiers[slot - N_SOCKETS], None)
            self.registered.discard(slot)
            return
        self.gens[slot] += 1
        gen = self.gens[slot]

        def cb(kind: str, c: CallbackSpec | None) -> Callable[[object], None] | None:
            return None if c is None else self._cb((kind, slot, gen), c, ("slot", slot), kind)

        io_read = cb("read", spec.io_read)
        io_poll = self._io_poll(slot, gen) if spec.io_poll else None
        io_poll_ready = cb("ready", spec.io_poll_ready)
        if is_socket(slot):
            ctx.set_fd_handler(
                fd,
                io_read,
                cb("write", spec.io_write),
                io_poll,
                None,
                is_external=spec.is_external,
                io_poll_ready=io_poll_ready,
            )
        else:
            ctx.set_event_notifier(
                self.notifiers[slot - N_SOCKETS],
                io_read,
                io_poll,
                is_external=spec.is_external,
                io_poll_ready=io_poll_ready,
            )
        self.registered.add(slot)

    # -- BHs and timers --------------------------------------------------------

    def bh_new(self, spec: CallbackSpec) -> None:
        k = len(self.bhs)
        self.bhs.append(self.ctx.bh_new(self._cb(("bh", k), spec, ("bh", k), "")))

    def bh_op(self, kind: str, target: int) -> None:
        k = target % len(self.bhs)
        bh = self.bhs[k]
        if kind in ("bh_schedule", "bh_schedule_idle"):
            try:
                if kind == "bh_schedule":
                    bh.schedule()
                else:
                    bh.schedule_idle()
            except RuntimeError:
                self.trace.append(("refused", k))
        elif kind == "bh_cancel":
            bh.cancel()
        else:
            bh.delete()

    def oneshot(self, spec: CallbackSpec) -> None:
        n = self.oneshots
        self.oneshots += 1
        self.ctx.bh_schedule_oneshot(self._cb(("oneshot", n), spec, ("oneshot", n), ""))

    def timer_mod(self, t: int, delta: int, anticipate: bool = False) -> None:
        expire = clock_get_ns(Clock.VIRTUAL) + delta
        if anticipate:
            self.timers[t].mod_anticipate_ns(expire)
        else:
            self.timers[t].mod_ns(expire)

    # -- actions and polls -------------------------------------------------------

    def perform(self, action: Action) -> None:
        kind = action.kind
        if kind == "none":
            return
        if kind == "set_handler":
            self.set_handler(action.target, action.handler)
        elif kind.startswith("bh_"):
            self.bh_op(kind, action.target)
        elif kind == "oneshot":
            self.oneshot(CallbackSpec())
        elif kind == "timer_mod":
            self.timer_mod(action.target, action.arg)
        elif kind == "timer_del":
            self.timers[action.target].delete()
        elif kind == "make_readable":
            self.make_readable(action.target)
        elif kind == "drain":
            self.drain(action.target)
        elif kind == "fill":
            self.fill(action.target)
        elif kind == "unfill":
            self.unfill(action.target)
        elif kind == "nested_poll":
            if self.depth < MAX_DEPTH:
                self.trace.append(("nest",))
                progress = self.poll(False)
                self.trace.append(("nested", progress))
        else:  # pragma: no cover
            raise AssertionError(kind)

    def poll(self, blocking: bool) -> bool:
        self.depth += 1
        try:
            if self.depth > 1:
                return self.ctx.poll(blocking)
            what = "poll(True) with something ready" if blocking else "poll(False)"
            try:
                with bounded(BLOCK_LIMIT_S, what):
                    return self.ctx.poll(blocking)
            except PollHung as exc:
                n, tail = len(self.trace), self.trace[-20:]
                raise PollHung(f"{exc}; the last of {n} trace items: {tail}") from None
        finally:
            self.depth -= 1
