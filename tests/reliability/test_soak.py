"""``aiocore soak``: a short run on every backend loses nothing, and losses are seen."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from aiocore import AioContext, PluginRegistry
from aiocore._cli import main
from aiocore.soak import soak


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
    assert result.lost == 0 and result.timers_early == 0


def test_soak_command_prints_json_and_succeeds() -> None:
    out = io.StringIO()
    assert main(["soak", "--seconds", "0.3", "--backend", "poll,epoll", "--json"], out) == 0
    data = json.loads(out.getvalue())
    assert [d["backend"] for d in data] == ["poll", "epoll"]
    assert all(d["lost"] == 0 and d["ok"] for d in data)


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
