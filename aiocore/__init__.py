"""aiocore: QEMU's ``AioContext`` for Python.

A minimal core defines what an event loop iteration does (``AioContext.poll``)
and the lifecycle of its handlers: fd handlers, bottom halves, timers on
several clocks, event notifiers, cross-thread ``notify()``, adaptive busy
polling, external-client quiescing and nested polling.  Poller backends and
handler sources are pluggy plugins.

Start with :class:`AioContext`; the semantics are those of ``SPEC.md``; the
plugin hooks are in :mod:`aiocore.hookspec`; the backend contract is
:mod:`aiocore.backend`.
"""

from __future__ import annotations

from . import measurements
from ._bh import BH
from ._clocks import (
    SCALE_MS,
    SCALE_NS,
    SCALE_US,
    Clock,
    clock_enable,
    clock_enabled,
    clock_get_ns,
    virtual_clock_step,
)
from ._context import AioContext, ExceptionHandler
from ._coroutine import (
    CoMutex,
    Coroutine,
    co_enter,
    co_reschedule_self,
    co_schedule,
    co_wake,
    current_coroutine,
    in_coroutine,
    sleep_ns,
    yield_,
)
from ._errors import (
    BackendUnavailable,
    ConfigError,
    PluginError,
    UnknownBackendError,
)
from ._iothread import IOThread
from ._notifier import EventNotifier
from ._plugins import PluginRegistry, PluginWarning, default_registry
from ._sources import check_home_thread, close_newest_first
from ._timers import Timer
from ._wait import run_in_context, wait_while
from .backend import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_IN,
    EVENT_NVAL,
    EVENT_OUT,
    Backend,
)
from .hookspec import hookimpl

__version__ = "0.1.0"

__all__ = [
    "BH",
    "EVENT_ERR",
    "EVENT_HUP",
    "EVENT_IN",
    "EVENT_NVAL",
    "EVENT_OUT",
    "SCALE_MS",
    "SCALE_NS",
    "SCALE_US",
    "AioContext",
    "Backend",
    "BackendUnavailable",
    "Clock",
    "CoMutex",
    "ConfigError",
    "Coroutine",
    "EventNotifier",
    "ExceptionHandler",
    "IOThread",
    "PluginError",
    "PluginRegistry",
    "PluginWarning",
    "Timer",
    "UnknownBackendError",
    "__version__",
    "check_home_thread",
    "clock_enable",
    "clock_enabled",
    "clock_get_ns",
    "close_newest_first",
    "co_enter",
    "co_reschedule_self",
    "co_schedule",
    "co_wake",
    "current_coroutine",
    "default_registry",
    "hookimpl",
    "in_coroutine",
    "measurements",
    "run_in_context",
    "sleep_ns",
    "virtual_clock_step",
    "wait_while",
    "yield_",
]
