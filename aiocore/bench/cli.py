"""``aiocore bench``: the command line of the benchmark harness.

Importing this module adds ``bench`` to :data:`aiocore._cli.COMMANDS`.  It
imports nothing heavy itself (no asyncio, no uvloop, no matplotlib) because
the CLI imports it for every subcommand; the workloads load when the command
runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from .._cli import COMMANDS

if sys.argv[:1] == ["-m"]:
    # ``python -m aiocore.bench.cli`` (sys.argv[0] is "-m" while runpy looks
    # for the module): runpy imports the package, whose __init__ imports this
    # module, then runs this file again as __main__ and warns that it found it
    # imported.  Expected here, and harmless: the second copy only
    # re-registers the same command.
    import warnings

    warnings.filterwarnings(
        "ignore",
        message=r"'aiocore\.bench\.cli' found in sys\.modules after import of package",
        category=RuntimeWarning,
    )

__all__ = ["DEFAULT_DURATION", "add_arguments", "main", "run"]

#: Seconds per run of a rate workload by default: the whole default run
#: (every workload on every backend here, 5 repeats) then takes about 35 s
#: on a 2-CPU machine, half of it in the echo benchmark's server and client processes.
DEFAULT_DURATION = 0.02
#: Seconds per run with ``--quick``.
QUICK_DURATION = 0.002


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``aiocore bench``."""
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME",
        help="run only this workload (repeatable; default: all; --list shows them)",
    )
    p.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="measure aiocore on this backend (repeatable; default: every available one)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        metavar="N",
        help="alternating runs per contender; the median is reported (default 5)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"target seconds per run (default {DEFAULT_DURATION}); sizes scale with it, "
        "and 0.25 or more runs the full 200,000 timers within 1 s",
    )
    p.add_argument(
        "--size",
        type=int,
        default=0,
        metavar="N",
        help="fixed iterations/round trips per run of the rate workloads, instead of "
        "sizing each run to --duration (0: size to --duration)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print every raw sample, median, spread and ratio as JSON instead of tables",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the idle-fd scaling curves and the ratio bars (needs matplotlib)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one check that everything runs (the numbers mean nothing)",
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help="do not record the io_uring/epoll ratio that auto's choice reads",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")


class _LogCapture(logging.Handler):
    """Collects what aiocore logs during the run (auto's upgrades at INFO, warnings).

    Printed as it happens, a backend switch in the middle of the progress bar
    is noise; dropped, a warning would be a hidden fact.  So the messages are
    counted (the context's repr removed, so repeats collapse) and reported
    after the tables and in the JSON.
    """

    _REPR = re.compile(r"<AioContext [^>]*>: ")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self._REPR.sub("", record.getMessage())
        except Exception:
            message = str(record.msg)
        self.counts[(record.levelname, message)] += 1

    def as_list(self) -> list[dict[str, Any]]:
        return [
            {"level": level, "message": message, "count": count}
            for (level, message), count in self.counts.most_common()
        ]


@contextlib.contextmanager
def _captured_log() -> Iterator[_LogCapture]:
    handler = _LogCapture()
    logger = logging.getLogger("aiocore")
    level = logger.level
    if not level or level > logging.INFO:
        logger.setLevel(logging.INFO)  # auto's upgrades are INFO records
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _err(msg: str) -> int:
    sys.stderr.write(f"aiocore bench: {msg}\n")
    return 2


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``aiocore bench``; return the exit status (1 if any contender failed)."""
    from .. import measurements
    from .._errors import UnknownBackendError
    from .._plugins import default_registry
    from . import harness, report
    from .workloads import WORKLOADS

    if args.list:
        for w in WORKLOADS.values():
            out.write(f"{w.name:11} {w.title}: {w.description}\n")
            out.write(f"{'':11} baseline: {w.baseline}; floor: {w.floor}\n")
        return 0
    if args.repeat < 1:
        return _err(f"--repeat must be at least 1, got {args.repeat}")
    duration = args.duration
    if duration is None:
        duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    if not 0 < duration <= 60:
        return _err(f"--duration must be in (0, 60] seconds, got {duration}")
    if args.size < 0:
        return _err(f"--size must be 0 (size to --duration) or positive, got {args.size}")
    names = [_normalize(n) for n in args.workload] if args.workload else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        return _err(f"unknown workload {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    names = list(dict.fromkeys(names))
    if args.plot:
        missing = report.matplotlib_missing()
        if missing:
            sys.stderr.write(f"aiocore bench: {missing}\n")
            return 1
    registry = default_registry()
    not_available = {}
    backends = []
    for b in registry.backends:
        why = registry.probe(b)
        if why is None:
            backends.append(b)
        else:
            not_available[b] = why
    if args.backend:
        wanted = list(dict.fromkeys(args.backend))
        try:
            # The registry's check: its message says why a name is missing
            # (a blocked plugin, or one that did not load).
            registry.check_backend_names(wanted)
        except UnknownBackendError as exc:
            return _err(str(exc))
        absent = [b for b in wanted if b in not_available]
        if absent:
            for b in absent:
                sys.stderr.write(
                    f"aiocore bench: backend {b} is not available: {not_available[b]}\n"
                )
            return 1
        backends = wanted
        not_available = {}
    settings = harness.Settings(
        backends=backends,
        repeat=args.repeat,
        duration=duration,
        quick=args.quick,
        size=args.size,
        registry=registry,
        explicit_backends=bool(args.backend),
    )
    settings_json: dict[str, Any] = {
        "workloads": names,
        "backends": backends,
        "backends_not_available": not_available,
        "repeat": args.repeat,
        "duration": duration,
        "quick": args.quick,
        "size": args.size,
    }
    env = harness.environment()
    t0 = time.perf_counter()
    with _captured_log() as log:
        results = harness.run_workloads([WORKLOADS[n] for n in names], settings)
    wall = time.perf_counter() - t0
    env["loadavg_end"] = harness._loadavg()
    failed = [
        f"{r.workload.name}{' ' + case.label if case.label else ''}: {c.name}: {c.error}"
        for r in results
        for case in r.cases
        for c in case.contenders
        if c.status == "failed"
    ] + [
        f"{r.workload.name}: {case.error}"
        for r in results
        for case in r.cases
        if case.error and not case.contenders
    ]
    items = report.summary(results)
    recorded = record_error = None
    if not args.quick and not args.no_record:
        try:
            recorded = _record(results, settings_json, measurements)
        except OSError as exc:
            # An unwritable AIOCORE_MEASUREMENTS (a directory, no permission):
            # the tables are still printed, the failure is said after them.
            record_error = (
                f"could not record the io_uring/epoll ping-pong ratio in "
                f"{measurements.path()}: {exc.strerror or exc} "
                "(--no-record measures without recording)"
            )
    status = 1 if failed or record_error else 0
    if args.json:
        json.dump(
            {
                "environment": env,
                "settings": settings_json,
                "wall_seconds": wall,
                "workloads": report.to_json(results),
                "summary": items,
                "recorded": recorded,
                "record_error": record_error,
                "log": log.as_list(),
                "failures": failed,
                "exit_status": status,
            },
            out,
            indent=2,
            default=str,
        )
        out.write("\n")
    else:
        report.write_header(env, settings_json, out)
        report.write_table(results, args.repeat, out)
        report.write_summary(items, out)
        if recorded:
            out.write(f"\n{recorded}\n")
        logged = log.as_list()
        if logged:
            out.write("\naiocore logged during the run:\n")
            for entry in logged[:8]:
                out.write(f"  {entry['count']:5} x {entry['level']}: {entry['message']}\n")
            if len(logged) > 8:
                out.write(f"  ... and {len(logged) - 8} more distinct messages (--json has all)\n")
        out.write(f"\nwall time {wall:.1f} s; load {env['loadavg_end']} at the end\n")
        if failed:
            out.write(f"{len(failed)} contender(s) FAILED:\n")
            for f in failed:
                out.write(f"  {f}\n")
    if args.plot:
        title = (
            f"aiocore bench {env['date']}: {env['cpu_model']}, {env['kernel']}, "
            f"{env['python']}; median of {args.repeat}"
        )
        report.plot(results, args.plot, title)
        if not args.json:
            out.write(f"plot written to {args.plot}\n")
    if record_error:
        out.flush()
        sys.stderr.write(f"aiocore bench: {record_error}\n")
    return status


def _record(results: Any, settings: dict[str, Any], measurements: Any) -> str | None:
    """Record the io_uring/epoll socketpair ping-pong ratio that ``auto`` reads."""
    from . import report

    for r in results:
        if r.workload.name != "socketpair" or not r.cases:
            continue
        case = r.cases[0]
        iou, ep = case.get("aiocore io_uring"), case.get("aiocore epoll")
        if iou is None or ep is None:
            return None
        value = report.ratio(iou, ep, r.workload.metrics[0])
        if value is None:
            return None
        path = measurements.record(
            measurements.IO_URING_VS_EPOLL,
            round(value, 3),
            source="aiocore bench: socketpair ping-pong, io_uring backend / epoll backend",
            repeat=settings["repeat"],
            duration=settings["duration"],
        )
        verdict = "starts on io_uring" if value >= 1.0 else "keeps poll-then-epoll"
        return (
            f"recorded io_uring/epoll ping-pong ratio {value:.2f} in {path}: "
            f"auto {verdict} here (it needs >= 1.0)"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m aiocore.bench`` or ``python -m aiocore.bench.cli``: ``aiocore bench``."""
    parser = argparse.ArgumentParser(prog="aiocore bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), sys.stdout)


COMMANDS["bench"] = (
    "measure aiocore's backends against asyncio, uvloop and raw loops",
    add_arguments,
    run,
)

if __name__ == "__main__":
    sys.exit(main())
