"""``aiocore bench``: every workload runs, the output parses, failures are not hidden.

Benchmarks are not tests: nothing here asserts on speed.  These tests run each
workload at tiny sizes (``--quick``) and check that the numbers are sane
(positive, finite, ordered where they must be), that the JSON holds what was
asked for, that a failing or hanging contender is reported with its error and
makes the exit status non-zero, and that the optional dependencies fail with
a message that says what to install.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import aiocore
from aiocore import _plugins, measurements
from aiocore._cli import main
from aiocore.bench import harness, raw, report, workloads

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
RATE_WORKLOADS = ("bh_chain", "bh_fanout", "socketpair", "eventfd", "idle_fds")


@pytest.fixture(autouse=True)
def fresh_default_registry() -> None:
    # The CLI uses the process's default registry; rebuild it per test.
    _plugins.reset_default_registry()


def bench(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["bench", *argv], out)
    return status, out.getvalue()


def quick_settings(backend: str, registry: aiocore.PluginRegistry) -> harness.Settings:
    return harness.Settings(
        backends=[backend], repeat=1, duration=0.002, quick=True, registry=registry
    )


def check_sane(result: harness.WorkloadResult) -> None:
    """Every contender ran (or says why it could not) and its numbers are plausible."""
    assert result.cases
    for case in result.cases:
        assert case.error is None, case.error
        for c in case.contenders:
            if c.status == "not available":
                assert c.error, f"{c.name} is not available without a reason"
                assert c.role != "aiocore" or result.workload.name == "wakeup", c.name
                continue
            assert c.status == "ok", f"{c.name}: {c.error}"
            assert c.samples, c.name
            for sample in c.samples:
                for key, value in sample.items():
                    assert math.isfinite(value), (c.name, key, value)
                assert sample.get("seconds", 1.0) > 0
            primary = result.workload.metrics[0]
            median, lo, hi = c.stat(primary.key) or (math.nan, math.nan, math.nan)
            assert lo <= median <= hi
            if primary.higher_is_better:
                assert median > 0, c.name


@pytest.mark.parametrize("name", [*RATE_WORKLOADS, "timers"])
def test_workload_runs_on_each_backend(
    name: str, backend: str, registry: aiocore.PluginRegistry
) -> None:
    settings = quick_settings(backend, registry)
    [result] = harness.run_workloads([workloads.WORKLOADS[name]], settings)
    check_sane(result)
    case = result.cases[0]
    mine = case.get(f"aiocore {backend}")
    assert mine is not None and mine.status == "ok", mine
    if name != "timers":
        assert mine.samples[0]["count"] == mine.size
    if name == "idle_fds":
        assert [c.params["idle_fds"] for c in result.cases] == [1, 64]


def test_timer_numbers_are_consistent(registry: aiocore.PluginRegistry) -> None:
    settings = quick_settings("epoll", registry)
    [result] = harness.run_workloads([workloads.WORKLOADS["timers"]], settings)
    check_sane(result)
    count, window = workloads.timer_size(settings)
    for c in result.cases[0].contenders:
        if c.status != "ok":
            continue
        s = c.samples[0]
        assert s["count"] == count
        # Every timer fired, none before the loop could see it (uvloop's
        # millisecond clock may look up to ~1 ms early), the order holds.
        assert s["min_ms"] > -5
        assert s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert 0 <= s["span_s"] < window + 5


def test_timer_size_reaches_the_full_workload() -> None:
    full = harness.Settings(backends=[], duration=0.25)
    assert workloads.timer_size(full) == (200_000, 1.0)
    assert workloads.timer_size(harness.Settings(backends=[], duration=2.0)) == (200_000, 1.0)
    small = workloads.timer_size(harness.Settings(backends=[], duration=0.02))
    assert small[0] == round(small[1] * 200_000)


def test_echo_workload_runs(registry: aiocore.PluginRegistry) -> None:
    if workloads.find_script(workloads.ECHO_SCRIPT) is None:
        pytest.skip("benchmarks/echo_server.py is not in this tree")
    settings = quick_settings("epoll", registry)
    [result] = harness.run_workloads([workloads.WORKLOADS["echo"]], settings)
    check_sane(result)
    epoll = result.cases[0].get("aiocore epoll")
    assert epoll is not None
    assert epoll.samples[0]["rps"] > 0
    assert epoll.samples[0]["cpu_us"] > 0


def test_wakeup_is_reported_not_faked(registry: aiocore.PluginRegistry) -> None:
    [result] = harness.run_workloads(
        [workloads.WORKLOADS["wakeup"]], quick_settings("epoll", registry)
    )
    check_sane(result)
    if workloads.find_script(workloads.WAKEUP_SCRIPT) is None:
        [row] = result.cases[0].contenders
        assert row.status == "not available"
        assert row.error is not None and "wakeup_latency.py" in row.error
        assert not row.samples


def test_raw_floors_count_what_they_claim() -> None:
    for kind in ("socketpair", "eventfd"):
        for family in ("poll", "epoll"):
            pair = raw.make_pair(kind)
            try:
                count, seconds = raw.pingpong(family, pair, 50)
            finally:
                pair.close()
            assert count == 50 and seconds > 0
    fds, close = raw.open_idle_fds(8)
    try:
        pair = raw.socketpair_pair()
        try:
            assert raw.pingpong("epoll", pair, 20, fds)[0] == 20
            if raw.io_uring_unavailable() is None:
                assert raw.raw_io_uring_pingpong(pair, 20, fds)[0] == 20
                assert raw.raw_io_uring_pingpong(pair, 20, fds, multishot=True)[0] == 20
        finally:
            pair.close()
    finally:
        close()
    assert raw.deque_chain(1000)[0] == 1000
    assert raw.deque_fanout(1000)[0] == 1000


def test_cli_json_contains_every_requested_workload() -> None:
    names = ["bh_chain", "bh-fanout", "socketpair", "eventfd", "idle_fds", "timers", "wakeup"]
    argv = [a for n in names for a in ("--workload", n)]
    status, text = bench(*argv, "--backend", "epoll", "--quick", "--repeat", "2", "--json")
    data = json.loads(text)
    assert status == 0, data["failures"]
    assert data["exit_status"] == 0
    got = [w["name"] for w in data["workloads"]]
    assert got == [n.replace("-", "_") for n in names]
    assert data["settings"]["backends"] == ["epoll"]
    assert data["settings"]["repeat"] == 2
    for key in ("date", "python", "kernel", "cpu_model", "loadavg_start", "loadavg_end"):
        assert key in data["environment"]
    socketpair = next(w for w in data["workloads"] if w["name"] == "socketpair")
    rows = {c["name"]: c for c in socketpair["cases"][0]["contenders"]}
    epoll = rows["aiocore epoll"]
    assert len(epoll["samples"]) == 2
    assert epoll["calibration"], "the calibration runs are kept too"
    stats = epoll["stats"]["rate"]
    assert stats["min"] <= stats["median"] <= stats["max"]
    assert "vs asyncio" in epoll["ratios"]
    assert epoll["ratios"]["vs floor (raw epoll)"] > 0
    assert {"asyncio", "raw epoll"} <= set(rows)
    assert any(item["what"].startswith("backend / raw loop") for item in data["summary"])
    # --quick never records a measurement for auto to act on.
    assert data["recorded"] is None


def test_cli_table_names_baselines_floors_and_spread() -> None:
    status, text = bench(
        "--workload", "socketpair", "--backend", "epoll", "--quick", "--repeat", "1"
    )
    assert status == 0, text
    assert "socketpair ping-pong" in text
    assert "baseline: asyncio add_reader" in text
    assert "floor: raw poll / epoll / io_uring loop" in text
    assert "raw epoll (floor)" in text
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("aiocore epoll"))
    assert "[" in row and ".." in row and "raw epoll" in row
    assert "wall time" in text


def test_unknown_names_are_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench("--workload", "nope")[0] == 2
    assert "unknown workload nope" in capsys.readouterr().err
    assert bench("--backend", "nope")[0] == 2
    assert "unknown backend 'nope'; known backends: " in capsys.readouterr().err
    assert bench("--repeat", "0")[0] == 2
    assert bench("--backend", "kqueue", "--quick")[0] == 1
    assert "kqueue is not available" in capsys.readouterr().err


def test_list_names_every_workload_with_baseline_and_floor() -> None:
    status, text = bench("--list")
    assert status == 0
    for name in workloads.WORKLOADS:
        assert name in text
    assert text.count("baseline:") == len(workloads.WORKLOADS)


def _failing_workload(run: Any, time_limit: float = 30.0) -> harness.Workload:
    def build(_settings: harness.Settings) -> list[harness.Case]:
        ok = harness.Contender("fine", "baseline", "fine", lambda n: {"rate": 1.0, "seconds": 1.0})
        bad = harness.Contender("aiocore broken", "aiocore", "broken", run)
        return [harness.Case("", [bad, ok], size=1, time_limit=time_limit)]

    return harness.Workload(
        "broken", "broken", "fails on purpose", "-", "-", workloads.RATE_CALLBACKS, build
    )


def test_failing_contender_is_reported_and_fails_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run(_n: int) -> harness.Sample:
        raise ValueError("the backend exploded")

    monkeypatch.setitem(workloads.WORKLOADS, "broken", _failing_workload(run))
    status, text = bench("--workload", "broken", "--quick", "--json")
    assert status == 1
    data = json.loads(text)
    assert data["exit_status"] == 1
    rows = {c["name"]: c for c in data["workloads"][0]["cases"][0]["contenders"]}
    assert rows["aiocore broken"]["status"] == "failed"
    assert "ValueError: the backend exploded" in rows["aiocore broken"]["error"]
    assert rows["fine"]["status"] == "ok"
    assert any("the backend exploded" in f for f in data["failures"])

    status, text = bench("--workload", "broken", "--quick")
    assert status == 1
    assert "aiocore broken: FAILED: run 1: ValueError: the backend exploded" in text
    assert "1 contender(s) FAILED" in text


def test_a_hanging_contender_is_stopped_by_the_watchdog() -> None:
    def run(_n: int) -> harness.Sample:
        time.sleep(30)
        return {"rate": 1.0, "seconds": 1.0}

    workload = _failing_workload(run, time_limit=0.3)
    settings = harness.Settings(backends=[], repeat=1, quick=True)
    t0 = time.monotonic()
    [result] = harness.run_workloads([workload], settings)
    assert time.monotonic() - t0 < 10
    broken = result.cases[0].get("aiocore broken")
    assert broken is not None and broken.status == "failed"
    assert broken.error is not None and "did not finish within 0.3 s" in broken.error


def test_exception_in_an_aiocore_callback_fails_the_run(
    registry: aiocore.PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiocore logs callback exceptions by default; the bench must not count
    # such a run.  Make the idle fds readable so the "never" handler raises.
    original = raw.open_idle_fds

    def readable_idle(count: int) -> tuple[list[int], Any]:
        fds, close = original(count)
        for fd in fds:
            os.write(fd, (1).to_bytes(8, sys.byteorder))
        return fds, close

    monkeypatch.setattr(raw, "open_idle_fds", readable_idle)
    [result] = harness.run_workloads(
        [workloads.WORKLOADS["idle_fds"]], quick_settings("epoll", registry)
    )
    mine = result.cases[0].get("aiocore epoll")
    assert mine is not None and mine.status == "failed"
    assert mine.error is not None and "idle fd was reported readable" in mine.error


def test_cases_of_an_interleaved_workload_take_turns() -> None:
    order: list[str] = []

    def contender(name: str) -> harness.Contender:
        def run(n: int) -> harness.Sample:
            order.append(name)
            return {"rate": 1.0, "seconds": 0.001}

        return harness.Contender(name, "floor", name, run)

    cases = [
        harness.Case(label, [contender(f"{label}a"), contender(f"{label}b")], size=1)
        for label in ("1", "2")
    ]
    settings = harness.Settings(backends=[], repeat=2)
    results = harness.run_cases(cases, settings)
    assert order == ["1a", "1b", "2a", "2b"] * 2
    assert [len(c.samples) for r in results for c in r.contenders] == [2, 2, 2, 2]
    assert workloads.WORKLOADS["idle_fds"].interleave


def test_too_low_fd_limit_makes_idle_cases_not_available(
    registry: aiocore.PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough for the 1-fd case (plus headroom), not for the 64-fd one; the
    # limit is only pretended (setrlimit does nothing) so the session keeps its own.
    limit = len(os.listdir("/proc/self/fd")) + 1 + 64 + 256 + 20
    monkeypatch.setattr(harness.resource, "getrlimit", lambda _r: (limit, limit))
    monkeypatch.setattr(harness.resource, "setrlimit", lambda *_a: None)
    [result] = harness.run_workloads(
        [workloads.WORKLOADS["idle_fds"]], quick_settings("epoll", registry)
    )
    small, large = result.cases
    assert [c.status for c in small.contenders if c.role == "aiocore"] == ["ok"]
    for c in large.contenders:
        assert c.status == "not available", c
        assert c.error is not None and f"hard limit {limit}" in c.error
    assert f"hard limit {limit}" in large.params["rlimit_nofile"]


def test_missing_uvloop_is_not_available_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    status, text = bench("--workload", "bh_chain", "--backend", "epoll", "--quick", "--json")
    assert status == 0
    data = json.loads(text)
    rows = {c["name"]: c for c in data["workloads"][0]["cases"][0]["contenders"]}
    assert rows["uvloop"]["status"] == "not available"
    assert "pip install uvloop" in rows["uvloop"]["error"]
    assert data["environment"]["uvloop"] is None


def test_plot_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "bench.png"
    t0 = time.monotonic()
    status, _ = bench("--workload", "bh_chain", "--quick", "--plot", str(target))
    assert status == 1
    err = capsys.readouterr().err
    assert "pip install matplotlib" in err
    assert "aiocore[plot]" in err
    assert not target.exists()
    # It says so before spending time on the benchmarks.
    assert time.monotonic() - t0 < 5


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "bench.png"
    status, text = bench(
        "--workload", "idle_fds", "--workload", "socketpair", "--backend", "epoll",
        "--quick", "--repeat", "1", "--plot", str(target),
    )  # fmt: skip
    assert status == 0, text
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {target}" in text


def test_progress_bar_only_on_a_terminal() -> None:
    plain = io.StringIO()
    bar = harness.Progress(4, plain)
    bar.step("x")
    bar.close()
    assert plain.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = harness.Progress(4, tty)
    bar.step("socketpair: aiocore epoll")
    bar.step("socketpair: aiocore epoll", 3)
    assert "[" in tty.getvalue() and "100%" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r")


def test_non_quick_run_records_the_io_uring_epoll_ratio(registry: aiocore.PluginRegistry) -> None:
    if registry.probe("io_uring") is not None:
        pytest.skip("io_uring is not available here")
    status, text = bench(
        "--workload", "socketpair", "--backend", "epoll", "--backend", "io_uring",
        "--duration", "0.002", "--repeat", "1", "--json",
    )  # fmt: skip
    assert status == 0
    data = json.loads(text)
    assert data["recorded"] and "auto" in data["recorded"]
    value, why = measurements.usable_ratio(measurements.IO_URING_VS_EPOLL)
    assert value is not None and value > 0, why


def test_ratio_reads_the_same_way_for_times_and_rates() -> None:
    rate = harness.Metric("rate", "r", "r", True)
    span = harness.Metric("span_s", "s", "s", False)
    fast = harness.ContenderResult("a", "aiocore", "x", samples=[{"rate": 4.0, "span_s": 1.0}])
    slow = harness.ContenderResult("b", "baseline", "y", samples=[{"rate": 2.0, "span_s": 2.0}])
    assert report.ratio(fast, slow, rate) == 2.0
    assert report.ratio(fast, slow, span) == 2.0


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("bh_chain.py", ["--size", "2000"]),
        ("bh_fanout.py", ["--size", "2000"]),
        ("pingpong.py", ["--size", "200"]),
        ("idle_fds.py", ["--quick", "--duration", "0.002"]),
        ("timers.py", ["--quick"]),
        ("raw_io_uring.py", ["--n", "200"]),
    ],
)
def test_benchmark_scripts_run_through_the_package(script: str, args: list[str]) -> None:
    if script == "raw_io_uring.py" and raw.io_uring_unavailable() is not None:
        pytest.skip("io_uring is not available here")
    extra = [] if script == "raw_io_uring.py" else ["--backend", "epoll", "--no-record"]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--repeat", "1", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "round trips/s" in proc.stdout or "callbacks/s" in proc.stdout or "fire span" in proc.stdout
    )


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("hot_paths.py", ["--n", "2000"], "busy-poll hit to io_poll_ready"),
        ("wakeup_breakdown.py", ["--repeat", "1", "--messages", "200"], "raw ring consumer"),
    ],
)
def test_profile_scripts_run(script: str, args: list[str], expect: str) -> None:
    """The scripts behind the profiles in docs/performance.rst and docs/threads.rst."""
    if script == "wakeup_breakdown.py":
        from aiocore_plugins.shmring_source import shmring_unavailable_reason

        if shmring_unavailable_reason() is not None:
            pytest.skip(str(shmring_unavailable_reason()))
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expect in proc.stdout, proc.stdout


# -- regression tests of the audit's findings ------------------------------------


def _synthetic(name: str, per_op: float, sizes: list[int]) -> harness.Contender:
    """A contender whose run of n takes n * per_op seconds, by its own account (no clock)."""

    def run(n: int) -> harness.Sample:
        sizes.append(n)
        return {"rate": 1 / per_op, "seconds": n * per_op}

    return harness.Contender(name, "baseline", name, run)


def test_size_per_second_case_runs_every_contender_at_one_size() -> None:
    # bh_fanout's rate depends on N; calibrating each contender to its own N
    # compared aiocore at ~9,000 with uvloop at ~26,000.  A case with
    # size_per_second runs all at size_per_second * duration.
    settings = harness.Settings(backends=[], repeat=2, duration=0.02)
    slow_sizes: list[int] = []
    fast_sizes: list[int] = []

    def case(per_second: int | None) -> harness.Case:
        return harness.Case(
            "",
            [_synthetic("slow", 7e-5, slow_sizes), _synthetic("fast", 1e-6, fast_sizes)],
            size_per_second=per_second,
        )

    [apart] = harness.run_cases([case(None)], settings)
    slow, fast = apart.get("slow"), apart.get("fast")
    assert slow is not None and fast is not None
    assert slow.size == int(0.02 / 7e-5) == 285  # its own calibrated size
    assert fast.size is not None and fast.size > 10_000
    assert "size_per_run" not in apart.params
    slow_sizes.clear()
    fast_sizes.clear()
    [result] = harness.run_cases([case(400_000)], settings)
    slow, fast = result.get("slow"), result.get("fast")
    assert slow is not None and fast is not None
    assert slow.size == fast.size == result.params["size_per_run"] == 8_000
    # A warm-up run at a tenth, then the counted runs.
    assert slow_sizes == fast_sizes == [800, 8_000, 8_000]
    out = io.StringIO()
    workload = harness.Workload("w", "w", "-", "-", "-", workloads.RATE_CALLBACKS, lambda s: [])
    report.write_table([harness.WorkloadResult(workload, [result])], 2, out)
    assert "every contender: 8,000 per run" in out.getvalue()

    # --size still decides, for every contender alike.
    fixed = harness.Settings(backends=[], repeat=1, duration=0.02, size=12_345)
    [result] = harness.run_cases([case(400_000)], fixed)
    assert [c.size for c in result.contenders] == [12_345, 12_345]
    assert result.params["size_per_run"] == 12_345


def test_fanout_contenders_all_run_the_same_size(registry: aiocore.PluginRegistry) -> None:
    settings = quick_settings("epoll", registry)
    [result] = harness.run_workloads([workloads.WORKLOADS["bh_fanout"]], settings)
    check_sane(result)
    case = result.cases[0]
    ran = [c for c in case.contenders if c.status == "ok"]
    assert len(ran) >= 3  # aiocore epoll, asyncio, the deque floor
    sizes = {c.name: c.size for c in ran}
    assert len(set(sizes.values())) == 1, sizes
    expected = round(workloads.FANOUT_PER_SECOND * settings.duration)
    assert ran[0].size == case.params["size_per_run"] == expected
    for c in ran:
        assert [s["count"] for s in c.samples] == [expected]


def test_wakeup_shmring_contenders_are_held_to_the_raw_ring_consumer(
    registry: aiocore.PluginRegistry,
) -> None:
    path = workloads.find_script(workloads.WAKEUP_SCRIPT)
    if path is None:
        pytest.skip("benchmarks/wakeup_latency.py is not in this tree")
    module = workloads._load_script(path)
    short, long = module.bench_cases(quick_settings("epoll", registry))
    assert short.params["gap_ns"] < long.params["gap_ns"]
    floors = {c.name: c.floor for c in short.contenders if c.role == "aiocore"}
    assert floors == {
        "aiocore eventfd handler": "raw epoll loop",
        "aiocore shmring, poll_max_ns=0": "raw ring consumer (spin, take)",
        "aiocore shmring, poll_max_ns=32768": "raw ring consumer (spin, take)",
    }
    # No ring consumer in the long-gap case: the raw epoll loop for all.
    assert "raw ring consumer (spin, take)" not in {c.name for c in long.contenders}
    assert {c.floor for c in long.contenders if c.role == "aiocore"} == {"raw epoll loop"}
    # The table's "vs floor" names the ring consumer for a shmring row.
    results = [
        harness.ContenderResult(
            c.name, c.role, c.family, floor=c.floor, samples=[{"latency_us": 2.0 + i}]
        )
        for i, c in enumerate(short.contenders)
    ]
    case = harness.CaseResult(short.label, short.params, results)
    ring = case.get("aiocore shmring, poll_max_ns=32768")
    assert ring is not None
    floor = report.floor_of(ring, case)
    assert floor is not None and floor.name == "raw ring consumer (spin, take)"


def _fake_socketpair() -> harness.Workload:
    """A socketpair workload with io_uring and epoll rows, no system call made."""

    def build(_settings: harness.Settings) -> list[harness.Case]:
        def run(rate: float) -> Any:
            return lambda n: {"rate": rate, "seconds": 0.001}

        return [
            harness.Case(
                "",
                [
                    harness.Contender("aiocore io_uring", "aiocore", "io_uring", run(50.0)),
                    harness.Contender("aiocore epoll", "aiocore", "epoll", run(100.0)),
                ],
                size=1,
            )
        ]

    return harness.Workload(
        "socketpair", "fake ping-pong", "-", "-", "-", workloads.RATE_ROUND_TRIPS, build
    )


def test_unwritable_measurements_file_is_reported_after_the_results(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A directory as AIOCORE_MEASUREMENTS: the command measured everything,
    # then died in measurements.record() with a traceback, printing nothing.
    target = tmp_path / "a-directory"
    target.mkdir()
    monkeypatch.setenv("AIOCORE_MEASUREMENTS", str(target))
    monkeypatch.setitem(workloads.WORKLOADS, "socketpair", _fake_socketpair())
    argv = ("--workload", "socketpair", "--repeat", "1", "--duration", "0.002")

    status, text = bench(*argv)
    assert status == 1
    assert "fake ping-pong" in text and "aiocore epoll" in text and "wall time" in text
    err = capsys.readouterr().err
    assert f"could not record the io_uring/epoll ping-pong ratio in {target}" in err
    assert "Is a directory" in err

    status, text = bench(*argv, "--json")
    assert status == 1
    data = json.loads(text)
    assert data["exit_status"] == 1 and data["recorded"] is None
    assert "could not record" in data["record_error"]
    assert data["workloads"][0]["cases"][0]["contenders"][0]["status"] == "ok"
    assert "could not record" in capsys.readouterr().err
    # Nothing left behind: the temporary file is removed, the directory kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("module", ["aiocore.bench.cli", "aiocore.bench"])
def test_python_m_runs_the_bench_command(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for name in workloads.WORKLOADS:
        assert name in proc.stdout
    assert proc.stderr == ""
