"""The ``auto`` backend: QEMU's policy of starting on poll and upgrading to epoll.

poll(2) is cheapest for a handful of fds (no extra kernel object, one system
call, nothing to keep in sync); epoll wins once the interest set is large,
because poll hands the kernel every fd on every call.  QEMU's rule, kept here:

* start on ``poll``;
* when the number of registered fds reaches ``epoll_threshold`` (64 by
  default), upgrade to ``epoll`` at the next safe point: the outermost
  ``poll()`` level, with external clients enabled.  Every fd is added to the
  new epoll set before it replaces poll; readiness is level-triggered, so
  nothing reported-but-undispatched is lost, and the core's own records keep
  what was already reported;
* never downgrade when the count drops again (the work is done);
* if ``epoll_ctl`` refuses an fd (``EPERM`` for a regular file), fall back to
  poll **for good**, say so in the log, and never try again.

``auto`` is itself a backend that delegates to another one it opens by name
through :class:`aiocore.backend.BackendSetup` (never by importing a sibling
plugin), so blocking the ``epoll`` plugin simply keeps ``auto`` on poll.  Its
``name`` follows the delegate, which is what ``ctx.backend_name`` shows.  To
keep the delegation free on the hot path, ``wait`` and ``need_wait`` are the
delegate's own bound methods, installed on the instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiocore import BackendUnavailable, hookimpl
from aiocore.backend import Backend, BackendSetup, Option

__all__ = ["AutoBackend"]


class AutoBackend(Backend):
    """Poll first, epoll past a threshold, poll for good if epoll refuses an fd."""

    name = "auto"
    options: ClassVar[Mapping[str, Option]] = {
        "epoll_threshold": Option(
            int,
            64,
            "number of registered fds at which auto upgrades from poll to epoll",
            minimum=1,
        ),
    }

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._threshold: int = setup.options["epoll_threshold"]
        self._masks: dict[int, int] = {}
        #: "poll" until upgraded; "epoll" after; "poll (for good)" once refused.
        self._final = False
        self._delegate: Backend = setup.open("poll")
        self._adopt(self._delegate)
        self.upgrades = 0

    def _adopt(self, delegate: Backend) -> None:
        self._delegate = delegate
        self.name = delegate.name
        # Instance attributes shadow the methods: the core's call goes straight
        # to the delegate.
        self.wait = delegate.wait  # type: ignore[method-assign]
        self.need_wait = delegate.need_wait  # type: ignore[method-assign]

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        # Shadowed per instance by the delegate's bound method (see _adopt).
        return self._delegate.wait(timeout_ns)

    def need_wait(self) -> bool:
        # Shadowed per instance by the delegate's bound method (see _adopt).
        return self._delegate.need_wait()

    def fd_errno(self, fd: int) -> int:
        return self._delegate.fd_errno(fd)

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        try:
            self._delegate.update(fd, old_mask, new_mask)
        except PermissionError as exc:
            if self.name == "poll":
                raise
            self._fall_back(f"epoll refused fd {fd} ({exc.strerror})")
            self._delegate.update(fd, old_mask, new_mask)
        if new_mask:
            self._masks[fd] = new_mask
        else:
            self._masks.pop(fd, None)
        if not self._final and self.name == "poll" and len(self._masks) >= self._threshold:
            self.maintenance_due = True

    def maintain(self) -> None:
        self.maintenance_due = False
        if self._final or self.name != "poll" or len(self._masks) < self._threshold:
            return
        log = self.setup.log
        try:
            epoll = self.setup.open("epoll")
        except (BackendUnavailable, LookupError, ValueError) as exc:
            self._final = True
            log(f"auto: staying on poll for good: epoll cannot be opened: {exc}")
            return
        except OSError as exc:
            # Out of descriptors or memory: try again at the next change.
            log(f"auto: upgrade to epoll postponed: {exc}")
            return
        for fd, mask in self._masks.items():
            try:
                epoll.update(fd, 0, mask)
            except OSError as exc:
                epoll.close()
                self._final = True
                log(f"auto: staying on poll for good: epoll refused fd {fd} ({exc.strerror})")
                return
        old = self._delegate
        self._adopt(epoll)
        old.close()
        self.upgrades += 1
        log(f"auto: upgraded from poll to epoll at {len(self._masks)} fds")

    def _fall_back(self, why: str) -> None:
        poll = self.setup.open("poll")
        for fd, mask in self._masks.items():
            poll.update(fd, 0, mask)
        old = self._delegate
        self._adopt(poll)
        old.close()
        self._final = True
        self.setup.log(f"auto: fell back to poll for good: {why}")

    def close(self) -> None:
        self._delegate.close()

    def _policy(self) -> str:
        if self._final:
            return "stays on poll for good"
        if self.name != "poll":
            return f"upgraded to {self.name}"
        try:
            probe = self.setup.open("epoll")
        except Exception as exc:
            return f"stays on poll: epoll cannot be opened ({exc})"
        probe.close()
        return f"upgrades to epoll at {self._threshold} fds"

    def statistics(self) -> dict[str, object]:
        return {
            "policy": self._policy(),
            "delegate": self._delegate.name,
            "epoll_threshold": self._threshold,
            "upgrades": self.upgrades,
            "final": self._final,
            **self._delegate.statistics(),
        }


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(AutoBackend)
