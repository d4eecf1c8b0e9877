"""aiocore_socknotify: an EventNotifier implementation on a socketpair."""

from __future__ import annotations

import socket
from typing import Any

from aiocore import EventNotifier, hookimpl


class SocketpairNotifier(EventNotifier):
    name = "socketpair"
    preference = 5  # below eventfd (20) and pipe (10): used only when asked for

    @classmethod
    def probe(cls) -> str | None:
        return None if hasattr(socket, "socketpair") else "socket.socketpair is missing"

    # EventNotifier(...) passes its arguments on, so accept them all.
    def __init__(
        self, active: bool = False, *, kind: str | None = None, registry: Any = None
    ) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        if active:
            self.set()

    def set(self) -> None:
        try:
            self._w.send(b"\x01")
        except BlockingIOError:
            pass  # buffer full: already set

    def test_and_clear(self) -> bool:
        was_set = False
        while True:
            try:
                data = self._r.recv(4096)
            except BlockingIOError:
                return was_set
            if not data:
                return was_set
            was_set = True

    def fileno(self) -> int:
        return self._r.fileno()

    @property
    def closed(self) -> bool:
        return self._r.fileno() < 0

    def close(self) -> None:
        self._r.close()
        self._w.close()


@hookimpl
def aiocore_register_notifiers(register: Any) -> None:
    register(SocketpairNotifier)
