"""The workloads of ``aiocore bench``: what each measures, against what, and its floor.

Every workload names a **baseline** (what a Python programmer would use
instead: stock asyncio, and uvloop when it is installed) and a **floor** (the
same system calls from a hand-written loop with no framework,
:mod:`aiocore.bench.raw`).  Each aiocore contender runs on one backend; the
floor of a backend is the raw loop on its system call (``auto``'s is the raw
loop of the backend it delegated to in that run).

The contenders of one workload do the same work per operation: the same
message reads and writes (:func:`os.read`/:func:`os.write`), locals bound the
same way, one counter.  Only the loop around them differs.

Sizes scale with ``--duration``; the timers workload keeps the issue's
density (200,000 timers per second of window) and reaches the full 200,000
timers within 1 s at ``--duration 0.25`` and above.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from . import raw
from .harness import (
    Case,
    Contender,
    Metric,
    NotAvailable,
    Sample,
    Settings,
    Workload,
    raise_nofile_limit,
)

__all__ = [
    "ECHO_SCRIPT",
    "FANOUT_PER_SECOND",
    "IDLE_SIZES",
    "TIMER_DENSITY",
    "WAKEUP_SCRIPT",
    "WORKLOADS",
    "find_script",
    "timer_size",
]

#: Idle fds beside the active pair in the idle-fd scaling workload.
IDLE_SIZES = (1, 64, 1024, 8192)
#: Timers per second of window (the issue: 200,000 within 1 s).
TIMER_DENSITY = 200_000
#: One-shot BH fan-out: N per second of ``--duration``, for every contender
#: alike (the rate depends on N).  About aiocore's rate on a 2-CPU VM, so
#: its run takes about ``--duration``; 100,000 at ``--duration 0.25``.
FANOUT_PER_SECOND = 400_000
#: Scripts of other workloads, found in the source tree's ``benchmarks/``.
WAKEUP_SCRIPT = "wakeup_latency.py"
ECHO_SCRIPT = "echo_server.py"

_UVLOOP_MISSING = "uvloop is not installed (pip install uvloop, or pip install 'aiocore[bench]')"

RATE_CALLBACKS = (Metric("rate", "callbacks/s", "callbacks/s", True),)
RATE_ROUND_TRIPS = (Metric("rate", "round trips/s", "round trips/s", True),)


def _rate(count: int, seconds: float) -> Sample:
    return {"rate": count / seconds, "count": float(count), "seconds": seconds}


def _uvloop() -> tuple[Callable[[], Any] | None, str | None]:
    try:
        import uvloop
    except ImportError:
        return None, _UVLOOP_MISSING
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory, None


def _asyncio_factory() -> Callable[[], Any]:
    import asyncio

    return asyncio.new_event_loop


def _loops() -> list[tuple[str, Callable[[], Any] | None, str | None]]:
    """The baselines: stock asyncio, and uvloop when installed."""
    uv, why = _uvloop()
    return [("asyncio", _asyncio_factory(), None), ("uvloop", uv, why)]


def _reraise(_ctx: Any, exc: BaseException) -> None:
    raise exc


def _context(backend: str, settings: Settings) -> Any:
    """A context on *backend* whose callback exceptions fail the run.

    By default aiocore logs an exception from a callback and goes on; a
    benchmark must not count a run whose callbacks failed, so the handler
    re-raises and ``poll()`` raises it (the harness records the failure).
    """
    from aiocore import AioContext

    ctx = AioContext(backend, registry=settings.registry)
    ctx.set_exception_handler(_reraise)
    return ctx


def _new_loop(factory: Callable[[], Any]) -> tuple[Any, list[BaseException]]:
    """A baseline loop whose callback exceptions stop it and fail the run.

    asyncio and uvloop log a callback's exception and go on, which would
    leave a ping-pong waiting forever (until the watchdog) with the cause
    buried in a log; here the first one stops the loop and is re-raised.
    """
    loop = factory()
    errors: list[BaseException] = []

    def handler(lp: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        errors.append(exc if exc is not None else RuntimeError(context.get("message")))
        lp.stop()

    loop.set_exception_handler(handler)
    return loop, errors


def _run_forever(loop: Any, errors: list[BaseException]) -> None:
    loop.run_forever()
    if errors:
        raise errors[0]


def _raw_families(settings: Settings) -> list[str]:
    """The raw loops that are floors of the selected backends (``auto``: all it may use)."""
    wanted: list[str] = []
    for b in settings.backends:
        fams = ["poll", "epoll", "io_uring"] if b == "auto" else [b]
        wanted.extend(f for f in fams if f not in wanted)
    return [f for f in ("poll", "epoll", "io_uring") if f in wanted]


def _floor_of(backend: str) -> str | None:
    # auto's floor depends on where it ran; the report resolves it from info.
    return f"raw {backend}" if backend in ("poll", "epoll", "io_uring") else None


# -- BH chain -------------------------------------------------------------------


def _aiocore_chain(
    backend: str, settings: Settings, info: dict[str, str]
) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        with _context(backend, settings) as ctx:
            count = 0

            def cb(_: object) -> None:
                nonlocal count
                count += 1
                if count < n:
                    schedule()

            bh = ctx.bh_new(cb)
            schedule = bh.schedule
            schedule()
            poll = ctx.poll
            t0 = time.perf_counter()
            while count < n:
                poll(True)
            dt = time.perf_counter() - t0
            info["runs_on"] = ctx.backend_name
            bh.delete()
        return _rate(count, dt)

    return run


def _loop_chain(factory: Callable[[], Any]) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        loop, errors = _new_loop(factory)
        try:
            count = 0
            call_soon = loop.call_soon
            stop = loop.stop

            def cb() -> None:
                nonlocal count
                count += 1
                if count < n:
                    call_soon(cb)
                else:
                    stop()

            call_soon(cb)
            t0 = time.perf_counter()
            _run_forever(loop, errors)
            dt = time.perf_counter() - t0
        finally:
            loop.close()
        return _rate(count, dt)

    return run


def _build_bh_chain(settings: Settings) -> list[Case]:
    contenders: list[Contender] = []
    for b in settings.backends:
        c = Contender(f"aiocore {b}", "aiocore", b, None, floor="deque loop")
        c.run = _aiocore_chain(b, settings, c.info)
        contenders.append(c)
    for name, factory, why in _loops():
        run = None if factory is None else _loop_chain(factory)
        contenders.append(Contender(name, "baseline", name, run, why))
    contenders.append(
        Contender("deque loop", "floor", "deque", lambda n: _rate(*raw.deque_chain(n)))
    )
    return [Case("", contenders, time_limit=_limit(settings))]


# -- one-shot BH fan-out ---------------------------------------------------------


def _aiocore_fanout(
    backend: str, settings: Settings, info: dict[str, str]
) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        with _context(backend, settings) as ctx:
            count = 0

            def cb(_: object) -> None:
                nonlocal count
                count += 1

            oneshot = ctx.bh_schedule_oneshot
            poll = ctx.poll
            t0 = time.perf_counter()
            for _ in range(n):
                oneshot(cb)
            while count < n:
                poll(True)
            dt = time.perf_counter() - t0
            info["runs_on"] = ctx.backend_name
        return _rate(count, dt)

    return run


def _loop_fanout(factory: Callable[[], Any]) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        loop, errors = _new_loop(factory)
        try:
            count = 0

            def cb() -> None:
                nonlocal count
                count += 1

            call_soon = loop.call_soon
            t0 = time.perf_counter()
            for _ in range(n):
                call_soon(cb)
            # Runs after the n callbacks, in the same iteration.
            call_soon(loop.stop)
            _run_forever(loop, errors)
            dt = time.perf_counter() - t0
        finally:
            loop.close()
        if count != n:
            raise RuntimeError(f"ran {count} of {n} callbacks")
        return _rate(count, dt)

    return run


def _build_bh_fanout(settings: Settings) -> list[Case]:
    contenders: list[Contender] = []
    for b in settings.backends:
        c = Contender(f"aiocore {b}", "aiocore", b, None, floor="deque loop")
        c.run = _aiocore_fanout(b, settings, c.info)
        contenders.append(c)
    for name, factory, why in _loops():
        contenders.append(
            Contender(
                name, "baseline", name, None if factory is None else _loop_fanout(factory), why
            )
        )
    contenders.append(
        Contender("deque loop", "floor", "deque", lambda n: _rate(*raw.deque_fanout(n)))
    )
    # Every scheduled callback is held in memory at once: cap the size.  That
    # also makes the rate depend on N (uvloop: 2.4 million callbacks/s at
    # 2,000, 0.6 million at a million), so every contender runs the same N.
    return [
        Case(
            "",
            contenders,
            max_size=2_000_000,
            size_per_second=FANOUT_PER_SECOND,
            time_limit=_limit(settings),
        )
    ]


# -- ping-pong (socketpair, eventfd) and idle fds -----------------------------------


def _aiocore_pingpong(
    backend: str, kind: str, settings: Settings, info: dict[str, str], idle: list[int]
) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        pair = raw.make_pair(kind)
        try:
            ra, wa, rb, wb, size, payload = (
                pair.ra, pair.wa, pair.rb, pair.wb, pair.size, pair.payload
            )  # fmt: skip
            read, write = os.read, os.write
            count = 0

            def on_a(_: object) -> None:
                read(ra, size)
                write(wa, payload)

            def on_b(_: object) -> None:
                nonlocal count
                read(rb, size)
                count += 1
                if count < n:
                    write(wb, payload)

            def never(_: object) -> None:
                raise AssertionError("an idle fd was reported readable")

            with _context(backend, settings) as ctx:
                for fd in idle:
                    ctx.set_fd_handler(fd, never)
                ctx.set_fd_handler(ra, on_a)
                ctx.set_fd_handler(rb, on_b)
                poll = ctx.poll
                # Let auto settle on the backend it will run on before timing.
                poll(False)
                write(wb, payload)
                t0 = time.perf_counter()
                while count < n:
                    poll(True)
                dt = time.perf_counter() - t0
                info["runs_on"] = ctx.backend_name
            return _rate(count, dt)
        finally:
            pair.close()

    return run


def _loop_pingpong(factory: Callable[[], Any], kind: str) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        pair = raw.make_pair(kind)
        loop, errors = _new_loop(factory)
        try:
            ra, wa, rb, wb, size, payload = (
                pair.ra, pair.wa, pair.rb, pair.wb, pair.size, pair.payload
            )  # fmt: skip
            read, write = os.read, os.write
            count = 0
            stop = loop.stop

            def on_a() -> None:
                read(ra, size)
                write(wa, payload)

            def on_b() -> None:
                nonlocal count
                read(rb, size)
                count += 1
                if count < n:
                    write(wb, payload)
                else:
                    stop()

            loop.add_reader(ra, on_a)
            loop.add_reader(rb, on_b)
            write(wb, payload)
            t0 = time.perf_counter()
            _run_forever(loop, errors)
            dt = time.perf_counter() - t0
            loop.remove_reader(ra)
            loop.remove_reader(rb)
        finally:
            loop.close()
            pair.close()
        return _rate(count, dt)

    return run


def _raw_pingpong(family: str, kind: str, idle: list[int]) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        pair = raw.make_pair(kind)
        try:
            if family == "io_uring":
                return _rate(*raw.raw_io_uring_pingpong(pair, n, idle))
            return _rate(*raw.pingpong(family, pair, n, idle))
        finally:
            pair.close()

    return run


def _raw_contenders(settings: Settings, kind: str, idle: list[int]) -> list[Contender]:
    out = []
    for fam in _raw_families(settings):
        why = None
        if fam == "io_uring":
            why = raw.io_uring_unavailable()
        elif fam == "epoll" and not hasattr(__import__("select"), "epoll"):
            why = "select.epoll is not available on this platform"
        run = None if why else _raw_pingpong(fam, kind, idle)
        out.append(Contender(f"raw {fam}", "floor", f"raw {fam}", run, why))
    return out


def _aiocore_pp_contenders(settings: Settings, kind: str, idle: list[int]) -> list[Contender]:
    out = []
    for b in settings.backends:
        c = Contender(f"aiocore {b}", "aiocore", b, None, floor=_floor_of(b))
        c.run = _aiocore_pingpong(b, kind, settings, c.info, idle)
        out.append(c)
    return out


def _build_pingpong(kind: str) -> Callable[[Settings], list[Case]]:
    def build(settings: Settings) -> list[Case]:
        if kind == "eventfd" and not hasattr(os, "eventfd"):
            raise OSError("os.eventfd is not available on this platform (Linux only)")
        contenders = _aiocore_pp_contenders(settings, kind, [])
        for name, factory, why in _loops():
            run = None if factory is None else _loop_pingpong(factory, kind)
            contenders.append(Contender(name, "baseline", name, run, why))
        contenders.extend(_raw_contenders(settings, kind, []))
        return [Case("", contenders, time_limit=_limit(settings))]

    return build


def _build_idle_fds(settings: Settings) -> list[Case]:
    sizes = (1, 64) if settings.quick else IDLE_SIZES
    cases = []
    for size in sizes:
        idle: list[int] = []
        closer: list[Callable[[], None]] = []
        params: dict[str, Any] = {"idle_fds": size}

        def setup(
            size: int = size,
            idle: list[int] = idle,
            closer: list[Any] = closer,
            params: dict[str, Any] = params,
        ) -> None:
            # The pair, a backend's own fds and the raw loops' rings come on top.
            enough, what = raise_nofile_limit(size + 64)
            params["rlimit_nofile"] = what
            if not enough:
                raise NotAvailable(f"cannot open {size} idle fds: {what}")
            fds, close = raw.open_idle_fds(size)
            idle[:] = fds
            closer.append(close)

        def teardown(idle: list[int] = idle, closer: list[Any] = closer) -> None:
            idle.clear()
            while closer:
                closer.pop()()

        contenders = _aiocore_pp_contenders(settings, "socketpair", idle)
        contenders.extend(_raw_contenders(settings, "socketpair", idle))
        cases.append(
            Case(
                f"{size} idle",
                contenders,
                params=params,
                start_size=20,
                time_limit=_limit(settings),
                setup=setup,
                teardown=teardown,
            )
        )
    return cases


# -- timers -----------------------------------------------------------------------

TIMER_METRICS = (
    Metric("span_s", "fire span", "s", False, ".3f"),
    Metric("p50_ms", "lateness p50", "ms", False, ".2f"),
    Metric("p99_ms", "lateness p99", "ms", False, ".1f"),
    Metric("arm_s", "arming", "s", False, ".3f"),
)


def timer_size(settings: Settings) -> tuple[int, float]:
    """``(timers, window seconds)``: 200,000 in 1 s from ``--duration 0.25``, same density below."""
    if settings.quick:
        return 200, 0.01
    window = min(1.0, 4 * settings.duration)
    return round(TIMER_DENSITY * window), window


def _timer_sample(
    times: list[int], deadlines: list[int], fired: int, arm_s: float, armed_ns: int
) -> Sample:
    if fired != len(deadlines):
        raise RuntimeError(f"{fired} of {len(deadlines)} timers fired")
    late = sorted(t - d for t, d in zip(times, deadlines, strict=True))
    n = len(late)
    return {
        "span_s": (max(times) - min(times)) / 1e9,
        "p50_ms": late[n // 2] / 1e6,
        "p99_ms": late[min(n - 1, (n * 99) // 100)] / 1e6,
        "max_ms": late[-1] / 1e6,
        "min_ms": late[0] / 1e6,
        "arm_s": arm_s,
        # > 0: arming ended after the first deadline (the lead was too short),
        # so the earliest timers were late for reasons outside the loop.
        "overrun_ms": max(0, armed_ns - min(deadlines)) / 1e6,
        "count": float(n),
        "seconds": (max(times) - min(deadlines)) / 1e9,
    }


class _Lead:
    """How far ahead the first deadline must lie so arming finishes before it.

    Arming 200,000 timers takes a good part of a second in Python; deadlines
    that fall due while the loop is still arming would be late for reasons
    that have nothing to do with the loop.  The lead is 2x the last
    measured arming time (the first run: an estimate) plus 20 ms.
    """

    def __init__(self, count: int) -> None:
        self.arm_s = count * 5e-6

    def start_ns(self) -> int:
        return time.monotonic_ns() + int((2 * self.arm_s + 0.05) * 1e9)


def _offsets(count: int, window: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    span = int(window * 1e9)
    return [int(rng.random() * span) for _ in range(count)]


def _aiocore_timers(
    backend: str, settings: Settings, info: dict[str, str], offsets: list[int], limit: float
) -> Callable[[int], Sample]:
    lead = _Lead(len(offsets))

    def run(n: int) -> Sample:
        from aiocore import Clock

        now = time.monotonic_ns
        times = [0] * n
        fired = 0

        def cb(i: int) -> None:
            nonlocal fired
            times[i] = now()
            fired += 1

        with _context(backend, settings) as ctx:
            t_arm = time.perf_counter()
            base = lead.start_ns()
            deadlines = [base + o for o in offsets]
            new = ctx.timer_new_ns
            realtime = Clock.REALTIME
            timers = []
            for i, d in enumerate(deadlines):
                t = new(realtime, cb, i)
                t.mod_ns(d)
                timers.append(t)
            lead.arm_s = arm_s = time.perf_counter() - t_arm
            armed_ns = time.monotonic_ns()
            poll = ctx.poll
            while fired < n:
                poll(True)
            info["runs_on"] = ctx.backend_name
            del timers
        return _timer_sample(times, deadlines, fired, arm_s, armed_ns)

    return run


def _loop_timers(factory: Callable[[], Any], offsets: list[int]) -> Callable[[int], Sample]:
    lead = _Lead(len(offsets))

    def run(n: int) -> Sample:
        import asyncio

        now = time.monotonic_ns
        times = [0] * n
        fired = 0
        loop, errors = _new_loop(factory)
        try:
            stop = loop.stop

            def cb(i: int) -> None:
                nonlocal fired
                times[i] = now()
                fired += 1
                if fired == n:
                    stop()

            # uvloop's clock is libuv's cached millisecond clock: refresh it
            # with one iteration, then map monotonic deadlines onto it.
            loop.run_until_complete(asyncio.sleep(0))
            t_arm = time.perf_counter()
            offset = loop.time() - time.monotonic()
            base = lead.start_ns()
            deadlines = [base + o for o in offsets]
            call_at = loop.call_at
            for i, d in enumerate(deadlines):
                call_at(d / 1e9 + offset, cb, i)
            lead.arm_s = arm_s = time.perf_counter() - t_arm
            armed_ns = time.monotonic_ns()
            _run_forever(loop, errors)
        finally:
            loop.close()
        return _timer_sample(times, deadlines, fired, arm_s, armed_ns)

    return run


def _raw_timers(offsets: list[int], limit: float) -> Callable[[int], Sample]:
    lead = _Lead(len(offsets))

    def run(n: int) -> Sample:
        now = time.monotonic_ns
        times = [0] * n
        fired = 0

        def cb(i: int) -> None:
            nonlocal fired
            times[i] = now()
            fired += 1

        t_arm = time.perf_counter()
        base = lead.start_ns()
        deadlines = [base + o for o in offsets]
        # Building the heap is the raw loop's arming.
        ready, armed_ns = raw.heap_timers(deadlines, cb, limit)
        lead.arm_s = arm_s = ready - t_arm
        return _timer_sample(times, deadlines, fired, arm_s, armed_ns)

    return run


def _timer_backends(settings: Settings) -> list[str]:
    if settings.explicit_backends:
        return list(settings.backends)
    # The backend hardly matters for timers: one real backend, plus auto.
    real = [b for b in settings.backends if b != "auto"]
    one = ["epoll"] if "epoll" in real else real[:1]
    return one + (["auto"] if "auto" in settings.backends else [])


def _build_timers(settings: Settings) -> list[Case]:
    count, window = timer_size(settings)
    seed = 5
    offsets = _offsets(count, window, seed)
    limit = window + count * 50e-6 + 30
    contenders = []
    for b in _timer_backends(settings):
        c = Contender(f"aiocore {b}", "aiocore", b, None, floor="raw heap loop")
        c.run = _aiocore_timers(b, settings, c.info, offsets, limit)
        contenders.append(c)
    for name, factory, why in _loops():
        run = None if factory is None else _loop_timers(factory, offsets)
        contenders.append(Contender(name, "baseline", name, run, why))
    contenders.append(Contender("raw heap loop", "floor", "raw heap", _raw_timers(offsets, limit)))
    params = {"timers": count, "window_s": window, "seed": seed}
    return [Case(f"{count:,} in {window:g} s", contenders, params, size=count, time_limit=limit)]


# -- workloads of other modules (wake-up latency, echo server) ------------------------


def find_script(name: str) -> Path | None:
    """``benchmarks/<name>`` of the source tree this aiocore runs from, or of the cwd.

    Those workloads live in scripts that spawn themselves as processes, so
    they need the file; an installed (non-editable) aiocore has no
    ``benchmarks/`` and the workload is then reported as not available.
    """
    import aiocore

    roots = [Path(aiocore.__file__).resolve().parent.parent, Path.cwd()]
    for root in roots:
        path = root / "benchmarks" / name
        if path.is_file():
            return path
    return None


def _load_script(path: Path) -> ModuleType:
    modname = f"_aiocore_bench_{path.stem}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _not_available(what: str, why: str) -> list[Case]:
    return [Case("", [Contender(what, "aiocore", "-", None, why)])]


def _build_wakeup(settings: Settings) -> list[Case]:
    path = find_script(WAKEUP_SCRIPT)
    if path is None:
        return _not_available(
            "wake-up latency",
            f"benchmarks/{WAKEUP_SCRIPT} is not in this installation "
            "(run aiocore bench from a source checkout)",
        )
    module = _load_script(path)
    hook = getattr(module, "bench_cases", None)
    if hook is None:
        return _not_available(
            "wake-up latency",
            f"{path} has no bench_cases(settings) function for aiocore bench to call",
        )
    cases: list[Case] = hook(settings)
    return cases


ECHO_METRICS = (
    Metric("cpu_us", "server CPU", "us/request", False, ".2f"),
    Metric("rps", "requests/s", "requests/s", True),
)


def _echo_run(module: ModuleType, name: str, args: Any) -> Callable[[int], Sample]:
    def run(_n: int) -> Sample:
        t0 = time.perf_counter()
        result = module.measure(name, args, True)
        return {
            "cpu_us": float(result["cpu_us"]),
            "rps": float(result["rps"]),
            "seconds": time.perf_counter() - t0,
        }

    return run


def _build_echo(settings: Settings) -> list[Case]:
    import argparse

    path = find_script(ECHO_SCRIPT)
    if path is None:
        return _not_available(
            "echo server",
            f"benchmarks/{ECHO_SCRIPT} is not in this installation "
            "(run aiocore bench from a source checkout)",
        )
    module = _load_script(path)
    # Each run starts a server and a client process (~0.3 s here, not
    # counted): the measured phase is kept short by default so the whole
    # command stays quick; --duration lengthens it.
    seconds = 0.05 if settings.quick else min(2.0, max(0.08, 4 * settings.duration))
    warmup = 0.02 if settings.quick else min(0.5, max(0.02, settings.duration))
    args = argparse.Namespace(clients=8, size=1024, seconds=seconds, warmup=warmup)
    contenders: list[Contender] = []
    for b in settings.backends:
        c = Contender(f"aiocore {b}", "aiocore", b, None, floor="raw epoll server")
        c.run = _echo_run(module, f"aiocore-{b}", args)
        contenders.append(c)
    for name, factory, why in _loops():
        run = None if factory is None else _echo_run(module, name, args)
        contenders.append(Contender(name, "baseline", name, run, why))
    contenders.append(
        Contender("raw epoll server", "floor", "raw epoll", _echo_run(module, "raw-epoll", args))
    )
    params = {"clients": 8, "message_bytes": 1024, "seconds": seconds, "warmup_s": warmup}
    return [
        Case(
            f"{8} clients, {seconds:g} s",
            contenders,
            params,
            size=1,
            time_limit=seconds + warmup + 60,
        )
    ]


def _limit(settings: Settings) -> float:
    # Generous: a run is sized for settings.duration; only a hang gets near this.
    return 30.0 + 50 * settings.duration


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "bh_chain",
            "BH chain",
            "a bottom half that reschedules itself from its own callback",
            "asyncio call_soon chain; uvloop call_soon chain",
            "a bare collections.deque loop",
            RATE_CALLBACKS,
            _build_bh_chain,
        ),
        Workload(
            "bh_fanout",
            "one-shot BH fan-out",
            "N one-shot BHs scheduled, then run by poll()",
            "asyncio call_soon of N callbacks; uvloop likewise",
            "N appends to a deque, then N pops",
            RATE_CALLBACKS,
            _build_bh_fanout,
        ),
        Workload(
            "socketpair",
            "socketpair ping-pong",
            "one byte back and forth over an AF_UNIX socketpair, a read handler each end",
            "asyncio add_reader; uvloop add_reader",
            "raw poll / epoll / io_uring loop on the same system call",
            RATE_ROUND_TRIPS,
            _build_pingpong("socketpair"),
        ),
        Workload(
            "eventfd",
            "eventfd ping-pong",
            "two eventfds, each side reads its own and writes the other's",
            "asyncio add_reader; uvloop add_reader",
            "raw poll / epoll / io_uring loop on the same system call",
            RATE_ROUND_TRIPS,
            _build_pingpong("eventfd"),
        ),
        Workload(
            "idle_fds",
            "idle-fd scaling",
            "socketpair ping-pong beside 1, 64, 1024, 8192 registered, never-ready eventfds",
            "the same contender at 1 idle fd (rate kept at 8192)",
            "raw poll / epoll / io_uring loop with the same idle fds",
            RATE_ROUND_TRIPS,
            _build_idle_fds,
            interleave=True,
        ),
        Workload(
            "timers",
            "timers",
            "REALTIME timers at seeded random deadlines; fire span and lateness",
            "asyncio call_at; uvloop call_at",
            "a heapq + epoll_wait loop",
            TIMER_METRICS,
            _build_timers,
        ),
        Workload(
            "wakeup",
            "cross-process wake-up latency",
            "another process wakes the loop; with and without adaptive polling",
            "asyncio; uvloop",
            "a raw epoll loop; for the shmring rows a raw ring consumer (same ring, "
            "no event loop) where the case has one; a raw spin on the index (lower bound)",
            (Metric("latency_us", "latency", "us", False, ".1f"),),
            _build_wakeup,
        ),
        Workload(
            "echo",
            "echo server (socket source)",
            "8 clients, 1 KiB request/response over loopback (benchmarks/echo_server.py)",
            "asyncio Protocol server; uvloop likewise",
            "a raw epoll server in Python",
            ECHO_METRICS,
            _build_echo,
        ),
    )
}
