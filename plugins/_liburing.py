"""A small ``ctypes`` binding to liburing, loaded lazily, for the io_uring backend.

Nothing here runs at import time: :func:`load` finds and opens the library the
first time the backend is probed or opened, so ``import aiocore`` never touches
liburing, and a machine without it pays nothing.

Which library
=============

``liburing-ffi.so.2`` is tried first: liburing 2.4+ ships it with the
``static inline`` helpers of ``liburing.h`` (``io_uring_prep_*``,
``io_uring_cq_advance``) exported as real symbols.  Then ``liburing.so.2`` (the
only one liburing 2.3, Debian 12's ``liburing2``, has), then whatever
``ctypes.util.find_library("uring")`` answers.  ``AIOCORE_LIBURING=/path/x.so``
names one library explicitly and disables the search: a broken path then fails
loudly instead of silently falling back (the tests rely on that to simulate a
broken or refusing library without mocking).

This binding uses only functions every ``liburing.so.2`` exports (2.0 and
later) plus one that 2.2 added, and does the inline helpers' work itself:

* an SQE is the 64-byte ``struct io_uring_sqe`` at ``sqes[sqe_tail & mask]``,
  filled by ``struct.pack_into`` into a :class:`memoryview` over the mmapped
  SQE array; bumping ``sq.sqe_tail`` in ``struct io_uring`` is what
  ``io_uring_get_sqe()`` does, and liburing's own ``io_uring_submit()`` then
  publishes the tail to the kernel exactly as for its own SQEs;
* a CQE is read from a :class:`memoryview` over the mmapped CQ array and the
  CQ head is advanced by storing ``*cq.khead`` (``io_uring_cq_advance``).

``io_uring_get_sqe`` and ``io_uring_submit_and_wait_timeout`` (2.2+) are both
exported by liburing 2.3; the first is not used (a ``ctypes`` call per SQE
costs more than the arithmetic), the second is the wait and falls back to
``io_uring_submit`` + ``io_uring_wait_cqe_timeout`` on liburing 2.0/2.1.

Memory ordering
===============

liburing's inline helpers use ``smp_load_acquire(cq->ktail)`` and
``smp_store_release(cq->khead)``.  Python performs plain loads and stores
through the memoryviews.  On x86-64 (TSO) plain loads and stores already have
acquire/release semantics.  On weakly ordered CPUs (arm64) the loads of a CQE
are separated from the head store by hundreds of interpreter instructions and
at least one data dependency through Python objects, and the kernel only
writes a CQE slot after it observes the head moving past it; a reordering
that made the kernel overwrite a slot before we read it is not a practical
concern but is not formally excluded either.  The tail is read after
``io_uring_enter`` returned (a full barrier) whenever we waited.

Layout
======

The ``struct io_uring`` mirrored here is the liburing 2.x ABI (216 bytes on
LP64).  liburing 2.3 added ``ring_mask``/``ring_entries`` where older 2.x had
padding, so the masks are read through the kernel's ``kring_mask`` pointers,
which every 2.x fills.  Sizes and offsets were checked against the headers
with a small C program when this file was written; no header or compiler is
needed at run time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "ENV_VAR",
    "IORING_CQE_F_MORE",
    "IORING_FEAT_CQE_SKIP",
    "IORING_FEAT_EXT_ARG",
    "IORING_FEAT_NODROP",
    "IORING_FEAT_RSRC_TAGS",
    "IORING_OP_NOP",
    "IORING_OP_POLL_ADD",
    "IORING_OP_POLL_REMOVE",
    "IORING_POLL_ADD_MULTI",
    "IORING_SETUP_CQSIZE",
    "IORING_SQ_CQ_OVERFLOW",
    "IOSQE_CQE_SKIP_SUCCESS",
    "LIBRARY_NAMES",
    "SQE",
    "SQE_TAIL_INDEX",
    "IoUring",
    "IoUringParams",
    "KernelTimespec",
    "Liburing",
    "LiburingUnavailable",
    "Ring",
    "RingSetupError",
    "explain_setup_errno",
    "load",
]

#: Environment variable naming one library file to load instead of searching.
ENV_VAR: Final = "AIOCORE_LIBURING"
#: The sonames tried, in order, before ``ctypes.util.find_library("uring")``.
LIBRARY_NAMES: Final = ("liburing-ffi.so.2", "liburing.so.2")
_PACKAGE_HINT: Final = (
    "install liburing 2.x: the package is 'liburing2' on Debian/Ubuntu, "
    "'liburing' on Fedora/RHEL/Arch, 'liburing' on Alpine"
)

# -- kernel constants (include/uapi/linux/io_uring.h) -----------------------

IORING_OP_NOP: Final = 0
IORING_OP_POLL_ADD: Final = 6
IORING_OP_POLL_REMOVE: Final = 7

IOSQE_CQE_SKIP_SUCCESS: Final = 1 << 6  # 5.17+, IORING_FEAT_CQE_SKIP

IORING_POLL_ADD_MULTI: Final = 1 << 0  # in sqe->len; 5.13+

IORING_CQE_F_MORE: Final = 1 << 1

IORING_SQ_CQ_OVERFLOW: Final = 1 << 1

IORING_SETUP_CQSIZE: Final = 1 << 3  # params.cq_entries is valid

IORING_FEAT_NODROP: Final = 1 << 1  # 5.5+
IORING_FEAT_EXT_ARG: Final = 1 << 8  # 5.11+
IORING_FEAT_RSRC_TAGS: Final = 1 << 10  # 5.13+, the release that added multishot poll
IORING_FEAT_CQE_SKIP: Final = 1 << 11  # 5.17+

#: ``struct io_uring_sqe`` as one ``struct.pack`` format: opcode, flags,
#: ioprio, fd, off, addr, len, op flags (poll32_events), user_data, buf_index,
#: personality, file_index, addr3, pad.  64 bytes, little-endian as the
#: kernel's native layout on the little-endian targets io_uring runs on.
SQE: Final = struct.Struct("=BBHiQQIIQHHiQQ")
assert SQE.size == 64

# -- structures (liburing.h, liburing 2.x ABI) ------------------------------


class IoSqringOffsets(ctypes.Structure):
    """``struct io_sqring_offsets``: where the kernel put each SQ ring field."""

    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("resv2", ctypes.c_uint64),
    ]


class IoCqringOffsets(ctypes.Structure):
    """``struct io_cqring_offsets``: where the kernel put each CQ ring field."""

    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("resv2", ctypes.c_uint64),
    ]


class IoUringParams(ctypes.Structure):
    """``struct io_uring_params`` (120 bytes): setup flags in, features out."""

    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", IoSqringOffsets),
        ("cq_off", IoCqringOffsets),
    ]


class IoUringSq(ctypes.Structure):
    """liburing's ``struct io_uring_sq`` (104 bytes).

    Pointers are kept as ``c_void_p`` (plain ints) because they are only
    used to build memoryviews once.
    """

    _fields_ = [
        ("khead", ctypes.c_void_p),
        ("ktail", ctypes.c_void_p),
        ("kring_mask", ctypes.c_void_p),
        ("kring_entries", ctypes.c_void_p),
        ("kflags", ctypes.c_void_p),
        ("kdropped", ctypes.c_void_p),
        ("array", ctypes.c_void_p),
        ("sqes", ctypes.c_void_p),
        ("sqe_head", ctypes.c_uint32),
        ("sqe_tail", ctypes.c_uint32),
        ("ring_sz", ctypes.c_size_t),
        ("ring_ptr", ctypes.c_void_p),
        ("ring_mask", ctypes.c_uint32),  # padding before liburing 2.3
        ("ring_entries", ctypes.c_uint32),  # padding before liburing 2.3
        ("pad", ctypes.c_uint32 * 2),
    ]


class IoUringCq(ctypes.Structure):
    """liburing's ``struct io_uring_cq`` (88 bytes)."""

    _fields_ = [
        ("khead", ctypes.c_void_p),
        ("ktail", ctypes.c_void_p),
        ("kring_mask", ctypes.c_void_p),
        ("kring_entries", ctypes.c_void_p),
        ("kflags", ctypes.c_void_p),
        ("koverflow", ctypes.c_void_p),
        ("cqes", ctypes.c_void_p),
        ("ring_sz", ctypes.c_size_t),
        ("ring_ptr", ctypes.c_void_p),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("pad", ctypes.c_uint32 * 2),
    ]


class IoUring(ctypes.Structure):
    """liburing's ``struct io_uring`` (216 bytes), the handle every call takes."""

    _fields_ = [
        ("sq", IoUringSq),
        ("cq", IoUringCq),
        ("flags", ctypes.c_uint32),
        ("ring_fd", ctypes.c_int),
        ("features", ctypes.c_uint32),
        ("enter_ring_fd", ctypes.c_int),
        ("int_flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("pad2", ctypes.c_uint32),
    ]


class IoUringCqe(ctypes.Structure):
    """``struct io_uring_cqe`` (16 bytes without ``IORING_SETUP_CQE32``)."""

    _fields_ = [
        ("user_data", ctypes.c_uint64),
        ("res", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


class KernelTimespec(ctypes.Structure):
    """``struct __kernel_timespec``: 64-bit seconds and nanoseconds on every ABI."""

    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


assert ctypes.sizeof(IoUring) == 216
assert ctypes.sizeof(IoUringParams) == 120
assert ctypes.sizeof(IoUringCqe) == 16
assert IoUring.cq.offset == 104 and IoUring.flags.offset == 192
assert IoUringSq.sqe_tail.offset == 68

#: Index of ``sq.sqe_tail`` in a ``uint32`` view of ``struct io_uring``.
SQE_TAIL_INDEX: Final = IoUringSq.sqe_tail.offset // 4

# -- errors -----------------------------------------------------------------


class LiburingUnavailable(OSError):
    """liburing could not be loaded (or is not liburing); ``str()`` says why."""


class RingSetupError(OSError):
    """The kernel refused to set up a ring; the message explains the errno."""


_ERRNO_MEANING: Final = {
    errno.EPERM: (
        "io_uring is forbidden for this process: a seccomp filter (the default "
        "profile of Docker/containerd/podman and of many sandboxes blocks "
        "io_uring_setup), or sysctl kernel.io_uring_disabled=2 (or =1 with this "
        "user outside kernel.io_uring_group)"
    ),
    errno.ENOSYS: (
        "the kernel has no io_uring: built without CONFIG_IO_URING, older than "
        "5.1, or a sandbox (gVisor, some seccomp profiles) hides the system call"
    ),
    errno.ENOMEM: (
        "the ring memory could not be allocated or locked: before Linux 5.12 "
        "rings count against RLIMIT_MEMLOCK (raise 'ulimit -l' or use a smaller "
        "'entries' option)"
    ),
    errno.EINVAL: (
        "the kernel rejected the ring parameters ('entries' above its limit, or "
        "setup flags it does not know)"
    ),
    errno.EMFILE: "the process has too many open files (RLIMIT_NOFILE)",
    errno.ENFILE: "the system has too many open files",
    errno.EFAULT: "bad address passed to io_uring_setup (a liburing ABI mismatch?)",
}


def _io_uring_disabled() -> str | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip()
    except OSError:
        return None


def explain_setup_errno(err: int) -> str:
    """Say what *err* from ``io_uring_setup`` usually means here.

    Includes ``kernel.io_uring_disabled`` when the kernel has that sysctl
    (6.6+), since it is the first thing to check for EPERM.
    """
    name = errno.errorcode.get(err, f"errno {err}")
    meaning = _ERRNO_MEANING.get(err, os.strerror(err))
    text = f"io_uring_setup failed with {name} ({os.strerror(err)}): {meaning}"
    disabled = _io_uring_disabled()
    if disabled is not None:
        text += f"; kernel.io_uring_disabled is {disabled}"
        text += {
            "0": " (enabled for everyone)",
            "1": " (only for members of kernel.io_uring_group)",
            "2": " (disabled for everyone)",
        }.get(disabled, "")
    return text


# -- the library ------------------------------------------------------------

#: A foreign function with ``restype``/``argtypes`` set.
CFunction: TypeAlias = Callable[..., Any]

_c_void_p = ctypes.c_void_p
_c_uint = ctypes.c_uint


@dataclass(frozen=True)
class Liburing:
    """A loaded liburing and the functions this binding calls.

    Each function takes the ring as an integer address (``c_void_p``), which
    ctypes converts faster than a ``byref`` object.
    """

    path: str
    handle: ctypes.CDLL
    queue_init_params: CFunction
    queue_exit: CFunction
    submit: CFunction
    wait_cqe_timeout: CFunction
    peek_batch_cqe: CFunction
    #: ``None`` on liburing 2.0/2.1 (added in 2.2).
    submit_and_wait_timeout: CFunction | None
    #: The same function without ``argtypes``, for the hot path: pass
    #: ``ctypes.c_void_p`` objects for the pointers, a small Python int for
    #: ``wait_nr`` and ``None`` for NULL.  Skipping the per-argument
    #: ``from_param`` conversion saves about 180 ns of the ~600 ns a call costs.
    submit_and_wait_timeout_raw: CFunction | None
    #: Exported by every liburing.so.2 up to at least 2.3; not used on the hot
    #: path, only recorded so ``statistics()`` can say what the library offers.
    has_get_sqe: bool


_REQUIRED: Final = (
    "io_uring_queue_init_params",
    "io_uring_queue_exit",
    "io_uring_submit",
    "io_uring_wait_cqe_timeout",
    "io_uring_peek_batch_cqe",
)

_cache: dict[str | None, Liburing | str] = {}
_cache_lock = threading.Lock()


def _bind(path: str, handle: ctypes.CDLL) -> Liburing:
    missing = [name for name in _REQUIRED if not hasattr(handle, name)]
    if missing:
        raise LiburingUnavailable(
            errno.ENOENT,
            f"{path} loaded but does not export {', '.join(missing)}: it is not "
            f"liburing 2.x ({_PACKAGE_HINT})",
        )

    def fn(name: str, restype: type | None, *argtypes: type) -> CFunction:
        f: Any = getattr(handle, name)
        f.restype = restype
        f.argtypes = argtypes
        bound: CFunction = f
        return bound

    swt = swt_raw = None
    if hasattr(handle, "io_uring_submit_and_wait_timeout"):
        # handle[name] makes a new function object (getattr caches one), so
        # the raw variant keeps argtypes unset.
        raw: Any = handle["io_uring_submit_and_wait_timeout"]
        raw.restype = ctypes.c_int
        swt_raw = raw
        swt = fn(
            "io_uring_submit_and_wait_timeout",
            ctypes.c_int,
            _c_void_p,
            _c_void_p,
            _c_uint,
            _c_void_p,
            _c_void_p,
        )
    return Liburing(
        path=path,
        handle=handle,
        queue_init_params=fn(
            "io_uring_queue_init_params", ctypes.c_int, _c_uint, _c_void_p, _c_void_p
        ),
        queue_exit=fn("io_uring_queue_exit", None, _c_void_p),
        submit=fn("io_uring_submit", ctypes.c_int, _c_void_p),
        wait_cqe_timeout=fn(
            "io_uring_wait_cqe_timeout", ctypes.c_int, _c_void_p, _c_void_p, _c_void_p
        ),
        peek_batch_cqe=fn("io_uring_peek_batch_cqe", ctypes.c_uint, _c_void_p, _c_void_p, _c_uint),
        submit_and_wait_timeout=swt,
        submit_and_wait_timeout_raw=swt_raw,
        has_get_sqe=hasattr(handle, "io_uring_get_sqe"),
    )


def _search() -> Liburing:
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        try:
            handle = ctypes.CDLL(explicit)
        except OSError as exc:
            raise LiburingUnavailable(
                errno.ENOENT,
                f"{ENV_VAR}={explicit} could not be loaded ({exc}); unset {ENV_VAR} "
                f"to search {', '.join(LIBRARY_NAMES)}",
            ) from None
        return _bind(explicit, handle)
    tried: list[str] = []
    for name in LIBRARY_NAMES:
        try:
            handle = ctypes.CDLL(name)
        except OSError:
            tried.append(name)
            continue
        return _bind(name, handle)
    found = ctypes.util.find_library("uring")
    if found is not None:
        try:
            return _bind(found, ctypes.CDLL(found))
        except OSError:
            pass
    tried.append(f"find_library('uring') -> {found!r}")
    raise LiburingUnavailable(
        errno.ENOENT, f"liburing not found (tried {', '.join(tried)}); {_PACKAGE_HINT}"
    )


def load() -> Liburing:
    """Return the loaded liburing, loading it on first use.

    Raises :class:`LiburingUnavailable` with a message naming every library
    tried and the package that provides it.  The outcome is cached per value
    of ``AIOCORE_LIBURING`` so tests can switch libraries.
    """
    key = os.environ.get(ENV_VAR) or None
    cached = _cache.get(key)
    if cached is None:
        with _cache_lock:
            cached = _cache.get(key)
            if cached is None:
                try:
                    cached = _search()
                except LiburingUnavailable as exc:
                    cached = exc.strerror or str(exc)
                _cache[key] = cached
    if isinstance(cached, str):
        raise LiburingUnavailable(errno.ENOENT, cached)
    return cached


# -- one ring ---------------------------------------------------------------


def _u32_view(address: int, count: int = 1) -> memoryview:
    return memoryview((ctypes.c_uint32 * count).from_address(address)).cast("B").cast("I")


class Ring:
    """One io_uring instance set up through liburing, with direct memory views.

    The attributes are what the backend's hot path touches, each a
    :class:`memoryview` indexed without a ``ctypes`` call:

    ``sqes``
        the SQE array as bytes (``SQE.pack_into(sqes, slot * 64, ...)``)
    ``ring_u32``
        ``struct io_uring`` itself as ``uint32``; ``ring_u32[SQE_TAIL_INDEX]``
        is liburing's ``sq.sqe_tail``
    ``sq_khead``, ``sq_kflags``
        the kernel's SQ head and flags (``IORING_SQ_CQ_OVERFLOW``), ``[0]``
    ``cq_khead``, ``cq_ktail``, ``cq_koverflow``
        the kernel's CQ head, tail and dropped-CQE counter, ``[0]``
    ``cqe_u64``, ``cqe_s32``, ``cqe_u32``
        the CQE array: slot ``i`` has ``user_data`` at ``cqe_u64[2*i]``,
        ``res`` at ``cqe_s32[4*i+2]`` and ``flags`` at ``cqe_u32[4*i+3]``
    """

    def __init__(self, lib: Liburing, entries: int, flags: int = 0, cq_entries: int = 0) -> None:
        """Set up a ring of *entries* SQEs (and *cq_entries* CQEs, 0: the kernel's 2x).

        Raises :class:`RingSetupError` with the errno explained when the
        kernel refuses.  *cq_entries* below *entries* is raised to it (the
        kernel would refuse it with EINVAL).
        """
        self.lib = lib
        self.ring = IoUring()
        self.params = IoUringParams()
        if cq_entries:
            flags |= IORING_SETUP_CQSIZE
            self.params.cq_entries = max(cq_entries, entries)
        self.params.flags = flags
        self.address: int = ctypes.addressof(self.ring)
        self._open = False
        ret = lib.queue_init_params(entries, self.address, ctypes.addressof(self.params))
        if ret < 0:
            raise RingSetupError(-ret, explain_setup_errno(-ret))
        self._open = True
        try:
            r = self.ring
            self.ring_fd: int = r.ring_fd
            self.features: int = r.features
            self.sq_entries: int = _u32_view(r.sq.kring_entries)[0]
            self.sq_mask: int = _u32_view(r.sq.kring_mask)[0]
            self.cq_entries: int = _u32_view(r.cq.kring_entries)[0]
            self.cq_mask: int = _u32_view(r.cq.kring_mask)[0]
            self.sqes = memoryview(
                (ctypes.c_ubyte * (64 * self.sq_entries)).from_address(r.sq.sqes)
            ).cast("B")
            self.ring_u32 = memoryview(self.ring).cast("B").cast("I")
            self.sq_khead = _u32_view(r.sq.khead)
            self.sq_kflags = _u32_view(r.sq.kflags)
            self.cq_khead = _u32_view(r.cq.khead)
            self.cq_ktail = _u32_view(r.cq.ktail)
            self.cq_koverflow = _u32_view(r.cq.koverflow)
            cqes = memoryview(
                (ctypes.c_ubyte * (16 * self.cq_entries)).from_address(r.cq.cqes)
            ).cast("B")
            self.cqe_u64 = cqes.cast("Q")
            self.cqe_s32 = cqes.cast("i")
            self.cqe_u32 = cqes.cast("I")
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` released the ring."""
        return not self._open

    def close(self) -> None:
        """Unmap the rings and close the ring fd (``io_uring_queue_exit``); idempotent.

        The memoryviews point into the unmapped memory, so they are dropped
        first: touching the ring after close raises instead of crashing.
        """
        if not self._open:
            return
        self._open = False
        for name in (
            "sqes",
            "ring_u32",
            "sq_khead",
            "sq_kflags",
            "cq_khead",
            "cq_ktail",
            "cq_koverflow",
            "cqe_u64",
            "cqe_s32",
            "cqe_u32",
        ):
            view = self.__dict__.pop(name, None)
            if view is not None:
                view.release()
        self.lib.queue_exit(self.address)
