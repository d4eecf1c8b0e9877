"""``EventNotifier``: a file descriptor that one side sets and the other drains.

The core defines the interface; the implementations (eventfd on Linux, a
non-blocking pipe elsewhere) are plugins, registered through
``aiocore_register_notifiers``.  ``EventNotifier(...)`` therefore returns an
instance of the preferred available implementation (or the one named by
*kind*), which is still an ``EventNotifier``: ``isinstance`` works, and a
context's internal notifier is made the same way.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ._plugins import PluginRegistry

__all__ = ["EventNotifier"]


class EventNotifier:
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
            from ._plugins import PluginRegistry, default_registry

            if registry is None:
                registry = default_registry()
            elif not isinstance(registry, PluginRegistry):
                raise TypeError(
                    f"registry must be a PluginRegistry or None, got {type(registry).__name__}"
                )
            cls = registry.notifier_class(kind)
        return super().__new__(cls)

    @classmethod
    def probe(cls) -> str | None:
        """Return ``None`` if this implementation works here, else why not."""
        return None

    # The interface below is implemented by every registered implementation.
    # It is not declared with abc.abstractmethod because EventNotifier() itself
    # is the documented way to make one (__new__ picks the implementation), and
    # type checkers refuse to let code instantiate an abstract class.

    def set(self) -> None:
        """Make the notifier readable.  Setting a set notifier keeps it set."""
        raise NotImplementedError(self._missing("set"))  # abstractmethod: see above

    def test_and_clear(self) -> bool:
        """Drain the notifier; return whether it was set."""
        raise NotImplementedError(self._missing("test_and_clear"))  # abstractmethod

    def fileno(self) -> int:
        """The fd to watch for readability."""
        raise NotImplementedError(self._missing("fileno"))  # abstractmethod

    def close(self) -> None:
        """Close the fd(s).  Idempotent."""
        raise NotImplementedError(self._missing("close"))  # abstractmethod

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        raise NotImplementedError(self._missing("closed"))  # abstractmethod

    def _missing(self, name: str) -> str:
        return f"{type(self).__name__} does not implement EventNotifier.{name}"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # What abc would check at instantiation, checked at definition: an
        # implementation that forgets a method fails when its plugin loads.
        super().__init_subclass__(**kwargs)
        missing = [
            n
            for n in ("set", "test_and_clear", "fileno", "close", "closed")
            if getattr(cls, n) is getattr(EventNotifier, n)
        ]
        if missing:
            raise TypeError(f"{cls.__name__} must implement EventNotifier's {', '.join(missing)}")

    def __del__(self) -> None:
        # A notifier dropped without close() would keep its fd(s) open until
        # the process ends: close them when collected, and say so with a
        # ResourceWarning, as files and sockets do.
        try:
            if self.closed:
                return
        except Exception:  # never fully made (its __init__ raised)
            return
        warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
        self.close()

    def __enter__(self) -> EventNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<{type(self).__name__} {self.name} {state}>"
