"""``EventNotifier``: a file descriptor that one side sets and the other drains.

The core defines the interface; the implementations (eventfd on Linux, a
non-blocking pipe elsewhere) are plugins, registered through
``aiocore_register_notifiers``.  ``EventNotifier(...)`` therefore returns an
instance of the preferred available implementation (or the one named by
*kind*), which is still an ``EventNotifier``: ``isinstance`` works, and a
context's internal notifier is made the same way.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ._plugins import PluginRegistry

__all__ = ["EventNotifier"]


class EventNotifier(abc.ABC):
    """A settable, pollable flag backed by a file descriptor (QEMU's ``EventNotifier``).

    ``set()`` makes :meth:`fileno` readable; :meth:`test_and_clear` drains it
    and says whether it was set.  ``set()`` is safe from any thread and, through
    an inherited fd, from another process.

    :param active: start in the set state.
    :param kind: the implementation by name (``"eventfd"``, ``"pipe"``, or a
        plugin's); default: the preferred one available here.
    :param registry: the plugin registry to look *kind* up in (tests);
        default: the process's default registry.
    """

    #: Registry name of the implementation.
    name: ClassVar[str] = "?"
    #: The available implementation with the highest preference is the default.
    preference: ClassVar[int] = 0

    def __new__(
        cls,
        active: bool = False,
        *,
        kind: str | None = None,
        registry: PluginRegistry | None = None,
    ) -> EventNotifier:
        if cls is EventNotifier:
            if registry is None:
                from ._plugins import default_registry

                registry = default_registry()
            cls = registry.notifier_class(kind)
        return super().__new__(cls)

    @classmethod
    def probe(cls) -> str | None:
        """Return ``None`` if this implementation works here, else why not."""
        return None

    @abc.abstractmethod
    def set(self) -> None:
        """Make the notifier readable.  Setting a set notifier keeps it set."""

    @abc.abstractmethod
    def test_and_clear(self) -> bool:
        """Drain the notifier; return whether it was set."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """The fd to watch for readability."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the fd(s).  Idempotent."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True after :meth:`close`."""

    def __enter__(self) -> EventNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<{type(self).__name__} {self.name} {state}>"
