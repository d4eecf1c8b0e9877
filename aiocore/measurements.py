"""Measurements that steer ``auto``: what ``aiocore bench`` found on this machine.

``auto`` may pick io_uring only "where the benchmarks show it is at least as
fast as epoll here".  *Here* is the point: the answer depends on the kernel,
the CPU and the Python build, so it cannot be a constant in the code.
``aiocore bench`` records the io_uring/epoll ping-pong ratio it measured in a
small JSON file (this module writes it atomically), and ``auto`` reads it when
a context is created.  A measurement taken under another kernel release is
ignored, with that as the stated reason.  No file means no evidence, and
``auto`` keeps QEMU's poll-then-epoll rule.

The file is ``$AIOCORE_MEASUREMENTS`` if set, else
``$XDG_CACHE_HOME/aiocore/measurements.json`` (``~/.cache`` by default).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["IO_URING_VS_EPOLL", "load", "path", "record", "usable_ratio"]

#: Key of the io_uring backend / epoll backend ping-pong ratio.
IO_URING_VS_EPOLL: Final = "io_uring_vs_epoll_pingpong"


def path() -> Path:
    """Where measurements are kept."""
    explicit = os.environ.get("AIOCORE_MEASUREMENTS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiocore" / "measurements.json"


def load() -> dict[str, Any]:
    """All recorded measurements (empty if none or unreadable)."""
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(key: str, value: float, **context: object) -> Path:
    """Record *value* under *key* with the machine facts it depends on.

    The file is replaced atomically.  Raises :exc:`OSError` when it cannot be
    written (the path is a directory, no permission); ``aiocore bench`` then
    prints its results and reports that.
    """
    target = path()
    data = load()
    data[key] = {
        "value": value,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **context,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".measurements-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def usable_ratio(key: str) -> tuple[float | None, str]:
    """The recorded value for *key* if it applies to this machine, and why (not)."""
    entry = load().get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
        return None, f"no measurement recorded in {path()} (run `aiocore bench`)"
    if entry.get("kernel") != platform.release():
        return None, (
            f"the measurement in {path()} was taken under kernel {entry.get('kernel')}, "
            f"this is {platform.release()} (run `aiocore bench` again)"
        )
    return float(entry["value"]), f"measured {entry['value']:.2f} on {entry.get('recorded')}"
