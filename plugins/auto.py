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
* if ``epoll_ctl`` refuses an fd with ``EPERM`` (a regular file or a
  directory, which epoll never watches), fall back to poll **for good**, say
  so in the log, and never try again.

Only ``EPERM`` is final.  What SPEC 10 leaves open is decided as follows
(the built-in plugins page of the docs says it for users): any other refusal
during the upgrade (``ENOMEM``, ``ENOSPC``, ...) postpones it to the next
change; an fd closed while registered (poll's ``dropped_closed_fds``, or
``EBADF`` now) is left out of the epoll set, reported ``EVENT_NVAL`` once as
poll would, and unwatched until its handler changes; a removal forgets the fd
even when the delegate refuses it, and never makes auto fall back.

One rule is added to QEMU's: **io_uring when it was measured faster here.**
io_uring submits every change and the wait in one system call, but from
Python each re-armed poll request is packed by hand, and on the machine this
was written on the io_uring backend ran ping-pong at about 0.7x the epoll
backend.  So ``auto`` starts on io_uring only where ``aiocore bench`` recorded
an io_uring/epoll ratio of at least 1.0 under the running kernel
(:mod:`aiocore.measurements`); the option ``io_uring`` overrides that
(``"prefer"``: whenever available, ``"never"``).  The choice and its reason
are logged once per process and shown by ``aiocore info``.

``auto`` is itself a backend that delegates to another one it opens by name
through :class:`aiocore.backend.BackendSetup` (never by importing a sibling
plugin), so blocking the ``epoll`` plugin simply keeps ``auto`` on poll.  Its
``name`` follows the delegate, which is what ``ctx.backend_name`` shows.  To
keep the delegation free on the hot path, ``wait`` and ``need_wait`` are the
delegate's own bound methods, installed on the instance.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from aiocore import BackendUnavailable, UnknownBackendError, hookimpl, measurements
from aiocore.backend import EVENT_NVAL, Backend, BackendSetup, Option

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
        "io_uring": Option(
            str,
            "measured",
            "start on io_uring: 'measured' (where aiocore bench found it at least as fast "
            "as epoll under this kernel), 'prefer' (whenever available) or 'never'",
            choices=("measured", "prefer", "never"),
        ),
    }

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        self._threshold: int = setup.options["epoll_threshold"]
        #: fd -> mask of every fd the core has registered here.
        self._masks: dict[int, int] = {}
        #: fds of _masks the delegate does not watch: found closed by the
        #: upgrade (see the module docstring) until their handler changes.
        self._unwatched: set[int] = set()
        #: unwatched fds whose EVENT_NVAL the next wait reports.
        self._report: set[int] = set()
        #: The errno of the last postponed upgrade (warned about once).
        self._postponed: int | None = None
        #: True on io_uring, or once epoll refused an fd with EPERM.
        self._final = False
        self.upgrades = 0
        chosen, self.reason = self._try_io_uring()
        if chosen is not None:
            self._final = True
            self._adopt(chosen)
        else:
            self._adopt(setup.open("poll"))
        _log_once(f"auto: {self.reason}")

    def _try_io_uring(self) -> tuple[Backend | None, str]:
        mode = self.setup.options["io_uring"]
        if mode == "never":
            return None, "poll, then epoll: io_uring = 'never' in the configuration"
        if mode == "measured":
            ratio, why = measurements.usable_ratio(measurements.IO_URING_VS_EPOLL)
            if ratio is None:
                return None, f"poll, then epoll: io_uring not chosen: {why}"
            if ratio < 1.0:
                return None, (
                    f"poll, then epoll: io_uring not chosen: its ping-pong rate was "
                    f"{why} times epoll's, below 1.0"
                )
        try:
            backend = self.setup.open("io_uring")
        except (BackendUnavailable, UnknownBackendError) as exc:
            return None, f"poll, then epoll: io_uring was wanted ({mode}) but {exc}"
        if mode == "prefer":
            return backend, "io_uring: io_uring = 'prefer' in the configuration"
        return backend, f"io_uring: {measurements.usable_ratio(measurements.IO_URING_VS_EPOLL)[1]}"

    def _adopt(self, delegate: Backend) -> None:
        self._delegate = delegate
        self.name = delegate.name
        # Instance attributes shadow the methods: the core's call goes straight
        # to the delegate.
        self.wait = delegate.wait  # type: ignore[method-assign]
        self.need_wait = delegate.need_wait  # type: ignore[method-assign]
        if self._report:
            # Until the next wait has reported them (see _wait_and_report).
            self.wait = self._wait_and_report  # type: ignore[method-assign]
            self.need_wait = self._report_pending  # type: ignore[method-assign]

    def _wait_and_report(self, timeout_ns: int) -> list[tuple[int, int]]:
        # Installed by _adopt for one wait: report the fds the upgrade found
        # closed, as poll would have (EVENT_NVAL once), without blocking.
        report, self._report = self._report, set()
        delegate = self._delegate
        self.wait = delegate.wait  # type: ignore[method-assign]
        self.need_wait = delegate.need_wait  # type: ignore[method-assign]
        events = list(delegate.wait(0 if report else timeout_ns))
        # (Not an fd whose handler another thread changed meanwhile.)
        unwatched = self._unwatched
        events.extend((fd, EVENT_NVAL) for fd in sorted(report) if fd in unwatched)
        return events

    def _report_pending(self) -> bool:
        # The core may keep this bound method until its next update().
        return bool(self._report) or self._delegate.need_wait()

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        # Shadowed per instance by the delegate's bound method (see _adopt).
        return self._delegate.wait(timeout_ns)

    def need_wait(self) -> bool:
        # Shadowed per instance by the delegate's bound method (see _adopt).
        return self._delegate.need_wait()

    def fd_errno(self, fd: int) -> int:
        return self._delegate.fd_errno(fd)

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        if not new_mask:
            try:
                self._remove(fd, old_mask)
            finally:
                self._check_threshold()
            return
        if fd in self._unwatched:
            # The delegate forgot it (found closed): a change watches it anew.
            old_mask = 0
        try:
            self._delegate.update(fd, old_mask, new_mask)
        except PermissionError as exc:
            if self.name == "poll":
                raise
            self._fall_back(f"epoll refused fd {fd} ({exc.strerror})")
            self._delegate.update(fd, old_mask, new_mask)
        self._unwatched.discard(fd)
        self._report.discard(fd)
        self._masks[fd] = new_mask
        self._check_threshold()

    def _check_threshold(self) -> None:
        if not self._final and self.name == "poll" and len(self._masks) >= self._threshold:
            self.maintenance_due = True

    def _remove(self, fd: int, old_mask: int) -> None:
        # Forgotten even when the delegate refuses (aiocore.backend's
        # contract): the core has dropped the handler and only reports the
        # error.  Kept, the fd would be added again by an upgrade or a
        # fallback, and its number reported for whatever file reuses it.
        self._masks.pop(fd, None)
        self._report.discard(fd)
        if fd in self._unwatched:
            self._unwatched.discard(fd)
            return
        # A refused removal never makes auto fall back (epoll's EPERM here
        # means the closed fd's number now names a regular file).
        self._delegate.update(fd, old_mask, 0)

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
            self._postpone(exc.errno, str(exc))
            return
        # fds poll reported closed and stopped watching: epoll does not watch
        # them either (their number may name another file by now).
        dropped = self._dropped_by_delegate() | self._unwatched
        closed: set[int] = set()
        fileno = getattr(epoll, "fileno", None)
        # A registered fd closed since poll's last wait may have left its
        # number to the new epoll instance itself (epoll_ctl: EINVAL).
        own = fileno() if callable(fileno) else -1
        for fd, mask in self._masks.items():
            if fd in dropped:
                continue
            if fd == own:
                closed.add(fd)
                continue
            try:
                epoll.update(fd, 0, mask)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    # Closed since poll's last wait: reported below, as poll would.
                    closed.add(fd)
                    continue
                epoll.close()
                if exc.errno == errno.EPERM:
                    self._final = True
                    log(f"auto: staying on poll for good: epoll refused fd {fd} ({exc.strerror})")
                    return
                # ENOMEM, ENOSPC (max_user_watches), ...: the moment, not the fd.
                self._postpone(exc.errno, f"epoll refused fd {fd} ({exc.strerror or exc})")
                return
        old = self._delegate
        self._unwatched = (dropped & self._masks.keys()) | closed
        self._report = closed
        self._postponed = None
        self._adopt(epoll)
        old.close()
        self.upgrades += 1
        # Routine (QEMU does it silently): info, not a warning.
        self.setup.note(f"auto: upgraded from poll to epoll at {len(self._masks)} fds")

    def _postpone(self, code: int | None, why: str) -> None:
        # Tried again at the next change of the interest set; a warning the
        # first time, info while the same errno keeps postponing it.
        message = f"auto: upgrade to epoll postponed to the next change: {why}"
        if code is not None and code == self._postponed:
            self.setup.note(message)
        else:
            self.setup.log(message)
        self._postponed = code

    def _dropped_by_delegate(self) -> set[int]:
        # The poll backend names the fds it reported closed and stopped watching.
        dropped = self._delegate.statistics().get("dropped_closed_fds", ())
        if not isinstance(dropped, (list, tuple, set, frozenset)):
            return set()
        return {fd for fd in dropped if isinstance(fd, int)}

    def _fall_back(self, why: str) -> None:
        poll = self.setup.open("poll")
        for fd, mask in self._masks.items():
            # An unwatched fd was reported closed already: poll would report
            # it again.  (A closed fd epoll forgot silently is reported by
            # poll now, for the first time.)
            if fd not in self._unwatched:
                poll.update(fd, 0, mask)
        old = self._delegate
        self._adopt(poll)
        old.close()
        self._final = True
        self.setup.log(f"auto: fell back to poll for good: {why}")

    def close(self) -> None:
        self._delegate.close()

    def _policy(self) -> str:
        if self.name == "io_uring":
            return f"chose {self.reason}"
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
            "choice": self.reason,
            "delegate": self._delegate.name,
            "epoll_threshold": self._threshold,
            "upgrades": self.upgrades,
            "final": self._final,
            **self._delegate.statistics(),
            # Every registered fd, watched by the delegate or not.
            "fds": len(self._masks),
            "unwatched_closed_fds": sorted(self._unwatched),
        }


_logged: set[str] = set()


def _log_once(message: str) -> None:
    # Every context makes the same choice for the same reason; say it once.
    if message not in _logged:
        _logged.add(message)
        logging.getLogger("aiocore").info("%s", message)


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(AutoBackend)
