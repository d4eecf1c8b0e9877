"""Helpers for the thread tests (not tests themselves).

* :class:`Watchdog`: turns a lost wake-up into a test failure instead of a
  hang.  If the test has not called :meth:`Watchdog.done` within its
  deadline, it records that and wakes the context by writing the internal
  notifier's fd **directly** (not through ``notify()``, which may be what is
  broken), again every 100 ms, so the blocked ``poll(True)`` returns and the
  test can fail on ``watchdog.fired``.
* :func:`join_all`: join threads with one deadline, failing on stragglers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from aiocore import AioContext


class Watchdog:
    """Rescue a context blocked past *seconds*; see the module docstring."""

    def __init__(self, ctx: AioContext, seconds: float) -> None:
        self.fired = False
        self._ctx = ctx
        self._seconds = seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._done.wait(self._seconds):
            return
        self.fired = True
        event = self._ctx._event
        for _ in range(600):  # 60 s at most
            if self._done.is_set() or self._ctx.closed:
                return
            try:
                event.set()
            except (RuntimeError, OSError):
                return
            time.sleep(0.1)

    def done(self) -> None:
        """The test finished waiting; stop watching."""
        self._done.set()
        self._thread.join(5)

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def join_all(threads: Iterable[threading.Thread], seconds: float) -> None:
    """Join every thread within *seconds* in total; fail naming those still alive."""
    deadline = time.monotonic() + seconds
    threads = list(threads)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {seconds} s: {alive}"
