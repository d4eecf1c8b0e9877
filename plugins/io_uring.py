"""The ``io_uring`` backend: readiness through ``IORING_OP_POLL_ADD``, via liburing.

Kernel facts it relies on
=========================

**POLL_ADD is one-shot unless asked otherwise.**  ``IORING_OP_POLL_ADD`` with
``poll32_events`` set to the ``POLL*`` mask arms a poll on the *file* behind
the fd.  If the file is already ready when the request is issued (inside the
``io_uring_enter`` that submits it), the request completes at once; otherwise
it waits for the file's wake-up.  Either way one CQE arrives with ``res`` = the
ready mask (``poll32_events`` uses the ``poll(2)`` bit values on every
little-endian ABI, which are also :mod:`aiocore.backend`'s ``EVENT_*``), and
the request is gone.  This backend therefore **re-arms** a fd after each
reported completion, in the same ``io_uring_enter`` as the next wait.  A
re-armed POLL_ADD on a still-ready fd completes immediately, which is what
makes the backend level-triggered like epoll: an fd that stays readable is
reported by every :meth:`~IoUringBackend.wait`.

**A completion is history; a wait reports the present.**  A CQE says the
file was ready when the kernel posted it.  A CQE posted while the core was
dispatching (typically: a handler wrote to the peer of another watched fd)
may be stale by the next wait, because a callback may have drained the fd in
between; reporting it would call ``io_read`` with nothing to read, which
poll and epoll never do (they check the level when they wait).  So a wait
first takes the CQEs already in the ring when it starts, reports none of
them, and writes their re-arm SQEs instead; the ``io_uring_enter`` that
follows (the one the wait makes anyway) issues those re-arms, and a fd that
is still ready completes inline, in that same call, with a fresh CQE that is
reported.  Only CQEs posted during the wait itself are reported as they
are.  The price is one SQE and one CQE more per fd that became ready during
a dispatch -- no extra system call.  Measured on the socketpair ping-pong
through one context, where every completion arrives during a dispatch:
io_uring/epoll was 0.58 in the last ``aiocore bench`` run before the
re-check and 0.45-0.46 in the runs after it (each ratio from one run,
medians of 5-9), which keeps ``auto`` on epoll here.

**Multishot** (``IORING_POLL_ADD_MULTI`` in ``sqe->len``, Linux 5.13+) keeps
the request armed and posts a CQE flagged ``IORING_CQE_F_MORE`` for each
*wake-up* of the file: it is edge-triggered, and never repeats a readiness
nobody consumed.  Level semantics on top of it need a re-check of every fd
reported last time; this backend does it inside the same system call as the
wait, with a one-shot POLL_ADD "probe" immediately followed by a POLL_REMOVE
of that probe (ready: the probe completes inline with the mask; not ready: it
is cancelled, ``-ECANCELED``).  A CQE *without* ``F_MORE`` means the kernel
ended the multishot request (CQ overflow on some kernels, an error): it is
armed again.  The ``IORING_POLL_ADD_LEVEL`` flag (5.19+) does not help: it
means "always wait for a wake-up", not "repeat while ready".

Which mode is the default was decided by measurement (Linux 6.18, liburing
2.3, CPython 3.11, a 2-CPU VM shared with other work, so absolute rates drift
by +-30% between runs; each line is the median of 9 alternating runs of
30,000 socketpair round trips, two runs shown):

========================================  ===========  ===========
round trips per second                      run A        run B
========================================  ===========  ===========
this backend alone, one-shot (default)      128,704       80,170
this backend alone, multishot + probes       55,920       42,935
``AioContext``, one-shot                     61,755       63,414
``AioContext``, multishot + probes           44,461       40,304
raw loop, one-shot (the floor)              172,833      107,912
raw loop, multishot, *edge-triggered*       233,374      150,654
========================================  ===========  ===========

One-shot wins by 1.4x (through the core) to 2.3x (backend alone): the
level re-check that multishot needs costs two SQEs and an extra CQE per
reported fd, more than the one re-arm SQE it saves, and it costs an extra
round in the wait loop whenever the probe finds the fd drained.  Multishot
without the re-check is faster still (last line) but edge-triggered, which
the contract forbids.  So ``multishot = "auto"`` means one-shot; ``"on"``
keeps the multishot path as a working, tested fallback.

Where the time goes (one-shot, per loop iteration, measured with one
ready fd): the ``io_uring_enter`` that submits the re-arm ~1.1 us including
~0.25 us of ``ctypes`` call overhead, this module's bookkeeping ~1.3 us (of
which ~0.6 us turning one CQE into a report and writing its re-arm SQE).
``select.epoll.poll`` does the same job in ~0.5 us because it needs no
re-arm and its result list is built in C.  In one run measuring all five
together: raw epoll 191k, epoll backend through ``AioContext`` 118k, raw
io_uring 115k, this backend alone 110k (0.96 of raw), through
``AioContext`` 83k (0.73 of raw io_uring, 0.71 of the epoll backend).  The
gap to the raw loop is mostly the core's per-iteration cost, which every
backend pays alike (epoll loses 38% to its raw loop the same way); the gap
to epoll is the per-iteration re-arm (a POLL_ADD armed in the kernel, an SQE
written and a ``ctypes`` call made from Python) that epoll does not need.
Idle fds cost nothing per iteration (their polls sit armed in the kernel):
with 8192 idle eventfds beside the active pair the rate showed no slowdown
beyond run-to-run noise.

**POLL_REMOVE** (``IORING_OP_POLL_REMOVE``, ``sqe->addr`` = the ``user_data``
of the poll to cancel) completes with 0 when it cancelled the request (which
then completes with ``-ECANCELED``), ``-ENOENT`` when no such request is
armed (it already completed: its CQE is in, or on its way to, the CQ ring)
and ``-EALREADY`` when the request is completing right now.  All three end
the same way for us: the old request will never complete again, and any CQE
it produced is stale.  Removes are sent with ``IOSQE_CQE_SKIP_SUCCESS``
(5.17+; older kernels ignore nothing and simply post the CQE) and their own
CQEs carry a ``user_data`` that matches no fd, so they are skipped.

**user_data tags make stale completions harmless.**  Every POLL_ADD carries
``user_data = seq << 48 | mask << 32 | fd``, with ``seq`` fresh for each
registration or change (bit 63 marks a multishot level probe, bit 62 a
"parked" request, below; the mask is in the tag so a re-arm needs no
lookup).  The backend remembers the one tag that is live for each fd; a CQE
whose tag is not the live one (the fd was removed, its mask changed, or its
number was closed and reused by a new socket and registered again) is
dropped without being reported.  A change therefore never needs to wait for
the old request's cancellation to come back.  A one-shot re-arm reuses its
tag: the request it replaces has completed, so nothing else can carry it.
The sequence is finite (it wraps), so "fresh" has to be enforced: the
backend counts, per tag, the requests it cancelled (and the multishot
probes it issued) whose last CQE it has not reaped yet, and never makes a
tag live while it is counted there.  Without that, a CQE left over from a
handler's old request could match its new tag after a wrap, and the
backend would re-arm it: two requests armed for one fd, one of them never
removed, holding the file open after the user closed it.

**CQ overflow.**  The CQ ring holds ``cq_entries`` CQEs (twice ``entries``
unless ``cq_entries`` is set); with more armed polls than that, a burst can
overflow it.  Kernels with ``IORING_FEAT_NODROP`` (5.5+) keep the extra CQEs
in an overflow list and set ``IORING_SQ_CQ_OVERFLOW`` in the SQ flags; they
are moved into the ring by the next ``io_uring_enter`` with
``IORING_ENTER_GETEVENTS`` (``io_uring_peek_batch_cqe`` does that when the
ring is empty).  CQEs in that list when a wait starts are as old as the
ring's, and the wait's own ``io_uring_enter`` would move them into the ring
looking fresh, so a wait first flushes the list and re-checks everything in
it like the ring's CQEs (one-shot: re-armed; multishot: probed) -- otherwise
a fd drained since its CQE was posted would be reported.  After draining the
ring, :meth:`~IoUringBackend.wait` checks the flag again and flushes what the
wait itself produced, a bounded number of times: two CQEs per request that
may complete (a multishot probe's POLL_REMOVE posts ``-ENOENT`` when the probe
completed inline), a ring's worth per flush.  What is left keeps
:meth:`~IoUringBackend.need_wait` true and is old at the next wait.  Some
kernels refuse submissions with ``-EBUSY`` while the overflow list is not
empty: the backend reaps (as old CQEs: re-checked) and retries.  Without
NODROP (or if the kernel fails to allocate an overflow entry, reported as
``-EBADR`` and counted in the CQ ``overflow`` counter), CQEs are lost; a
one-shot poll whose CQE was lost would never be re-armed, so when that
counter moves the backend re-arms every fd ("resync").

**EINTR.**  ``io_uring_enter`` waiting for completions returns ``-EINTR``
when a signal arrives (and hides it, returning the submit count, when it
also submitted; liburing may then return with no CQE).  The backend never
trusts the return value for "did we wait enough": it loops until a CQE is in
the ring or the deadline (``time.monotonic_ns``, the kernel's
``CLOCK_MONOTONIC``) has passed, re-entering with the remaining time.  A
Python signal handler runs between two attempts; if it raises, that
exception propagates (PEP 475 behaviour), with the ring consistent.

**Timeouts in nanoseconds.**  The wait passes a relative
``struct __kernel_timespec`` (``io_uring_submit_and_wait_timeout``, which
with ``IORING_FEAT_EXT_ARG``, 5.11+, gives it to ``io_uring_enter`` directly
instead of queueing a TIMEOUT request); current kernels sleep on an
hrtimer, so the resolution is the timer slack, far below a millisecond, and
a short timeout never turns into a busy loop or a millisecond sleep.

**A fd closed while a poll is armed.**  The request holds a reference to
the *file*, not the fd number: closing the fd neither cancels the poll nor
reports anything (as with epoll, the file lives on while the poll holds it,
so a peer's write can still complete it).  The next POLL_ADD *issued* on the
closed number -- a re-arm after a completion, or a new registration --
completes with ``-EBADF``: the backend reports ``EVENT_NVAL`` once and stops
watching that fd until :meth:`~IoUringBackend.update` changes it.  A closed
fd that never becomes ready again stays silent; POLL_REMOVE goes by tag, not
by fd, so nothing in the ring notices its removal either.  The backend
therefore remembers which file it was asked to watch (``st_dev`` and
``st_ino`` from one ``fstat`` per add or change) and checks on removal: a
closed number raises ``EBADF`` and a number now naming another file raises
``ENOENT`` (:class:`FileNotFoundError`, what epoll's ``EPOLL_CTL_DEL`` says
then), once.  Files without an inode of their own (eventfd, timerfd,
signalfd: they share the kernel's anonymous inode) cannot be told apart
this way, so the reuse of such a number by another of its kind goes
unnoticed.  Users remove a handler before closing its fd.  An fd that is
refused asynchronously (a closed fd added) is reported as ``EVENT_NVAL``,
so adding or changing never raises.

**``POLLRDHUP`` is always reported** by io_uring (it is in the kernel's
always-on mask with ERR/HUP/NVAL, unlike poll(2) and epoll).  A completion
that carries nothing the core asked for -- in practice RDHUP alone on a fd
watched for writing whose send buffer is full after the peer shut down its
writing side -- would complete again at once if simply re-armed, spinning
the loop.  Such a fd is *parked* instead: armed with a multishot poll, which
reports only on the next wake-up; the first completion with a wanted bit is
reported and the fd goes back to one-shot.  (Kernels before 5.13 have no
multishot; there the fd is re-armed and the spin is possible.)

Threads
=======

:meth:`~IoUringBackend.update` may run in another thread while the home
thread sits in :meth:`~IoUringBackend.wait`.  It only records the change in a
dict under a :class:`threading.Lock`; the home thread applies pending changes
at the start of every wait, so the SQ ring is only ever written by one
thread (liburing's SQ handling is not thread-safe).  The core follows a
cross-thread change with ``ctx.notify()``, whose eventfd completion ends the
current wait, so the change takes effect by the next wait as the contract
asks.  ``ctypes`` releases the GIL during liburing calls.

Hot path
========

``wait()`` runs every loop iteration.  Its one-shot fast path makes one
``ctypes`` call, the system call (``io_uring_submit`` when completions are
already in, else ``io_uring_submit_and_wait_timeout`` called without
``argtypes`` on ready-made pointer objects, which saves ~30% of the call's
overhead); the CQE loop is inlined in it and writes each reported fd's
re-arm SQE in place with one ``struct.pack_into`` into a memoryview of the
mmapped SQE array, to be submitted by the next wait; CQEs are read through
memoryviews of the CQ ring; the timespec and the ``cqe`` out-pointer are
preallocated.  Everything unusual (multishot, deferred re-arms, EINTR,
a wait that produced no report, overflow) leaves the fast path for
``_wait_general``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Mapping
from time import monotonic_ns
from typing import Any, ClassVar, Final

from aiocore import hookimpl
from aiocore.backend import (
    EVENT_ERR,
    EVENT_HUP,
    EVENT_IN,
    EVENT_NVAL,
    EVENT_OUT,
    Backend,
    BackendSetup,
    Option,
)

from . import _liburing
from ._liburing import (
    IORING_CQE_F_MORE,
    IORING_FEAT_CQE_SKIP,
    IORING_FEAT_RSRC_TAGS,
    IORING_OP_POLL_ADD,
    IORING_OP_POLL_REMOVE,
    IORING_POLL_ADD_MULTI,
    IORING_SQ_CQ_OVERFLOW,
    IOSQE_CQE_SKIP_SUCCESS,
    SQE,
    SQE_TAIL_INDEX,
)

__all__ = ["IoUringBackend"]

#: Bits of a completion's ``res`` the core understands.
_REPORTABLE: Final = EVENT_IN | EVENT_OUT | EVENT_ERR | EVENT_HUP
_U32: Final = 0xFFFF_FFFF
# user_data layout: fd in bits 0..31, the interest mask in bits 32..47 (so a
# re-arm needs no lookup), a sequence number in bits 48..61, then two flags.
# The sequence wraps after 16383 tags, and no timing argument makes a wrapped
# tag safe: a completion posted between two waits (during a dispatch) for a
# fd whose handler is then replaced is still unread when the replacement
# picks its tag, however many tags came in between.  What makes tags safe is
# the ``_pending`` table (see IoUringBackend._next_tag): a tag is never
# handed out again while a request carrying it may still complete.
_FD_MASK: Final = 0xFFFF_FFFF
_EV_SHIFT: Final = 32
_EV_MASK: Final = 0xFFFF
_SEQ_SHIFT: Final = 48
_SEQ_LIMIT: Final = 1 << 14
_PARK: Final = 1 << 62  # a parked fd's multishot request (one-shot mode)
_PROBE: Final = 1 << 63  # a multishot-mode level probe
#: user_data of our POLL_REMOVE requests: the fd field is all ones, which is
#: no fd (fds are < 2**31), so their CQEs (errors only) are skipped as stale.
#: liburing's internal TIMEOUT tag (all ones, old kernels only) likewise.
_REMOVE_TAG: Final = _FD_MASK
_OVERFLOW_ROUNDS: Final = 16
_BUSY_RETRIES: Final = 1000
_NS: Final = 1_000_000_000
_RETRY_WAIT: Final = frozenset({errno.ETIME, errno.EINTR, errno.EAGAIN, errno.EBUSY})
_RETRY_SUBMIT: Final = frozenset({errno.EBUSY, errno.EAGAIN, errno.EINTR})
_REARM_ON: Final = frozenset({errno.ECANCELED, errno.ENOMEM, errno.EAGAIN, errno.EINTR})
_pack_sqe = SQE.pack_into
#: errnos of io_uring_setup() that describe the moment, not the system.
#: (ENOMEM is not one: before Linux 5.12 it means RLIMIT_MEMLOCK, a setting.)
_TRANSIENT: Final = frozenset({errno.EMFILE, errno.ENFILE})

#: What the ``multishot`` option's ``"auto"`` means: whichever mode was faster
#: in the measurements quoted in the module docstring (one-shot).
AUTO_MULTISHOT: Final = False


def _multishot_supported(features: int) -> bool:
    """Multishot poll came in 5.13, with ``IORING_FEAT_RSRC_TAGS``.

    There is no feature bit for it; the one from the same release is the
    cheapest reliable proxy.  A kernel that still refuses it (a backport
    mismatch) answers ``-EINVAL`` and the backend drops to one-shot.
    """
    return bool(features & IORING_FEAT_RSRC_TAGS)


class IoUringBackend(Backend):
    """A backend on io_uring ``POLL_ADD``/``POLL_REMOVE``, through liburing.

    See the module docstring for the kernel behaviour it relies on.
    """

    name = "io_uring"
    options: ClassVar[Mapping[str, Option]] = {
        "entries": Option(
            int,
            256,
            "SQ ring size (rounded up to a power of two by the kernel). Changes of more "
            "fds than this in one iteration are submitted in several batches. At most "
            "32768, the kernel's IORING_MAX_ENTRIES.",
            minimum=1,
            maximum=32768,
        ),
        "cq_entries": Option(
            int,
            0,
            "CQ ring size (at least 'entries'); 0 lets the kernel pick twice 'entries'. "
            "Make it at least the number of fds that may become ready at once to avoid "
            "overflow handling. At most 65536, the kernel's IORING_MAX_CQ_ENTRIES.",
            minimum=0,
            maximum=65536,
        ),
        "multishot": Option(
            str,
            "auto",
            "'on': multishot POLL_ADD (Linux 5.13+) with a level re-check of reported fds; "
            "'off': one-shot POLL_ADD re-armed after each completion; 'auto': the faster "
            "of the two as measured (one-shot; see the io_uring module docs).",
            choices=("auto", "on", "off"),
        ),
    }

    @classmethod
    def probe(cls) -> str | None:
        """Load liburing and set up (and tear down) a 2-entry ring."""
        try:
            lib = _liburing.load()
            _liburing.Ring(lib, 2).close()
        except OSError as exc:
            if exc.errno in _TRANSIENT:
                # Out of descriptors *now* is not a property of the system
                # (the registry caches this answer): the constructor raises
                # it as OSError when it happens again.
                return None
            return exc.strerror or str(exc)
        return None

    def __init__(self, setup: BackendSetup) -> None:
        super().__init__(setup)
        opts = setup.options
        entries: int = opts.get("entries", 256)
        cq_entries: int = opts.get("cq_entries", 0)
        mode: str = opts.get("multishot", "auto")
        lib = _liburing.load()
        ring = _liburing.Ring(lib, entries, cq_entries=cq_entries)
        self._ring = ring
        self._lib = lib
        multishot = mode == "on" or (mode == "auto" and AUTO_MULTISHOT)
        if multishot and not _multishot_supported(ring.features):
            setup.log("io_uring: multishot poll needs Linux 5.13+; using one-shot POLL_ADD")
            multishot = False
        self._multishot = multishot
        self._can_park = _multishot_supported(ring.features)
        self._skip_remove_cqe = (
            IOSQE_CQE_SKIP_SUCCESS if ring.features & IORING_FEAT_CQE_SKIP else 0
        )

        self._lock = threading.Lock()
        #: fd -> new mask, recorded by update(), applied by wait().
        self._changes: dict[int, int] = {}
        #: fds registered as of the last update(), pending changes included
        #: (statistics()["fds"]); under _lock, like _changes.
        self._registered: set[int] = set()
        #: fd -> interest mask, for every registered fd (dropped ones too).
        self._mask: dict[int, int] = {}
        #: fd -> user_data of the request armed (or written to the SQ) for it.
        self._live: dict[int, int] = {}
        #: fd -> user_data to arm at the next wait, for what the hot path
        #: could not re-arm in place (SQ full, parked fds, transient errors,
        #: multishot requests the kernel ended).
        self._rearm: dict[int, int] = {}
        #: fd -> live user_data of fds to level-check at the next wait (multishot).
        self._probe: dict[int, int] = {}
        #: fds reported NVAL (or a fatal error) and not watched until update().
        self._dropped: set[int] = set()
        #: fd -> (st_dev, st_ino) of the file it named when last added or
        #: changed (None: it was closed then), checked when it is removed.
        self._files: dict[int, tuple[int, int] | None] = {}
        #: Events reaped while making room in the rings, returned by this wait.
        self._held: dict[int, int] = {}
        #: This wait could not empty the overflow list of CQEs posted before
        #: it: what leaves the list is re-checked, not reported (see _take).
        self._old_overflow = False
        #: tag (without _PROBE) -> how many requests carrying it may still
        #: post a CQE without being the fd's live request: cancelled requests
        #: until their final CQE is reaped, and multishot probes until their
        #: one CQE is.  _next_tag and _usable never make such a tag live.
        self._pending: dict[int, int] = {}
        self._seq = 0
        self._overflow_seen = ring.cq_koverflow[0]
        self._stats = {
            "overflow_flushes": 0,
            "resyncs": 0,
            "parked": 0,
            "full_sq_submits": 0,
        }

        # Preallocated wait arguments: a relative timespec (filled through a
        # memoryview of two int64, cheaper than ctypes fields) and the cqe
        # out-pointer liburing insists on.
        self._ts = _liburing.KernelTimespec()
        self._ts_view = memoryview(self._ts).cast("B").cast("q")
        self._ts_addr = ctypes.addressof(self._ts)
        self._cqe_ptr = ctypes.c_void_p()
        self._cqe_ptr_addr = ctypes.addressof(self._cqe_ptr)
        self._addr = ring.address
        self._swt = lib.submit_and_wait_timeout
        self._submit_fn = lib.submit
        # The fast path calls the argtypes-free variant with ready-made
        # pointer objects (see _liburing.Liburing.submit_and_wait_timeout_raw).
        self._swt_raw = lib.submit_and_wait_timeout_raw
        self._ring_arg = ctypes.c_void_p(ring.address)
        self._cqe_ptr_arg = ctypes.c_void_p(self._cqe_ptr_addr)
        self._ts_arg = ctypes.c_void_p(self._ts_addr)
        #: The general path (multishot probes, or liburing < 2.2 without
        #: submit_and_wait_timeout) instead of the one-shot fast path.
        self._general = multishot or self._swt is None
        # Hot-path state, bound once.
        self._ru32 = ring.ring_u32
        self._sqes = ring.sqes
        self._sq_khead = ring.sq_khead
        self._sq_kflags = ring.sq_kflags
        self._sq_mask = ring.sq_mask
        self._sq_entries = ring.sq_entries
        self._cq_khead = ring.cq_khead
        self._cq_ktail = ring.cq_ktail
        self._cq_mask = ring.cq_mask
        self._cq_koverflow = ring.cq_koverflow
        self._cqe_u64 = ring.cqe_u64
        self._cqe_s32 = ring.cqe_s32
        self._cqe_u32 = ring.cqe_u32

    # -- the contract ---------------------------------------------------------

    def update(self, fd: int, old_mask: int, new_mask: int) -> None:
        """Record the change; the home thread applies it at its next wait.

        Adding or changing never raises: io_uring refuses a closed fd
        asynchronously, reported as ``EVENT_NVAL`` by the wait that submits
        it.  Removing a fd that was closed while registered and never reported
        (an idle fd: its armed poll holds the file and stays silent) raises
        *after* recording the removal, as epoll's ``EPOLL_CTL_DEL`` does, so
        the error surfaces exactly once: :class:`OSError` ``EBADF`` if the
        number is closed, :class:`FileNotFoundError` if it was reused by
        another file.  Telling a reused number apart needs the identity of
        the file registered, so adding or changing a fd costs one ``fstat``
        (and so does a removal); waits cost nothing more.  A change records
        the file the number names at that moment: the new request watches
        that file, as epoll's re-registration would.
        """
        with self._lock:
            self._changes[fd] = new_mask
            if new_mask:
                self._registered.add(fd)
            else:
                self._registered.discard(fd)
        files = self._files
        if new_mask:
            try:
                st = os.fstat(fd)
            except OSError:
                # Closed already: the wait reports EVENT_NVAL.  If the number
                # is reused before that, removal reports it (nothing matches).
                files[fd] = None
            else:
                files[fd] = (st.st_dev, st.st_ino)
            return
        known = files.pop(fd, None)
        if old_mask and fd not in self._dropped:
            try:
                st = os.fstat(fd)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"fd {fd} was closed while registered with io_uring (its armed "
                    "POLL_ADD kept the file and reported nothing): "
                    f"{exc.strerror}",
                ) from None
            if known != (st.st_dev, st.st_ino):
                raise OSError(
                    errno.ENOENT,
                    f"fd {fd} was closed while registered with io_uring and its number "
                    "now names another file (the old file's armed POLL_ADD reported "
                    "nothing)",
                )

    def need_wait(self) -> bool:
        """True when changes or re-arms await submission, or CQEs await reaping."""
        return bool(
            self._changes
            or self._rearm
            or self._probe
            or self._held
            or self._cq_ktail[0] != self._cq_khead[0]
            or self._ru32[SQE_TAIL_INDEX] != self._sq_khead[0]
            or self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW
        )

    def wait(self, timeout_ns: int) -> list[tuple[int, int]]:
        """Submit what is pending, wait, and report; see the module docstring.

        This is the one-shot fast path: one ``ctypes`` call (the system call)
        when nothing unusual is pending.  Everything else -- multishot mode,
        deferred re-arms, EINTR, a wait that ended without a report, CQ
        overflow -- goes through :meth:`_wait_general`.
        """
        if self._changes:
            self._apply_changes()
        if self._general or self._rearm or self._held or self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW:
            # (Completions in the kernel's overflow list are as old as the
            # ring's; only _wait_general takes them out before waiting.)
            return self._wait_general(timeout_ns)
        cq_khead = self._cq_khead
        cq_ktail = self._cq_ktail
        head = cq_khead[0]
        deadline = 0
        if head == cq_ktail[0] and timeout_ns:
            if timeout_ns < 0:
                self._swt_raw(self._ring_arg, self._cqe_ptr_arg, 1, None, None)  # type: ignore[misc]
            else:
                deadline = monotonic_ns() + timeout_ns
                ts = self._ts_view
                ts[0], ts[1] = divmod(timeout_ns, _NS)
                self._swt_raw(self._ring_arg, self._cqe_ptr_arg, 1, self._ts_arg, None)  # type: ignore[misc]
            tail = cq_ktail[0]
            if head == tail:
                # Interrupted, timed out, or refused: the general path decides.
                return self._wait_general(timeout_ns, True, deadline)
        else:
            kept: list[tuple[int, int]] = []
            if head != cq_ktail[0]:
                # Completions posted before this wait (during the last
                # dispatch): re-armed, not reported, so the submit below
                # re-checks their level (see _recheck_old).
                kept = self._recheck_old()
                if self._rearm:
                    self._arm_pending()
                head = cq_khead[0]
            if self._ru32[SQE_TAIL_INDEX] != self._sq_khead[0] and self._submit_fn(self._addr) < 0:
                # Completions were already in (or this is a poll): the
                # pending re-arms went in without waiting (still-ready fds
                # complete inline); a refused submit is retried by _submit.
                self._submit()
            tail = cq_ktail[0]
            if kept:
                self._held_merge(kept)
        # The hot loop, as in _drain_oneshot (inlined: this runs every iteration).
        events: list[tuple[int, int]] = []
        if head != tail:
            live = self._live
            pending = self._pending
            u64 = self._cqe_u64
            s32 = self._cqe_s32
            cq_mask = self._cq_mask
            ru32 = self._ru32
            sqes = self._sqes
            sq_mask = self._sq_mask
            stail = ru32[SQE_TAIL_INDEX]
            room = self._sq_entries - ((stail - self._sq_khead[0]) & _U32)
            while head != tail:
                slot = head & cq_mask
                head = (head + 1) & _U32
                tag = u64[slot << 1]
                fd = tag & _FD_MASK
                if live.get(fd) != tag:
                    if pending:
                        self._settle(tag, slot)
                    continue
                res = s32[(slot << 2) | 2]
                if res > 0 and room and not tag & _PARK:
                    ready = res & _REPORTABLE
                    if ready:
                        events.append((fd, ready))
                        _pack_sqe(sqes, (stail & sq_mask) << 6, IORING_OP_POLL_ADD, 0, 0, fd,
                                  0, 0, 0, (tag >> _EV_SHIFT) & _EV_MASK, tag,
                                  0, 0, 0, 0, 0)  # fmt: skip
                        stail = (stail + 1) & _U32
                        room -= 1
                        continue
                # The slow path may submit (and even reap, if the kernel says
                # EBUSY): publish our positions first and reload them after.
                ru32[SQE_TAIL_INDEX] = stail
                cq_khead[0] = head
                self._cqe_slow(fd, tag, res, slot, events)
                head = cq_khead[0]
                tail = cq_ktail[0]
                stail = ru32[SQE_TAIL_INDEX]
                room = self._sq_entries - ((stail - self._sq_khead[0]) & _U32)
            ru32[SQE_TAIL_INDEX] = stail
            cq_khead[0] = head
        if (
            not events
            or self._held
            or self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW
            or self._cq_koverflow[0] != self._overflow_seen
        ):
            events = self._finish(events)
            if not events and timeout_ns:
                if timeout_ns > 0 and not deadline:
                    deadline = monotonic_ns() + timeout_ns
                return self._wait_general(timeout_ns, True, deadline)
        return events

    def close(self) -> None:
        """Release the ring (``io_uring_queue_exit`` cancels every armed poll)."""
        empty = memoryview(b"")
        self._ru32 = self._sqes = self._sq_khead = self._sq_kflags = empty
        self._cq_khead = self._cq_ktail = self._cq_koverflow = empty
        self._cqe_u64 = self._cqe_s32 = self._cqe_u32 = empty
        self._ts_view.release()
        self._ring.close()
        self._live.clear()
        self._rearm.clear()
        self._probe.clear()
        self._pending.clear()
        self._files.clear()
        with self._lock:
            self._registered.clear()

    def statistics(self) -> dict[str, object]:
        ring = self._ring
        with self._lock:
            # What update() was told, not what the next wait will submit.
            nfds = len(self._registered)
        return {
            "library": self._lib.path,
            "mode": "multishot" if self._multishot else "one-shot",
            "sq_entries": ring.sq_entries,
            "cq_entries": ring.cq_entries,
            "features": hex(ring.features),
            "fds": nfds,
            "dropped_closed_fds": sorted(self._dropped),
            **self._stats,
        }

    # -- submission -----------------------------------------------------------

    def _next_tag(self, fd: int, mask: int, flags: int = 0) -> int:
        """A tag for a new request on *fd* that no CQE still on its way can carry.

        Why this is enough: a CQE is matched to a fd by comparing its tag
        with the fd's live tag.  Every request that may still post a CQE is
        either the fd's live request (or one of its probes), or was cancelled
        by :meth:`_retire`, which counts it in ``_pending`` until its final
        CQE is reaped (:meth:`_settle`); probes are counted from the moment
        they are written.  Tags enter ``_live`` only from here or from
        :meth:`_usable` (a re-arm after the old request ended), and both skip
        every counted tag, so a live tag never equals the tag of another
        request that can still complete -- however often the sequence wraps.
        A CQE the kernel lost (CQ overflow without NODROP) leaves its count
        behind for good; that only retires one sequence number for that fd.

        The search skips one number per counted tag of this fd, mask and
        flags, so it ends after at most that many + 1 steps; all 16383 taken
        would need that many cancelled requests of one fd whose completions
        neither arrived nor were lost.
        """
        pending = self._pending
        base = ((mask & _EV_MASK) << _EV_SHIFT) | fd | flags
        seq = self._seq
        for _ in range(_SEQ_LIMIT):
            seq += 1
            if seq >= _SEQ_LIMIT:
                seq = 1
            tag = (seq << _SEQ_SHIFT) | base
            if tag not in pending:
                self._seq = seq
                return tag
        raise RuntimeError(f"io_uring: every tag for fd {fd} awaits a completion")

    def _usable(self, tag: int) -> int:
        """*tag*, to re-arm a request that ended, unless a pending request carries it."""
        if tag & ~_PROBE not in self._pending:
            return tag
        return self._next_tag(tag & _FD_MASK, (tag >> _EV_SHIFT) & _EV_MASK, tag & _PARK)

    def _retire(self, tag: int) -> None:
        """Cancel the request carrying *tag*; count it until its final CQE is reaped.

        POLL_REMOVE ends in one of three ways (cancelled: the request posts
        ``-ECANCELED``; ``-ENOENT``: its final CQE was already posted;
        ``-EALREADY``: it is being posted), so exactly one final CQE (no
        ``F_MORE``) is still to come in every case, unless the kernel drops it.
        """
        key = tag & ~_PROBE
        # Counted first: _push may submit and reap (EBUSY), and that reap may
        # already meet this request's final CQE.
        self._pending[key] = self._pending.get(key, 0) + 1
        self._push_remove(tag)

    def _settle(self, tag: int, slot: int) -> None:
        """A CQE that is not the live request's: count it off if it was a final one."""
        if self._cqe_u32[(slot << 2) | 3] & IORING_CQE_F_MORE:
            return  # a multishot request, armed until its cancellation ends it
        key = tag & ~_PROBE
        pending = self._pending
        count = pending.get(key)
        if count is not None:
            if count > 1:
                pending[key] = count - 1
            else:
                del pending[key]

    def _push(
        self,
        opcode: int,
        fd: int,
        addr: int,
        length: int,
        events: int,
        user_data: int,
        flags: int = 0,
    ) -> None:
        """Write one SQE, submitting first if the SQ is full (cold-path helper)."""
        ru32 = self._ru32
        tail = ru32[SQE_TAIL_INDEX]
        if ((tail - self._sq_khead[0]) & _U32) >= self._sq_entries:
            self._stats["full_sq_submits"] += 1
            self._submit()
            tail = ru32[SQE_TAIL_INDEX]
        _pack_sqe(self._sqes, (tail & self._sq_mask) << 6, opcode, flags, 0, fd, 0, addr,
                  length, events, user_data, 0, 0, 0, 0, 0)  # fmt: skip
        ru32[SQE_TAIL_INDEX] = (tail + 1) & _U32

    def _push_remove(self, user_data: int) -> None:
        self._push(IORING_OP_POLL_REMOVE, -1, user_data, 0, 0, _REMOVE_TAG, self._skip_remove_cqe)

    def _submit(self) -> None:
        """Submit the whole SQ; on ``-EBUSY``/``-EAGAIN`` reap (flush overflow) and retry."""
        submit = self._submit_fn
        addr = self._addr
        for _ in range(_BUSY_RETRIES):
            ret = submit(addr)
            if ret >= 0:
                if self._ru32[SQE_TAIL_INDEX] == self._sq_khead[0]:
                    return
                continue
            if -ret not in _RETRY_SUBMIT:
                raise OSError(-ret, f"io_uring_submit failed: {errno.errorcode.get(-ret)}")
            self._hold_completions()
        raise OSError(errno.EBUSY, "io_uring_submit kept failing with EBUSY/EAGAIN")

    def _hold_completions(self) -> None:
        """Make room: reap the CQ as old (re-checked, failures held), flush overflow.

        This can run before the wait has taken out the completions posted
        before it (a change at the start of a wait that fills the SQ), so
        what it reaps is treated as old, not reported.
        """
        self._held_merge(self._recheck_old())
        if self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW:
            self._lib.peek_batch_cqe(self._addr, self._cqe_ptr_addr, 1)

    def _apply_changes(self) -> None:
        with self._lock:
            changes = self._changes
            self._changes = {}
        live = self._live
        masks = self._mask
        multi = IORING_POLL_ADD_MULTI if self._multishot else 0
        for fd, new_mask in changes.items():
            old = live.pop(fd, None)
            if old is not None:
                self._retire(old)
            self._rearm.pop(fd, None)
            self._probe.pop(fd, None)
            self._dropped.discard(fd)
            if new_mask:
                masks[fd] = new_mask
                tag = self._next_tag(fd, new_mask)
                live[fd] = tag
                self._push(IORING_OP_POLL_ADD, fd, 0, multi, new_mask, tag)
            else:
                masks.pop(fd, None)

    def _arm_pending(self) -> None:
        """Arm every fd in ``_rearm``."""
        rearm = self._rearm
        self._rearm = {}
        live = self._live
        multi = IORING_POLL_ADD_MULTI if self._multishot else 0
        for fd, tag in rearm.items():
            length = IORING_POLL_ADD_MULTI if tag & _PARK else multi
            self._push(IORING_OP_POLL_ADD, fd, 0, length, (tag >> _EV_SHIFT) & _EV_MASK, tag)
            live[fd] = tag

    def _write_probes(self) -> None:
        """Multishot mode: level-check each fd reported by the previous wait.

        A one-shot POLL_ADD completes inline if the fd is still ready; the
        POLL_REMOVE right behind it cancels it otherwise.
        """
        probe = self._probe
        self._probe = {}
        live = self._live
        pending = self._pending
        for fd, tag in probe.items():
            if live.get(fd) != tag:
                continue
            pending[tag] = pending.get(tag, 0) + 1  # until its CQE is reaped
            ptag = tag | _PROBE
            self._push(IORING_OP_POLL_ADD, fd, 0, 0, (tag >> _EV_SHIFT) & _EV_MASK, ptag)
            self._push_remove(ptag)

    # -- waiting --------------------------------------------------------------

    def _wait_general(
        self, timeout_ns: int, waited: bool = False, deadline: int = 0
    ) -> list[tuple[int, int]]:
        """Every case the fast path in :meth:`wait` leaves out (see :meth:`_wait_rounds`)."""
        try:
            return self._wait_rounds(timeout_ns, waited, deadline)
        finally:
            self._old_overflow = False  # it describes one wait

    def _wait_rounds(self, timeout_ns: int, waited: bool, deadline: int) -> list[tuple[int, int]]:
        """Every case the fast path in :meth:`wait` leaves out.

        Arms deferred re-arms and probes, then loops: one
        ``io_uring_submit_and_wait_timeout`` per round, until something is
        reported or the deadline passed.  Retries, with the remaining time,
        after EINTR, after a return without a CQE for any reason, and after
        CQEs that report nothing (a cancelled request, a probe that found
        the fd not ready): it never returns early.  *waited* says the fast
        path already went through one round, and *deadline* (``monotonic_ns``)
        is when a finite timeout ends.
        """
        cq_khead = self._cq_khead
        cq_ktail = self._cq_ktail
        if not waited:
            self._old_overflow = not self._reap_old()
        if self._rearm:
            self._arm_pending()
        if self._probe:
            self._write_probes()
        if not waited and (timeout_ns == 0 or self._held):
            if self._ru32[SQE_TAIL_INDEX] != self._sq_khead[0]:
                self._submit()
            events = self._take()
            if events or timeout_ns == 0 or self._held:
                return self._finish(events)
        addr = self._addr
        swt = self._swt
        lib = self._lib
        ts_addr: int | None
        if timeout_ns < 0:
            ts_addr = None
            deadline = 0
        else:
            if not deadline:
                deadline = monotonic_ns() + timeout_ns
            ts = self._ts_view
            ts[0], ts[1] = divmod(timeout_ns, _NS)
            ts_addr = self._ts_addr
        while True:
            if deadline and waited:
                remaining = deadline - monotonic_ns()
                if remaining <= 0:
                    return self._finish([])
                ts = self._ts_view
                ts[0], ts[1] = divmod(remaining, _NS)
            waited = True
            if swt is not None:
                ret = swt(addr, self._cqe_ptr_addr, 1, ts_addr, None)
            else:
                ret = lib.submit(addr)
                if ret >= 0:
                    ret = lib.wait_cqe_timeout(addr, self._cqe_ptr_addr, ts_addr)
            if cq_ktail[0] != cq_khead[0] or self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW:
                events = self._finish(self._take())
                if events:
                    return events
                # Only stale or silent CQEs: arm what they asked for, wait on.
                if self._rearm:
                    self._arm_pending()
                if self._probe:
                    self._write_probes()
            elif ret < 0 and -ret not in _RETRY_WAIT:
                raise OSError(-ret, f"io_uring wait failed: {errno.errorcode.get(-ret)}")

    # -- completions ----------------------------------------------------------

    def _recheck_old(self) -> list[tuple[int, int]]:
        """Reap the CQEs that were posted before this wait, reporting only failures.

        Readiness is level-triggered (SPEC 3): a wait reports what is ready
        when it waits.  A CQE posted while the core was dispatching says the
        fd *was* ready; a callback may have drained it since.  So such a
        completion is not reported: its fd is re-armed (one-shot: the re-arm
        SQE the drain writes anyway) or level-probed (multishot), and the
        submission that follows re-checks it in the kernel -- a still-ready
        fd completes inline, in the same system call, and is reported from
        that fresh CQE.  No extra system call; the cost is one more SQE and
        CQE per fd that became ready during a dispatch.  Failures (a closed
        fd's ``EVENT_NVAL``, a refused poll's ``EVENT_ERR``) are final and are
        returned for this wait to report.
        """
        if self._multishot:
            events = self._drain_multishot()
            probe = self._probe
            return [(fd, mask) for fd, mask in events if fd not in probe]
        # One-shot: the drain writes every re-arm SQE; keep only failures.
        dropped = self._dropped
        return [(fd, mask) for fd, mask in self._drain_oneshot(False) if fd in dropped]

    def _reap_old(self) -> bool:
        """Take every CQE posted before this wait as old, the overflow list's too.

        The kernel keeps CQEs that did not fit in the ring in an overflow
        list and moves them into the ring at the next ``io_uring_enter`` with
        ``GETEVENTS`` -- which is this wait's own.  Taken then, a CQE posted
        long before (a multishot wake-up, a probe result left over by the
        last wait) would look fresh, and a fd drained since would be
        reported.  So the list is flushed here, before anything is
        submitted, and all of it goes through :meth:`_recheck_old` like the
        ring.  Returns whether the list is empty now; if completions keep
        arriving faster than the bounded flush takes them, it is not, and
        :meth:`_take` treats what comes out of it later as old as well.
        """
        cq_khead = self._cq_khead
        cq_ktail = self._cq_ktail
        kflags = self._sq_kflags
        rounds = self._flush_rounds()
        while True:
            if cq_ktail[0] != cq_khead[0]:
                self._held_merge(self._recheck_old())
            if not kflags[0] & IORING_SQ_CQ_OVERFLOW:
                return True
            if rounds <= 0:
                return False
            rounds -= 1
            self._stats["overflow_flushes"] += 1
            # The ring is empty: peek_batch_cqe enters with GETEVENTS, which
            # moves overflowed CQEs into the ring without submitting anything.
            self._lib.peek_batch_cqe(self._addr, self._cqe_ptr_addr, 1)

    def _take(self) -> list[tuple[int, int]]:
        """Reap the ring during a wait: report it, unless old CQEs may be in it.

        Old CQEs can only reach the ring now from an overflow list that
        :meth:`_reap_old` could not empty.  Until that list has been seen
        empty after a reap, everything reaped is re-checked instead (only
        failures reported).  Only this thread enters the ring, so nothing
        moves from the list into the ring between the reap and the check.
        """
        if not self._old_overflow:
            return self._drain()
        events = self._recheck_old()
        if not self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW:
            self._old_overflow = False
        return events

    def _flush_rounds(self) -> int:
        """How many overflow flushes can be needed for what may be outstanding.

        Each flush moves at most a ring's worth.  What can be outstanding is
        counted in requests: a live one posts one CQE (one-shot) or one per
        wake-up plus a final one when the kernel ends it (multishot); each
        counted in ``_pending`` (a cancelled request, a multishot probe) posts
        one, and the POLL_REMOVE sent for it posts one more when it finds the
        request already complete (``-ENOENT``: IOSQE_CQE_SKIP_SUCCESS
        suppresses successes only).  Hence two per request; the fixed extra
        rounds absorb wake-ups beyond that.  Sizing by armed fds alone
        undercounted multishot by half and left probe results in the list,
        to be reported by a later wait after the fd was drained.
        """
        requests = len(self._live) + sum(self._pending.values())
        return 2 * requests // self._ring.cq_entries + _OVERFLOW_ROUNDS

    def _held_merge(self, events: list[tuple[int, int]]) -> None:
        """Keep *events* for the current wait to report (merged per fd)."""
        held = self._held
        for fd, mask in events:
            held[fd] = held.get(fd, 0) | mask

    def _drain(self) -> list[tuple[int, int]]:
        return self._drain_multishot() if self._multishot else self._drain_oneshot()

    def _drain_oneshot(self, report: bool = True) -> list[tuple[int, int]]:
        """Turn the CQEs into ``(fd, mask)`` reports and re-arm each reported fd in place.

        With *report* false (:meth:`_recheck_old`) a ready fd is re-armed
        and not reported; the slow path's events are still returned.

        The hot loop of one-shot mode: memoryview reads, one dict lookup and
        one ``pack_into`` per CQE, no ``ctypes`` call.  The re-arm SQE reuses
        the tag (the old request is finished, so nothing else can carry it)
        and goes to the kernel with the next wait.  Anything unusual goes to
        :meth:`_cqe_slow`.
        """
        cq_khead = self._cq_khead
        head = cq_khead[0]
        tail = self._cq_ktail[0]
        events: list[tuple[int, int]] = []
        if head == tail:
            return events
        live = self._live
        pending = self._pending
        u64 = self._cqe_u64
        s32 = self._cqe_s32
        cq_mask = self._cq_mask
        ru32 = self._ru32
        sqes = self._sqes
        sq_mask = self._sq_mask
        sq_khead = self._sq_khead
        entries = self._sq_entries
        stail = ru32[SQE_TAIL_INDEX]
        room = entries - ((stail - sq_khead[0]) & _U32)
        while head != tail:
            slot = head & cq_mask
            head = (head + 1) & _U32
            tag = u64[slot << 1]
            fd = tag & _FD_MASK
            if live.get(fd) != tag:
                # Stale: removed, replaced, or one of our removes.
                if pending:
                    self._settle(tag, slot)
                continue
            res = s32[(slot << 2) | 2]
            if res > 0 and room and not tag & _PARK:
                ready = res & _REPORTABLE
                if ready:
                    if report:
                        events.append((fd, ready))
                    _pack_sqe(sqes, (stail & sq_mask) << 6, IORING_OP_POLL_ADD, 0, 0, fd, 0, 0,
                              0, (tag >> _EV_SHIFT) & _EV_MASK, tag, 0, 0, 0, 0, 0)  # fmt: skip
                    stail = (stail + 1) & _U32
                    room -= 1
                    continue
            # The slow path may submit (and even reap, if the kernel says
            # EBUSY): publish our positions first and reload them after.
            ru32[SQE_TAIL_INDEX] = stail
            cq_khead[0] = head
            self._cqe_slow(fd, tag, res, slot, events)
            head = cq_khead[0]
            tail = self._cq_ktail[0]
            stail = ru32[SQE_TAIL_INDEX]
            room = entries - ((stail - sq_khead[0]) & _U32)
        ru32[SQE_TAIL_INDEX] = stail
        cq_khead[0] = head
        return events

    def _cqe_slow(
        self, fd: int, tag: int, res: int, slot: int, events: list[tuple[int, int]]
    ) -> None:
        """One-shot mode: a live CQE the hot loop does not handle in place."""
        if tag & _PARK:
            self._parked_cqe(fd, tag, res, slot, events)
            return
        del self._live[fd]
        if res > 0:
            ready = res & _REPORTABLE
            if ready:
                events.append((fd, ready))
                # The SQ was full: armed by the next wait.
                self._rearm[fd] = self._usable(tag)
            else:
                self._park(fd, tag)
        else:
            self._failed(fd, tag, res, events)

    def _drain_multishot(self) -> list[tuple[int, int]]:
        """Multishot mode: merge the CQEs per fd; remember reported fds for a probe."""
        cq_khead = self._cq_khead
        head = cq_khead[0]
        tail = self._cq_ktail[0]
        events: list[tuple[int, int]] = []
        if head == tail:
            return events
        ready: dict[int, int] = {}
        live = self._live
        pending = self._pending
        probe = self._probe
        u64 = self._cqe_u64
        s32 = self._cqe_s32
        u32 = self._cqe_u32
        cq_mask = self._cq_mask
        while head != tail:
            slot = head & cq_mask
            head = (head + 1) & _U32
            tag = u64[slot << 1]
            fd = tag & _FD_MASK
            base = tag & ~_PROBE
            if live.get(fd) != base:
                if pending:
                    self._settle(tag, slot)
                continue
            if tag != base:
                self._settle(tag, slot)  # a live probe's one CQE
            res = s32[(slot << 2) | 2]
            more = u32[(slot << 2) | 3] & IORING_CQE_F_MORE
            if res > 0:
                bits = res & _REPORTABLE
                if bits:
                    ready[fd] = ready.get(fd, 0) | bits
                    probe[fd] = base
                if tag == base and not more:
                    del live[fd]  # the kernel ended the multishot request
                    self._rearm[fd] = self._usable(base)
            elif tag != base:
                if res != -errno.ECANCELED and res != 0:
                    # The probe was refused (EBADF: the fd was closed while the
                    # multishot request still holds the old file).  Cancel the
                    # request before _failed picks a tag for a re-arm, so that
                    # the re-arm cannot take the tag of the cancelled one.
                    del live[fd]
                    probe.pop(fd, None)
                    cq_khead[0] = head  # _push may reap: publish, then reload
                    self._retire(base)
                    head = cq_khead[0]
                    tail = self._cq_ktail[0]
                    self._failed(fd, base, res, events)
            elif res == 0 and more:
                continue
            else:
                del live[fd]
                probe.pop(fd, None)
                if res == -errno.EINVAL:
                    self._multishot_refused()
                    self._rearm[fd] = self._usable(base)
                else:
                    self._failed(fd, base, res, events)
        cq_khead[0] = head
        if ready:
            for fd, bits in events:
                ready[fd] = ready.get(fd, 0) | bits
            return list(ready.items())
        return events

    def _failed(self, fd: int, tag: int, res: int, events: list[tuple[int, int]]) -> None:
        """A POLL_ADD for *fd* completed with ``res <= 0``; its request is gone."""
        err = -res
        if err == errno.EBADF:
            events.append((fd, EVENT_NVAL))
            self._dropped.add(fd)
        elif res == 0 or err in _REARM_ON:
            self._rearm[fd] = self._usable(tag & ~_PARK)
        elif err == errno.EINVAL and tag & _PARK:
            self._can_park = False
            self.setup.log(
                "io_uring: this kernel refuses multishot poll; "
                "a fd with only POLLRDHUP ready may spin"
            )
            self._rearm[fd] = self._usable(tag & ~_PARK)
        else:
            self.setup.log(
                f"io_uring: POLL_ADD for fd {fd} failed with "
                f"{errno.errorcode.get(err, err)}; reporting EVENT_ERR once and "
                "not watching it until its handler changes"
            )
            events.append((fd, EVENT_ERR))
            self._dropped.add(fd)

    def _park(self, fd: int, tag: int) -> None:
        """Only POLLRDHUP (nothing the core asked for) was ready: wait for a wake-up."""
        if self._can_park:
            self._stats["parked"] += 1
            self._rearm[fd] = self._usable(tag | _PARK)
        else:
            self._rearm[fd] = self._usable(tag)

    def _parked_cqe(
        self, fd: int, tag: int, res: int, slot: int, events: list[tuple[int, int]]
    ) -> None:
        more = self._cqe_u32[(slot << 2) | 3] & IORING_CQE_F_MORE
        ready = res & _REPORTABLE if res > 0 else 0
        if ready:
            events.append((fd, ready))
            del self._live[fd]
            if more:
                self._retire(tag)
            self._rearm[fd] = self._usable(tag & ~_PARK)
        elif not more:
            del self._live[fd]
            if res < 0:
                self._failed(fd, tag, res, events)
            else:
                self._rearm[fd] = self._usable(tag)

    def _multishot_refused(self) -> None:
        if self._multishot:
            self._multishot = False
            self._can_park = False
            self._general = self._swt is None
            self._probe.clear()
            self.setup.log(
                "io_uring: the kernel refused multishot POLL_ADD (EINVAL); "
                "switching to one-shot POLL_ADD"
            )

    def _finish(self, events: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The cold end of a wait: flush CQ overflow, resync after drops, merge held events."""
        if not (
            self._held
            or self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW
            or self._cq_koverflow[0] != self._overflow_seen
        ):
            return events
        merged = self._held
        self._held = {}
        for fd, mask in events:
            merged[fd] = merged.get(fd, 0) | mask
        peek = self._lib.peek_batch_cqe
        # Bounded by what can be outstanding (_flush_rounds), so a burst is
        # reported in this wait without risking an endless loop.  Whatever is
        # left is old at the next wait, whose _reap_old re-checks it.
        for _ in range(self._flush_rounds()):
            if not self._sq_kflags[0] & IORING_SQ_CQ_OVERFLOW:
                break
            self._stats["overflow_flushes"] += 1
            # With the CQ ring empty, peek_batch_cqe enters the kernel with
            # GETEVENTS, which moves overflowed CQEs into the ring.
            peek(self._addr, self._cqe_ptr_addr, 1)
            if self._cq_ktail[0] == self._cq_khead[0]:
                break
            for fd, mask in self._take():
                merged[fd] = merged.get(fd, 0) | mask
        dropped = self._cq_koverflow[0]
        if dropped != self._overflow_seen:
            self._overflow_seen = dropped
            self._resync()
        return list(merged.items())

    def _resync(self) -> None:
        """CQEs were dropped: cancel and re-arm every watched fd (a level re-check)."""
        self._stats["resyncs"] += 1
        self.setup.log(
            "io_uring: the kernel dropped completions (CQ overflow without "
            "NODROP); re-arming every fd"
        )
        live = self._live
        for fd, mask in self._mask.items():
            if fd in self._dropped:
                continue
            old = live.pop(fd, None)
            if old is not None:
                self._retire(old)
            self._probe.pop(fd, None)
            self._rearm[fd] = self._next_tag(fd, mask)


@hookimpl
def aiocore_register_backends(register: Any) -> None:
    register(IoUringBackend)
