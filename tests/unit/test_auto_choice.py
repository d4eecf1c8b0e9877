"""``auto`` starts on io_uring only where it was measured at least as fast as epoll."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

import aiocore
from aiocore import measurements
from tests.conftest import skip_or_fail_unavailable


@pytest.fixture
def io_uring_ok(registry: aiocore.PluginRegistry) -> None:
    if "io_uring" not in registry.backends:
        skip_or_fail_unavailable("io_uring", "no plugin registers it")
    reason = registry.probe("io_uring")
    if reason is not None:
        skip_or_fail_unavailable("io_uring", reason)


def ctx_stats(registry: aiocore.PluginRegistry) -> tuple[str, dict[str, object]]:
    with aiocore.AioContext("auto", registry=registry) as ctx:
        return ctx.backend_name, ctx.backend_statistics()


def test_no_measurement_keeps_poll_then_epoll(registry: aiocore.PluginRegistry) -> None:
    name, stats = ctx_stats(registry)
    assert name == "poll"
    assert "no measurement recorded" in str(stats["choice"])
    assert stats["policy"] == "upgrades to epoll at 64 fds"


def test_measured_faster_chooses_io_uring(
    registry: aiocore.PluginRegistry, io_uring_ok: None
) -> None:
    measurements.record(measurements.IO_URING_VS_EPOLL, 1.2)
    name, stats = ctx_stats(registry)
    assert name == "io_uring"
    assert "measured 1.20" in str(stats["choice"])
    assert str(stats["policy"]).startswith("chose io_uring")


def test_measured_slower_keeps_poll(registry: aiocore.PluginRegistry) -> None:
    measurements.record(measurements.IO_URING_VS_EPOLL, 0.71)
    name, stats = ctx_stats(registry)
    assert name == "poll"
    assert "0.71" in str(stats["choice"])
    assert "below 1.0" in str(stats["choice"])


def test_measurement_from_another_kernel_is_ignored(registry: aiocore.PluginRegistry) -> None:
    target = measurements.record(measurements.IO_URING_VS_EPOLL, 3.0)
    data = json.loads(target.read_text())
    data[measurements.IO_URING_VS_EPOLL]["kernel"] = "1.0.0-not-" + platform.release()
    target.write_text(json.dumps(data))
    name, stats = ctx_stats(registry)
    assert name == "poll"
    assert "taken under kernel 1.0.0-not-" in str(stats["choice"])


def test_config_prefer_and_never(
    registry: aiocore.PluginRegistry, io_uring_ok: None, tmp_path: Path
) -> None:
    (tmp_path / "aiocore.toml").write_text('[backends.auto]\nio_uring = "prefer"\n')
    assert ctx_stats(registry)[0] == "io_uring"
    measurements.record(measurements.IO_URING_VS_EPOLL, 5.0)
    (tmp_path / "aiocore.toml").write_text('[backends.auto]\nio_uring = "never"\n')
    name, stats = ctx_stats(registry)
    assert name == "poll"
    assert "'never'" in str(stats["choice"])
    (tmp_path / "aiocore.toml").write_text('[backends.auto]\nio_uring = "sometimes"\n')
    with pytest.raises(aiocore.ConfigError, match="must be one of 'measured', 'prefer', 'never'"):
        aiocore.AioContext("auto", registry=registry)


def test_prefer_without_io_uring_says_why(tmp_path: Path) -> None:
    reg = aiocore.PluginRegistry(autoload=False, env={"AIOCORE_BLOCK_PLUGINS": "io_uring"})
    (tmp_path / "aiocore.toml").write_text('[backends.auto]\nio_uring = "prefer"\n')
    with aiocore.AioContext("auto", registry=reg) as ctx:
        assert ctx.backend_name == "poll"
        assert "io_uring was wanted (prefer) but unknown backend 'io_uring'" in str(
            ctx.backend_statistics()["choice"]
        )


def test_record_is_atomic_and_readable(tmp_path: Path) -> None:
    measurements.record("x", 1.5, note="t")
    measurements.record("y", 2.0)
    data = measurements.load()
    assert data["x"]["value"] == 1.5
    assert data["x"]["note"] == "t"
    assert data["y"]["value"] == 2.0
    assert not list(measurements.path().parent.glob(".measurements-*"))
