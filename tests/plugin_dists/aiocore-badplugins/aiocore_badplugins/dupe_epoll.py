"""A plugin that registers a backend under a name the built-in epoll owns."""

from typing import Any

from aiocore_plugins.poll import PollBackend

from aiocore import hookimpl


class NotReallyEpoll(PollBackend):
    name = "epoll"


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(NotReallyEpoll)
