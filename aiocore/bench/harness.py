"""The benchmark harness: alternation, calibration, medians, spreads, failures.

How a measurement is made, and why:

* **Alternation.**  The contenders of one case run A, B, C, A, B, C, ... one
  run each per repeat, never all of A's runs first.  A shared machine drifts
  (another process starts, the CPU clocks down, the page cache fills); when
  the contenders take turns, drift hits all of them alike instead of
  favouring whoever ran in the quiet minute.
* **Calibration** (workloads measured as a rate).  Each contender first runs
  with a small size that grows until one run takes a measurable time; the
  size for the real runs is then chosen so that one run takes about
  ``duration`` seconds.  Slow contenders (poll with 8192 idle fds) and fast
  ones (a bare deque) both get a run long enough to measure and short enough
  to bound the whole benchmark.  The calibration runs double as the warm-up
  and are not counted.
* **One size for all where the rate depends on it.**  Calibrating each
  contender to its own size is fair only where a rate does not depend on the
  size (a ping-pong round trip costs the same at any count).  A fan-out
  holds all N callbacks at once, and uvloop runs 2,000 of them four times
  faster per callback than a million: there every contender runs the same
  N, ``Case.size_per_second`` times ``duration``.  A fixed number rather than
  the smallest calibrated size, because that one moves with the noise of
  the calibration runs and the rate moves with it.  A warm-up run at a tenth
  of N precedes the counted runs, as for ``--size``.
* **Medians of the repeats, with the min-max spread.**  The median ignores a
  run that a scheduler hiccup spoilt; the spread says how much to trust it.
  Nothing is averaged away and every raw sample is kept (``--json``).
* **Nothing pinned that cannot be.**  The harness does not pin CPUs, change
  frequency governors or disable the GC; it records the CPU model, the CPUs
  it may run on, the load average before and after, the kernel and the
  Python build, so a reader can judge the numbers.  ``gc.collect()`` runs
  before each run so every run starts from the same heap.
* **No hidden failure.**  A contender that raises is recorded as failed with
  its error, its remaining runs are skipped, and the command's exit status is
  non-zero.  A contender that cannot run here (uvloop not installed, no
  liburing) is shown as *not available* with the reason; it is not a failure
  unless it was asked for by name.
* **Every run is bounded** in count (its size) and in time: a watchdog
  (``SIGALRM``, main thread only) interrupts a run that exceeds its case's
  limit, so a lost wake-up shows up as a failed contender, not a hung command.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import resource
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

__all__ = [
    "Case",
    "CaseResult",
    "Contender",
    "ContenderResult",
    "Metric",
    "NotAvailable",
    "Progress",
    "RunTimeout",
    "Sample",
    "Settings",
    "Workload",
    "WorkloadResult",
    "environment",
    "raise_nofile_limit",
    "run_case",
    "run_cases",
    "run_workloads",
]

#: One run's measurements, by metric key (``"rate"``, ``"span_s"``, ...).
Sample = dict[str, float]
Role = Literal["aiocore", "baseline", "floor"]
Status = Literal["ok", "failed", "not available"]


@dataclass(frozen=True)
class Metric:
    """One quantity a workload reports; the first of a workload's is the primary one."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: ``format`` spec for the table (the JSON keeps full precision).
    fmt: str = ",.0f"


@dataclass
class Contender:
    """One thing measured in a case: aiocore on a backend, a baseline, or a floor.

    *run* takes the size (iterations, round trips...) and returns a
    :data:`Sample`; it creates and releases everything it uses itself.  It may
    write facts it learnt into *info* (``runs_on``: the backend ``auto``
    delegated to).  ``run is None`` means not available, *unavailable* says
    why.  *floor* names the floor contender of an aiocore contender (for
    ``auto`` it is decided from ``info["runs_on"]`` after the runs).
    """

    name: str
    role: Role
    family: str
    run: Callable[[int], Sample] | None
    unavailable: str | None = None
    floor: str | None = None
    info: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    """One alternation group: the contenders of a workload at one set of parameters."""

    label: str
    contenders: list[Contender]
    params: dict[str, Any] = field(default_factory=dict)
    #: Fixed size for every run; ``None``: calibrate to the target duration.
    size: int | None = None
    #: Calibration starts here (small enough for the slowest contender).
    start_size: int = 100
    #: Largest size calibration may pick (bounds memory, e.g. fan-out lists).
    max_size: int = 10_000_000
    #: The rate depends on the size: instead of calibrating, every contender
    #: runs ``size_per_second * duration`` (within ``start_size`` and
    #: ``max_size``), recorded as ``params["size_per_run"]``; ``--size``
    #: still overrides it.
    size_per_second: int | None = None
    #: Seconds a single run may take before the watchdog fails it.
    time_limit: float = 60.0
    #: Acquire shared resources (idle fds) before the runs; release after.
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None


@dataclass
class Workload:
    """A benchmark: what it measures, its baseline and floor, and how to build its cases."""

    name: str
    title: str
    description: str
    baseline: str
    floor: str
    metrics: tuple[Metric, ...]
    build: Callable[[Settings], list[Case]]
    #: Alternate across the cases too (:func:`run_cases`), because the
    #: workload's figure compares the cases with each other.
    interleave: bool = False


@dataclass
class Settings:
    """What to run and how long; the CLI fills it from its options."""

    #: aiocore backends to measure (each available here).
    backends: list[str]
    repeat: int = 5
    #: Target seconds per run of a rate workload; sizes of the fixed ones scale with it.
    duration: float = 0.02
    #: Tiny sizes: checks that everything runs; the numbers mean nothing.
    quick: bool = False
    #: Fixed size per run of the rate workloads instead of calibrating (0: calibrate).
    size: int = 0
    #: Registry for the aiocore contexts (``None``: the process's default).
    registry: Any = None
    #: The backends were named by the user (``--backend``), not defaulted.
    explicit_backends: bool = False


class NotAvailable(Exception):
    """Raised by a case's setup when this machine cannot run it (a limit, a missing feature).

    Its contenders are then shown as *not available* with the message, like a
    missing optional dependency, instead of failed.
    """


class RunTimeout(KeyboardInterrupt):
    """A run exceeded its time limit (raised by the watchdog's ``SIGALRM`` handler).

    It derives from :class:`KeyboardInterrupt` because asyncio and uvloop
    re-raise only ``SystemExit`` and ``KeyboardInterrupt`` from a callback
    (anything else is logged and the loop goes on), and aiocore re-raises any
    ``BaseException``: so the interruption reaches the harness from whatever
    loop is running.  The harness catches it before a real Ctrl-C would be.
    """


@dataclass
class ContenderResult:
    """Everything measured for one contender in one case."""

    name: str
    role: Role
    family: str
    status: Status = "ok"
    error: str | None = None
    size: int | None = None
    samples: list[Sample] = field(default_factory=list)
    calibration: list[tuple[int, Sample]] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    floor: str | None = None

    def stat(self, key: str) -> tuple[float, float, float] | None:
        """``(median, min, max)`` of metric *key* over the counted runs, or ``None``."""
        values = [s[key] for s in self.samples if key in s and math.isfinite(s[key])]
        if not values or self.status != "ok":
            return None
        return statistics.median(values), min(values), max(values)


@dataclass
class CaseResult:
    """The results of one case, contenders in their alternation order."""

    label: str
    params: dict[str, Any]
    contenders: list[ContenderResult]
    error: str | None = None

    def get(self, name: str) -> ContenderResult | None:
        """The contender called *name*, if it is in this case."""
        for c in self.contenders:
            if c.name == name:
                return c
        return None


@dataclass
class WorkloadResult:
    """A workload's description and the results of each of its cases."""

    workload: Workload
    cases: list[CaseResult]
    seconds: float = 0.0


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not a TTY.

    Plain text (``[#####-----]``), redrawn with a carriage return, cleared at
    the end, so it never ends up in a log or a pipe.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self._last = 0

    def step(self, label: str, count: int = 1) -> None:
        """Advance by *count* steps and show *label* as what runs next."""
        self.done = min(self.done + count, self.total)
        self.show(label)

    def show(self, label: str) -> None:
        """Redraw the bar with *label*."""
        if not self.enabled:
            return
        frac = self.done / self.total
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {frac * 100:3.0f}% {label}"
        cols = 0
        with contextlib.suppress(OSError, ValueError, AttributeError):
            cols = os.get_terminal_size(self.stream.fileno()).columns
        if cols <= 0:  # a terminal that does not know its size
            cols = 100
        line = line[: max(cols - 1, 20)]
        pad = " " * max(self._last - len(line), 0)
        self._last = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar."""
        if self.enabled and self._last:
            self.stream.write("\r" + " " * self._last + "\r")
            self.stream.flush()
            self._last = 0


# -- watchdog -------------------------------------------------------------------


@contextlib.contextmanager
def _watchdog(limit: float) -> Iterator[None]:
    """Raise :class:`RunTimeout` in the main thread if the block runs past *limit* seconds.

    After the first expiry the timer repeats every 0.25 s, in case the first
    interruption landed where it was swallowed.  Off the main thread (signals
    are delivered there only) the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def on_alarm(_signum: int, _frame: object) -> None:
        raise RunTimeout(f"did not finish within {limit:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    old_timer = signal.setitimer(signal.ITIMER_REAL, limit, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)
        signal.signal(signal.SIGALRM, previous)


def _describe(exc: BaseException) -> str:
    # The last frame names where it broke; the message says what.
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


# -- running --------------------------------------------------------------------


def _one_run(contender: Contender, size: int, limit: float) -> Sample:
    run = contender.run
    assert run is not None
    gc.collect()
    with _watchdog(limit):
        sample = run(size)
    if "seconds" in sample and sample["seconds"] <= 0:
        raise RuntimeError(f"measured a non-positive time ({sample['seconds']!r} s)")
    return sample


def _calibrate(
    contender: Contender, case: Case, duration: float
) -> tuple[int, list[tuple[int, Sample]]]:
    """Grow the size until a run takes a measurable time; return the size for *duration*."""
    size = max(1, case.start_size)
    tried: list[tuple[int, Sample]] = []
    # Long enough that timer resolution and one-off costs do not dominate.
    enough = max(duration / 4, 0.0005)
    for _ in range(12):
        sample = _one_run(contender, size, case.time_limit)
        tried.append((size, sample))
        seconds = sample["seconds"]
        if seconds >= enough or size >= case.max_size:
            break
        factor = enough / seconds if seconds > 0 else 16.0
        size = min(case.max_size, int(size * min(max(factor * 1.2, 2.0), 16.0)) + 1)
    size, sample = tried[-1]
    per_op = sample["seconds"] / size
    target = int(duration / per_op) if per_op > 0 else size
    return max(1, min(case.max_size, target)), tried


def _warm_up(contender: Contender, case: Case, size: int) -> tuple[float, list[tuple[int, Sample]]]:
    """One run at a tenth of the fixed *size*; return the time limit it implies.

    A fixed size (``--size``, ``Case.size_per_second``) can take far longer
    than the case's usual limit, which assumes calibrated runs; the warm-up's
    rate sets a limit of 20 times the expected run time instead.
    """
    small = max(1, size // 10)
    sample = _one_run(contender, small, case.time_limit + 600)
    expected = sample["seconds"] / small * size
    return max(case.time_limit, 20 * expected + 10), [(small, sample)]


class _CaseRun:
    """One case in progress, in phases, so that several cases can be interleaved."""

    def __init__(
        self, case: Case, settings: Settings, progress: Progress | None, label: str
    ) -> None:
        self.case, self.settings, self.progress, self.label = case, settings, progress, label
        results = [
            ContenderResult(c.name, c.role, c.family, floor=c.floor, info=c.info)
            for c in case.contenders
        ]
        self.runnable: list[tuple[Contender, ContenderResult]] = []
        for c, r in zip(case.contenders, results, strict=True):
            if c.run is None:
                r.status = "not available"
                r.error = c.unavailable or "not available"
            else:
                self.runnable.append((c, r))
        # The same dict: a setup may note what it did (the RLIMIT_NOFILE change).
        self.result = CaseResult(case.label, case.params, results)
        self.limits: dict[str, float] = {}
        self.open = False

    def _step(self, count: int = 1) -> None:
        if self.progress is not None:
            self.progress.step(self.label, count)

    def _show(self, what: str) -> None:
        if self.progress is not None:
            self.progress.show(f"{self.label}{what}")

    def start(self) -> None:
        """Acquire the case's shared resources; on failure every contender failed."""
        if not self.runnable:
            return
        try:
            if self.case.setup is not None:
                self.case.setup()
        except NotAvailable as exc:
            for _, r in self.runnable:
                r.status, r.error = "not available", str(exc)
            self._step(len(self.runnable) * (self.settings.repeat + 1))
            self.runnable = []
            return
        except Exception as exc:
            self.result.error = _describe(exc)
            for _, r in self.runnable:
                r.status = "failed"
                r.error = f"case setup failed: {self.result.error}"
            self._step(len(self.runnable) * (self.settings.repeat + 1))
            self.runnable = []
            return
        self.open = True

    def calibrate(self) -> None:
        """Choose each contender's size (calibration doubles as the warm-up)."""
        case, settings = self.case, self.settings
        # One size for every contender: --size, or the case's own where its
        # rate depends on the size; None: each contender calibrates its own.
        fixed: int | None = None
        if settings.size:
            fixed = min(settings.size, case.max_size)
        elif case.size_per_second is not None:
            per_run = round(case.size_per_second * settings.duration)
            fixed = min(max(case.start_size, per_run), case.max_size)
        if case.size_per_second is not None:
            self.result.params["size_per_run"] = case.size if case.size is not None else fixed
        for c, r in self.runnable:
            self._show(f"{c.name} (calibrating)")
            try:
                if case.size is not None:
                    r.size = case.size
                elif fixed:
                    r.size = fixed
                    self.limits[c.name], r.calibration = _warm_up(c, case, r.size)
                else:
                    r.size, r.calibration = _calibrate(c, case, settings.duration)
            except (Exception, RunTimeout) as exc:
                r.status, r.error = "failed", _describe(exc)
            self._step()

    def repeat(self, i: int) -> None:
        """Run each contender once (repeat *i*), in order."""
        for c, r in self.runnable:
            if r.status != "ok":
                self._step()
                continue
            self._show(f"{c.name} ({i + 1}/{self.settings.repeat})")
            assert r.size is not None
            try:
                limit = self.limits.get(c.name, self.case.time_limit)
                r.samples.append(_one_run(c, r.size, limit))
            except (Exception, RunTimeout) as exc:
                r.status, r.error = "failed", f"run {i + 1}: {_describe(exc)}"
            self._step()

    def finish(self) -> None:
        """Release the shared resources (idempotent)."""
        if self.open:
            self.open = False
            if self.case.teardown is not None:
                self.case.teardown()


def run_case(
    case: Case,
    settings: Settings,
    progress: Progress | None = None,
    label: str = "",
) -> CaseResult:
    """Run one case: calibrate (rate cases), then alternate the contenders *repeat* times."""
    return run_cases([case], settings, progress, [label])[0]


def run_cases(
    cases: Sequence[Case],
    settings: Settings,
    progress: Progress | None = None,
    labels: Sequence[str] | None = None,
) -> list[CaseResult]:
    """Run *cases* interleaved: each repeat runs every contender of every case once.

    A workload whose figure compares its cases with each other (the idle-fd
    scaling: the rate at 8192 idle fds over the rate at 1) needs the
    alternation across cases too; otherwise drift between the minute the
    1-fd case ran and the minute the 8192-fd case ran would be read as
    scaling.  The shared resources of all cases are held at once.
    """
    names = list(labels) if labels is not None else [""] * len(cases)
    runs = [_CaseRun(c, settings, progress, lb) for c, lb in zip(cases, names, strict=True)]
    try:
        for run in runs:
            run.start()
        for run in runs:
            run.calibrate()
        for i in range(settings.repeat):
            for run in runs:
                run.repeat(i)
    finally:
        for run in runs:
            run.finish()
    return [run.result for run in runs]


def count_steps(cases: Sequence[Case], repeat: int) -> int:
    """Progress steps for *cases*: one calibration and *repeat* runs per runnable contender."""
    return sum(
        (repeat + 1) * sum(1 for c in case.contenders if c.run is not None) for case in cases
    )


def run_workloads(
    workloads: Sequence[Workload],
    settings: Settings,
    progress_stream: TextIO | None = None,
) -> list[WorkloadResult]:
    """Build and run every case of every workload, in order, with one progress bar."""
    built: list[tuple[Workload, list[Case] | BaseException]] = []
    for w in workloads:
        try:
            built.append((w, w.build(settings)))
        except Exception as exc:
            built.append((w, exc))
    total = sum(count_steps(c, settings.repeat) for _, c in built if isinstance(c, list))
    progress = Progress(total, progress_stream)
    out: list[WorkloadResult] = []
    try:
        for w, cases in built:
            t0 = time.perf_counter()
            if isinstance(cases, BaseException):
                failed = CaseResult("", {}, [], error=f"could not build: {_describe(cases)}")
                out.append(WorkloadResult(w, [failed]))
                continue
            labels = [f"{w.name}{' ' + case.label if case.label else ''}: " for case in cases]
            if w.interleave:
                results = run_cases(cases, settings, progress, labels)
            else:
                results = [
                    run_case(case, settings, progress, label)
                    for case, label in zip(cases, labels, strict=True)
                ]
            out.append(WorkloadResult(w, results, time.perf_counter() - t0))
    finally:
        progress.close()
    return out


# -- environment ------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def raise_nofile_limit(needed: int) -> tuple[bool, str]:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard limit so *needed* more fds fit.

    Returns ``(enough, what happened)``; the soft limit is raised only as far
    as needed (plus headroom) and never beyond the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    want = in_use + needed + 256
    if soft == resource.RLIM_INFINITY or soft >= want:
        return True, f"RLIMIT_NOFILE soft limit {soft} is enough for {needed} more fds"
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError) as exc:
        return False, f"could not raise RLIMIT_NOFILE from {soft} to {new}: {exc}"
    if new < want:
        return False, (
            f"RLIMIT_NOFILE is at its hard limit {hard}, short of the {want} needed for "
            f"{needed} more fds ({in_use} in use); raise the hard limit (ulimit -Hn) to measure"
        )
    return True, f"RLIMIT_NOFILE soft limit raised from {soft} to {new} for {needed} more fds"


def environment() -> dict[str, Any]:
    """Facts that decide how the numbers should be read (recorded, not controlled)."""
    import aiocore

    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": " ".join(platform.python_build()),
        "executable": sys.executable,
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "aiocore": aiocore.__version__,
        "loadavg_start": _loadavg(),
        "gc": "enabled, collected before each run" if gc.isenabled() else "disabled",
    }
    if hasattr(os, "sched_getaffinity"):
        env["affinity"] = sorted(os.sched_getaffinity(0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    env["rlimit_nofile"] = [soft, hard]
    try:
        import uvloop

        env["uvloop"] = getattr(uvloop, "__version__", "installed")
    except ImportError:
        env["uvloop"] = None
    return env
