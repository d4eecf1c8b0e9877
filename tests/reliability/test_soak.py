"""``aiocore soak``: a short run on every backend loses nothing, and losses are seen."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

import aiocore.soak
from aiocore import AioContext, PluginRegistry
from aiocore._cli import main
from aiocore.soak import SoakResult, soak


def test_short_soak_loses_nothing(backend: str, registry: PluginRegistry) -> None:
    result = soak(backend, 0.3, registry=registry, seed=1)
    counts = result.as_dict()
    assert result.ok, counts
    for key in (
        "events",
        "bytes_received",
        "bhs_run",
        "bh_chain",
        "timers_fired",
        "wakeups",
        "notifier_seen",
        "handler_changes",
    ):
        assert counts[key] > 0, f"no {key} in {counts}"
    assert result.lost == 0 and result.doubled == 0 and result.timers_early == 0


def test_soak_command_prints_json_and_succeeds() -> None:
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.3", "--backend", "poll,epoll", "--json"], out) == 0
    data = json.loads(out.getvalue())
    assert [d["backend"] for d in data] == ["poll", "epoll"]
    assert all(d["lost"] == 0 and d["doubled"] == 0 and d["ok"] for d in data)


def test_soak_command_table() -> None:
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.2", "--backend", "poll"], out) == 0
    header, row = out.getvalue().splitlines()[:2]
    assert header.split()[:3] == ["backend", "s", "polls"]
    assert header.split()[-1] == "lost" and row.split()[-1] == "0"


def test_soak_rejects_a_bad_duration() -> None:
    out = io.StringIO()
    assert main(["soak", "--seconds", "0"], out) == 2
    assert "--seconds must be > 0" in out.getvalue()


def test_soak_counts_dropped_bhs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that drops one oneshot in five fails the run."""
    original = AioContext.bh_schedule_oneshot
    calls = [0]

    def lossy(self: AioContext, cb: Any, opaque: object = None) -> None:
        calls[0] += 1
        if calls[0] % 5:
            original(self, cb, opaque)

    monkeypatch.setattr(AioContext, "bh_schedule_oneshot", lossy)
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.3", "--backend", "poll"], out) == 1
    assert "LOST" in out.getvalue() and "BHs" in out.getvalue()


def test_soak_counts_lost_wakeups(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notify() that never kicks the sleeping loop loses wake-ups."""

    def notify_without_kick(self: AioContext) -> None:
        self._notified = True

    monkeypatch.setattr(AioContext, "notify", notify_without_kick)
    result = soak("poll", 1.3, seed=2)
    assert result.wakeups_lost >= 1, result.as_dict()
    assert not result.ok


# -- lost and doubled are counted apart: one never makes up for the other -------


def test_a_lost_byte_and_a_doubled_bh_do_not_offset() -> None:
    """The report added signed differences: -1 byte and +1 BH run gave lost=0, ok=True."""
    r = SoakResult(
        "poll",
        bytes_sent=1000,
        bytes_received=999,  # one byte lost
        bhs_scheduled=50,
        bhs_run=51,  # one oneshot ran twice
        timers_armed=10,
        timers_fired=10,
    )
    assert (r.lost, r.doubled, r.ok) == (1, 1, False)
    assert r.problems() == "LOST 1 (bytes 1); DOUBLED 1 (BHs 1)"
    d = r.as_dict()
    assert (d["lost"], d["doubled"], d["ok"]) == (1, 1, False)


def test_a_timer_fired_twice_and_one_early_is_not_ok() -> None:
    """Before, +1 fired and +1 early summed to lost=0, ok=True."""
    r = SoakResult("poll", timers_armed=10, timers_fired=11, timers_early=1)
    assert (r.lost, r.doubled, r.timers_early, r.ok) == (0, 1, 1, False)
    assert r.problems() == "DOUBLED 1 (timers 1); EARLY timers 1"


def test_a_clean_result_is_ok() -> None:
    r = SoakResult("poll", bytes_sent=5, bytes_received=5, timers_armed=3, timers_pending=3)
    assert (r.lost, r.doubled, r.ok, r.problems()) == (0, 0, True, "")
    assert not SoakResult("poll", errors=["boom"]).ok


def test_soak_command_reports_offsetting_loss_and_double(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command fails a run whose lost and doubled events would cancel out, and says so."""
    offsetting = SoakResult("poll", bytes_sent=10, bytes_received=9, bhs_scheduled=4, bhs_run=5)
    monkeypatch.setattr(aiocore.soak, "soak", lambda *_a, **_k: offsetting)
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.1", "--backend", "poll"], out) == 1
    lines = out.getvalue().splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert header[-3:] == ["early", "doubled", "lost"] and row[-3:] == ["0", "1", "1"]
    assert "poll: LOST 1 (bytes 1); DOUBLED 1 (BHs 1)" in lines
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.1", "--backend", "poll", "--json"], out) == 1
    (d,) = json.loads(out.getvalue())
    assert (d["lost"], d["doubled"], d["ok"]) == (1, 1, False)


def test_soak_counts_doubled_bhs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that runs one oneshot in five twice fails the run, as doubled, not as lost."""
    original = AioContext.bh_schedule_oneshot
    calls = [0]

    def doubling(self: AioContext, cb: Any, opaque: object = None) -> None:
        calls[0] += 1
        original(self, cb, opaque)
        if calls[0] % 5 == 0:
            original(self, cb, opaque)

    monkeypatch.setattr(AioContext, "bh_schedule_oneshot", doubling)
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.3", "--backend", "poll"], out) == 1
    assert "poll: DOUBLED " in out.getvalue() and "(BHs " in out.getvalue()
    assert "LOST" not in out.getvalue()
