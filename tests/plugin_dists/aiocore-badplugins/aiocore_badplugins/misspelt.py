"""A plugin with a misspelt hook name (register_backend, singular)."""

from typing import Any

from aiocore import hookimpl


@hookimpl
def aiocore_register_backend(register: Any) -> None:
    raise AssertionError("never called: the hook does not exist")
