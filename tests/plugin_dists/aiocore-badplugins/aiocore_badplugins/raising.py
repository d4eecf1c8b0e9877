"""A plugin that raises in its registration hook."""

from typing import Any

from aiocore import hookimpl


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    raise RuntimeError("boom in registration")
