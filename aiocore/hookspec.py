"""The hooks an aiocore plugin implements: the plugin reference.

A plugin is any module or object with functions named after these hooks and
decorated with :data:`aiocore.hookimpl`.  Built-in plugins (``poll``,
``epoll``, ``auto``, ``io_uring``, ``kqueue``, ``notifier``, ...) are written
exactly like third-party ones; a third-party plugin is found through the
``aiocore`` entry-point group::

    # pyproject.toml of your distribution
    [project.entry-points.aiocore]
    mybackend = "mypackage.aiocore_plugin"

The entry point's name is the plugin's name: ``aiocore plugins`` lists it under
that name and ``AIOCORE_BLOCK_PLUGINS=mybackend`` blocks it.

Hooks are for **wiring**: they run when plugins load and when a context is
created or closed, never per event, because a pluggy call checks arguments and
copies lists (microseconds) while the core's per-event budget is a fraction of
that.  A function named ``aiocore_*`` that matches no hook here is an error
("misspelt hook"), reported when the plugin loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._context import AioContext
    from ._plugins import Registrar

__all__ = ["hookimpl", "hookspec"]

#: Marker for hook specifications; the project name equals the entry-point group.
hookspec = pluggy.HookspecMarker("aiocore")
#: Marker for hook implementations in plugins.
hookimpl = pluggy.HookimplMarker("aiocore")


# ---------------------------------------------------------------------------
# Registration: called once per plugin, when the plugin registry loads.
# ---------------------------------------------------------------------------


@hookspec
def aiocore_register_backends(register: Registrar) -> None:
    """Register poller backend classes: call ``register(BackendClass)`` for each.

    ``BackendClass`` subclasses :class:`aiocore.backend.Backend`; its ``name``
    attribute is the name users select it by.  Register a backend even where it
    cannot run: its :meth:`~aiocore.backend.Backend.probe` gives the reason, and
    ``aiocore backends`` shows it.  Two plugins registering the same name is an
    error that names both.
    """


@hookspec
def aiocore_register_notifiers(register: Registrar) -> None:
    """Register :class:`aiocore.EventNotifier` implementations.

    Call ``register(NotifierClass)``; the class subclasses
    :class:`aiocore.EventNotifier` and sets ``name`` (for example ``"eventfd"``
    or ``"pipe"``), ``preference`` (the highest available one is the default)
    and a ``probe()`` classmethod that returns the reason it cannot run here, or
    ``None``.
    """


@hookspec
def aiocore_register_sources(register: Registrar) -> None:
    """Register handler-source factories: call ``register(name, factory)``.

    A source owns file descriptors and attaches handlers to a context (a
    socket server, a kernel timer, a signal channel).  ``factory(ctx)`` is
    called once per context, the first time ``ctx.sources.<name>`` is used; the
    object it returns is closed with the context if it has a ``close()``
    method.
    """


# ---------------------------------------------------------------------------
# Context lifecycle: called once per context.
# ---------------------------------------------------------------------------


@hookspec
def aiocore_context_created(ctx: AioContext) -> None:
    """Called after a context is fully set up, in the creating thread.

    A plugin may register handlers or BHs on *ctx*.  An exception here is
    reported on the ``aiocore`` logger with the plugin's name and the context
    is still created (``AIOCORE_STRICT_PLUGINS=1`` makes it fatal instead).
    """


@hookspec
def aiocore_context_closing(ctx: AioContext) -> None:
    """Called at the start of ``ctx.close()``, while the context still works.

    A plugin removes what it registered.  Exceptions are reported like those
    of :func:`aiocore_context_created`; the context closes regardless.
    """


def _hook_names() -> list[str]:
    return [name for name in globals() if name.startswith("aiocore_")]


HOOK_NAMES: Any = tuple(_hook_names())
