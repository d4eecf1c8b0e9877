"""``ctx.sources``: handler-source plugins, attached to a context on first use.

A source plugin registers a factory under a name (``aiocore_register_sources``).
``ctx.sources.<name>`` calls ``factory(ctx)`` the first time and returns the
same object afterwards, so a context pays only for the sources it uses.  When
the context closes, every source made for it is closed, newest first, so a
source built on another one is closed before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import AioContext

__all__ = ["SourceNamespace"]


class SourceNamespace:
    """Attribute access to the sources registered by plugins."""

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._made: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        made = self._made
        if name in made:
            return made[name]
        info = self._ctx.registry.sources.get(name)
        if info is None:
            known = ", ".join(sorted(self._ctx.registry.sources)) or "(none registered)"
            raise AttributeError(f"no handler source {name!r}; registered sources: {known}")
        obj = made[name] = info.factory(self._ctx)
        return obj

    def __dir__(self) -> list[str]:
        return sorted(self._ctx.registry.sources)

    def close(self) -> None:
        """Close every source made for this context, newest first."""
        errors: list[BaseException] = []
        for obj in reversed(list(self._made.values())):
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    errors.append(exc)
        self._made.clear()
        if errors:
            raise errors[0]
