"""The ``shmring`` source: a shared-memory ring a context can busy-poll, as QEMU polls a virtqueue.

A :class:`ShmRing` is a single-producer, single-consumer ring of 64-bit
values in shared memory plus an :class:`~aiocore.EventNotifier` (an eventfd on
Linux).  The producer (another process, or another thread) calls
:meth:`ShmRing.push`; the consumer attaches it to a context::

    ring = ShmRing(capacity=1024)          # before fork(): both sides share it
    if os.fork() == 0:                      # producer
        ring.push(42)                       # or ring.producer().push(42): faster
        os._exit(0)
    ctx.sources.shmring.attach(ring, on_items)   # on_items(list_of_ints) at home

Why a ring and not only the eventfd: a wake-up through the kernel (write the
eventfd, ``epoll_wait`` returns, the scheduler runs the loop) costs about ten
microseconds, while a loop that is already spinning on the ring sees a new
value in well under one.  The ring's handler has an ``io_poll`` (SPEC 5), so
a context with ``poll_max_ns`` > 0 busy-polls the ring for its adaptive
window before sleeping, and the producer skips the eventfd write (a
system call) while the consumer is polling: virtio's ``VRING_USED_F_NO_NOTIFY``.

The memory layout (native-endian 64-bit words, the mapping page-aligned).
Each control word has a 64-byte cache line of its own: ``head`` is written by
the producer and ``tail`` and ``polling`` by the consumer, and two words
written by different CPUs on one line make each write steal the line from
the other side (false sharing), a cross-core miss of a few hundred
nanoseconds on the path being measured:

=====  =========================================================================
word   meaning
=====  =========================================================================
0      ``head``: values pushed so far (written by the producer only, after the
       value's sequence number; for :meth:`ShmRing.pending` and a new producer)
8      ``tail``: values consumed so far (written by the consumer only)
16     ``polling``: 1 between the consumer's ``io_poll_begin`` and ``io_poll_end``
24     capacity
32...  the slots, two words each: value *i* lives in slot ``i % capacity``, at
       word ``32 + 2 * (i % capacity)`` its *sequence number* ``i + 1`` (0: never
       written), at the next word the value itself
=====  =========================================================================

Why each slot carries its sequence number, as the descriptors of a virtio
*packed* virtqueue carry their own "available" flag: the consumer spins on
the next slot's sequence word, not on ``head``.  A value and its sequence
number share a cache line, so a push reaches the spinning consumer in one
cross-core transfer; with a separate ``head`` word the consumer fetched
``head``'s line and then the slot's, two transfers, which cost 0.29 us of a
1.84 us wake-up here (a raw consumer of each layout, seven paired rounds).
The spin also reads one word instead of two.

The protocol, and the ordering it needs:

* **Publication.**  The producer writes the value, then its sequence number;
  the consumer reads the sequence number, then the value.  Two stores seen
  in order by two loads seen in order: x86-64 (TSO) gives that for plain
  stores and loads, and each 8-byte aligned word is written by one
  ``memcpy``, a single store.
  On weakly ordered CPUs (ARM, POWER) Python can issue no store or load
  barrier, so this source is only supported on x86-64 and says so: its
  availability probe refuses other machines.
* **No lost kick.**  The producer stores the sequence number and then loads
  ``polling``; the consumer stores ``polling = 0`` (``io_poll_end``) and then
  loads the next sequence number (the core calls every ``io_poll`` once more
  after ending poll mode, SPEC 5).  That is the notify protocol again (a
  Dekker pair), and it needs store-load ordering, which TSO does *not* give:
  a store may wait in the store buffer while a later load goes ahead.  Both
  sides therefore put a full barrier between their store and their load: a
  lock-prefixed instruction, which on x86 drains the store buffer.  Python
  has no fence, but acquiring and releasing a :class:`threading.Lock`
  executes an atomic compare-and-swap (``lock cmpxchg``) on every CPython
  version, which is one.  If the producer saw ``polling == 1``, the
  consumer's once-more check (or its still-running busy loop) comes after the
  new sequence number; if it saw 0, it writes the eventfd and the consumer's
  wait returns.
* **Full ring.**  :meth:`ShmRing.push` returns ``False`` and stores nothing
  when ``head - tail == capacity``; the producer decides whether to retry.

Sharing: the mapping is anonymous and ``MAP_SHARED``, so a child made with
``os.fork()`` (or ``multiprocessing`` with the ``fork`` start method) shares
it and inherits the eventfd.  Across ``exec`` use
:class:`multiprocessing.shared_memory.SharedMemory` instead; that is left out
here.
"""

from __future__ import annotations

import mmap
import os
import platform
import threading
from collections.abc import Callable
from typing import Any, Final

from aiocore import AioContext, EventNotifier, check_home_thread, close_newest_first, hookimpl

__all__ = [
    "RingAttachment",
    "RingProducer",
    "ShmRing",
    "ShmRingSource",
    "shmring_unavailable_reason",
]

#: 64-bit words per 64-byte cache line: each control word gets a line.
_LINE: Final = 8
_HEAD: Final = 0
_TAIL: Final = 1 * _LINE
_POLLING: Final = 2 * _LINE
_CAPACITY: Final = 3 * _LINE
_SLOTS: Final = 4 * _LINE
#: Words per slot: the sequence number, then the value.
_SLOT_WORDS: Final = 2

_X86_64: Final = ("x86_64", "amd64")

#: Executing a lock-prefixed instruction is the full barrier (see above).
_fence_lock = threading.Lock()


def _full_barrier() -> None:
    """A store-load barrier: acquire and release a lock (``lock cmpxchg`` on x86)."""
    _fence_lock.acquire()
    _fence_lock.release()


def shmring_unavailable_reason() -> str | None:
    """``None`` if the ring's lock-free protocol holds on this machine, else why not."""
    machine = platform.machine().lower()
    if machine not in _X86_64:
        return (
            f"the shared-memory ring needs x86-64's store ordering (TSO), and Python has no "
            f"memory barrier to make up for a weaker one; this machine is {machine!r}"
        )
    return None


def _collect(words: memoryview, capacity: int, tail: int) -> tuple[list[int], int]:
    """The values published from *tail* on, and the tail after them.

    A value is there when its slot's sequence number is its index plus one;
    the first slot that is not says where the producer is.  The producer
    never overwrites a slot the tail has not passed, so the scan ends within
    one lap.
    """
    values: list[int] = []
    at = _SLOTS + _SLOT_WORDS * (tail % capacity)
    end = _SLOTS + _SLOT_WORDS * capacity
    while words[at] == tail + 1:
        values.append(words[at + 1])
        tail += 1
        at += _SLOT_WORDS
        if at == end:
            at = _SLOTS
    return values, tail


class ShmRing:
    """A single-producer single-consumer ring of 64-bit values in shared memory.

    :param capacity: number of slots (1 to 2**20).
    :param kind: the :class:`~aiocore.EventNotifier` implementation for the
        kick (default: the preferred one, an eventfd on Linux).

    Create it before ``fork()``; the producer calls :meth:`push`, the
    consumer attaches it with ``ctx.sources.shmring.attach(ring, on_items)``.
    Close it (:meth:`close`) in each process when done.
    """

    def __init__(self, capacity: int = 1024, *, kind: str | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__} {capacity!r}")
        if not 1 <= capacity <= 1 << 20:
            raise ValueError(f"capacity must be between 1 and {1 << 20}, got {capacity}")
        reason = shmring_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        # Anonymous and MAP_SHARED; page-aligned, so every line is a line.
        self._map = mmap.mmap(-1, 8 * (_SLOTS + _SLOT_WORDS * capacity))
        try:
            self._notifier = EventNotifier(kind=kind)
        except BaseException:
            self._map.close()
            raise
        self._words: memoryview | None = memoryview(self._map).cast("Q")
        #: pid of the process whose context has this ring attached (0: none).
        self._attached_pid = 0
        self._words[_CAPACITY] = capacity
        self.capacity = capacity
        #: Eventfd writes this process made in :meth:`push` (the producer's cost).
        self.kicks = 0
        #: push()'s producer, made on first use.
        self._producer: RingProducer | None = None
        #: The attachment's take() while this process consumes the ring
        #: through a context: it keeps the consumer's cursor (see take()).
        self._consumer_take: Callable[[], list[int]] | None = None

    def __repr__(self) -> str:
        words = self._words
        if words is None:
            return "<ShmRing closed>"
        return (
            f"<ShmRing capacity={self.capacity} head={words[_HEAD]} tail={words[_TAIL]} "
            f"polling={words[_POLLING]}>"
        )

    def _live(self) -> memoryview:
        words = self._words
        if words is None:
            raise RuntimeError("this ShmRing is closed")
        return words

    @property
    def notifier(self) -> EventNotifier:
        """The kick: the consumer's context watches it."""
        return self._notifier

    # -- producer side ---------------------------------------------------------

    def push(self, value: int) -> bool:
        """Append *value* (0 <= value < 2**64); return ``False`` if the ring is full.

        Writes the eventfd only if the consumer is not busy-polling.  One
        producer at a time (one process, or one thread holding its own lock);
        this method reads ``head`` from the shared memory on every call, so
        the producing side may change between calls.  A process that pushes
        often uses :meth:`producer` instead.
        """
        producer = self._producer
        if producer is None:
            producer = self._producer = RingProducer(self)
        else:
            producer._sync(self._live()[_HEAD])
        return producer.push(value)

    def producer(self) -> RingProducer:
        """The producing end for this process: :meth:`RingProducer.push`.

        It keeps ``head`` to itself, so it must be the ring's only producer
        while it is used; to hand over, stop using it and call
        :meth:`producer` in the new producer.
        """
        return RingProducer(self)

    def _kick(self) -> None:
        self._notifier.set()
        self.kicks += 1

    # -- consumer side (the attachment calls these in the home thread) ---------

    def pending(self) -> int:
        """How many values are pushed and not yet consumed.

        ``head`` is stored just after a value is published, so a push in
        progress in another process may show here a moment late.
        """
        words = self._live()
        return int(words[_HEAD] - words[_TAIL])

    def take(self) -> list[int]:
        """Consume and return every value pushed so far, oldest first.

        While the ring is attached to a context in this process this goes
        through the attachment, whose busy-poll keeps its own cursor: a take
        that moved the tail behind its back would make it deliver the taken
        values again.
        """
        words = self._live()
        consumer_take = self._consumer_take
        if consumer_take is not None and self._attached_pid == os.getpid():
            return consumer_take()
        tail = words[_TAIL]
        values, tail = _collect(words, self.capacity, tail)
        words[_TAIL] = tail
        return values

    def _set_polling(self, polling: bool) -> None:
        words = self._live()
        words[_POLLING] = 1 if polling else 0
        if not polling:
            _full_barrier()  # store polling = 0, then the core's once-more io_poll loads head

    @property
    def consumer_polling(self) -> bool:
        """True while the consumer's context busy-polls the ring (no kicks needed)."""
        return bool(self._live()[_POLLING])

    def close(self) -> None:
        """Release this process's mapping and eventfd.  Idempotent.

        :raises RuntimeError: in the process that attached it, while it is
            attached (its handler would read a released mapping): detach first.
        """
        if self._words is not None and self._attached_pid == os.getpid():
            raise RuntimeError(f"{self!r} is attached to a context: detach it before closing")
        words, self._words = self._words, None
        if words is None:
            return
        words.release()
        self._map.close()
        self._notifier.close()


class RingProducer:
    """The producing end of a :class:`ShmRing`: made by :meth:`ShmRing.producer`.

    Why a separate object: everything a producer does between taking a value
    and publishing it is part of the consumer's latency, and a producer that
    has slept between values runs that code cold, where each Python
    operation costs several times its usual price.  So :meth:`push` does the
    least it can before publishing: a type check, then the value's store
    (which also range-checks the value; nothing is visible until the
    sequence number moves), then the sequence number.  It keeps the next
    value's sequence number and its slot's two word indices in this object
    instead of reading the shared words, and remembers the last ``tail`` it
    saw (``tail`` only grows, so a stale copy can only make the ring look
    fuller than it is; the consumer's word is read again only then).
    ``head`` and the bookkeeping for the next push come after publishing,
    including every addition: an addition makes a new ``int`` object, and
    in a producer that slept the allocator's memory is cold too.  Computing
    the value's index and the new ``head`` before the stores, as this class
    did, cost the polled consumer 0.03-0.11 us (two paired runs of 25 and 31
    rounds; a raw consumer of the ring 0.08-0.09 us).

    The price: while a producer is in use nobody else may push to the ring,
    not even :meth:`ShmRing.push` in the same process.
    """

    __slots__ = ("_capacity", "_end", "_limit", "_ring", "_seq", "_slot", "_value_slot", "_words")

    def __init__(self, ring: ShmRing) -> None:
        words = ring._live()
        self._ring = ring
        self._words = words
        self._capacity = ring.capacity
        #: One past the last slot's words: the slot index wraps there.
        self._end = _SLOTS + _SLOT_WORDS * ring.capacity
        self._seq = self._slot = self._value_slot = 0
        self._sync(words[_HEAD])
        #: The last sequence number the ring has room for: the last ``tail``
        #: seen plus the capacity.
        self._limit: int = words[_TAIL] + ring.capacity

    def _sync(self, head: int) -> None:
        """Continue from *head* (another producer stopped there)."""
        #: The next value's sequence number (``head`` + 1) and its slot's
        #: two words, kept so push() computes nothing before publishing.
        self._seq = head + 1
        self._slot = _SLOTS + _SLOT_WORDS * (head % self._capacity)
        self._value_slot = self._slot + 1

    def __repr__(self) -> str:
        return f"<RingProducer head={self._seq - 1} of {self._ring!r}>"

    def push(self, value: int) -> bool:
        """Append *value* (0 <= value < 2**64); return ``False`` if the ring is full.

        Writes the eventfd only if the consumer is not busy-polling.
        """
        if type(value) is not int:  # a bool would store as 1
            raise TypeError(f"value must be an int, got {type(value).__name__} {value!r}")
        seq = self._seq
        if seq > self._limit:
            self._limit = self._ring._live()[_TAIL] + self._capacity
            if seq > self._limit:
                return False
        words = self._words
        try:
            words[self._value_slot] = value
        except ValueError:
            self._ring._live()  # a closed ring's released view refuses any store
            raise ValueError(f"value must be in 0 .. 2**64-1, got {value}") from None
        words[self._slot] = seq  # publish: after the value (TSO keeps the order)
        # The consumer may be taking the value already: head and the
        # bookkeeping for the next push wait until now.
        words[_HEAD] = seq
        self._seq = seq + 1
        slot = self._slot + _SLOT_WORDS
        if slot == self._end:
            slot = _SLOTS
        self._slot = slot
        self._value_slot = slot + 1
        _full_barrier()  # store the sequence number, then load polling: see the module docstring
        if not words[_POLLING]:
            self._ring._kick()
        return True


class RingAttachment:
    """A ring attached to a context: made by :meth:`ShmRingSource.attach`.

    :attr:`wakeups` counts dispatches through the eventfd, :attr:`polled`
    those found by busy polling (``io_poll``).
    """

    __slots__ = ("_ctx", "_on_items", "_ring", "_source", "polled", "wakeups")

    def __init__(
        self,
        source: ShmRingSource,
        ring: ShmRing,
        on_items: Callable[[list[int]], object],
    ) -> None:
        self._source = source
        self._ctx = source._ctx
        self._ring: ShmRing | None = ring
        self._on_items = on_items
        self.wakeups = 0
        self.polled = 0

    def __repr__(self) -> str:
        return f"<RingAttachment {self._ring!r} wakeups={self.wakeups} polled={self.polled}>"

    # The handler's callbacks; the opaque is the ring's notifier.
    def _io_read(self, notifier: EventNotifier) -> None:
        notifier.test_and_clear()
        ring = self._ring
        if ring is not None:
            values = ring.take()
            if values:
                self.wakeups += 1
                self._on_items(values)

    def _poll_begin(self, notifier: EventNotifier) -> None:
        if self._ring is not None:
            self._ring._set_polling(True)

    def _poll_end(self, notifier: EventNotifier) -> None:
        if self._ring is not None:
            self._ring._set_polling(False)

    @property
    def ring(self) -> ShmRing | None:
        """The attached ring (``None`` after :meth:`detach`)."""
        return self._ring

    def detach(self) -> None:
        """Remove the handler; the ring stays open (close it yourself).  Idempotent.

        From a thread other than the home thread (without ``ctx.acquire()``)
        it raises ``RuntimeError`` and the ring stays attached.
        """
        check_home_thread(self._ctx, "detach")
        ring, self._ring = self._ring, None
        if ring is None:
            return
        self._source._made.pop(self, None)
        try:
            if not self._ctx.closed:
                self._ctx.set_event_notifier(ring.notifier, None)
        finally:
            ring._attached_pid = 0
            ring._consumer_take = None
            ring._set_polling(False)  # kicks again: nobody polls now


class ShmRingSource:
    """``ctx.sources.shmring``: attach :class:`ShmRing` consumers to one context.

    Methods belong to the context's home thread (or a thread holding
    ``ctx.acquire()``).  From another thread, :meth:`attach` and
    :meth:`RingAttachment.detach` raise ``RuntimeError`` naming the method
    and change nothing.
    """

    def __init__(self, ctx: AioContext) -> None:
        self._ctx = ctx
        self._made: dict[RingAttachment, None] = {}

    def attach(self, ring: ShmRing, on_items: Callable[[list[int]], object]) -> RingAttachment:
        """Consume *ring* in this context: ``on_items(values)`` in the home thread.

        The handler has an ``io_poll``, so with ``poll_max_ns`` > 0 the context
        busy-polls the ring, and the producer stops kicking the eventfd while
        it does.
        """
        if not isinstance(ring, ShmRing):
            raise TypeError(f"ring must be a ShmRing, got {type(ring).__name__} {ring!r}")
        ring._live()
        if not callable(on_items):
            raise TypeError(
                f"on_items must be a callable, got {type(on_items).__name__} {on_items!r}"
            )
        if any(a._ring is ring for a in self._made):
            raise ValueError(f"{ring!r} is already attached to this context")
        check_home_thread(self._ctx, "attach")
        attachment = RingAttachment(self, ring, on_items)
        words = ring._live()

        # The consumer's cursor: ``at``, the sequence word of the slot the
        # next value goes to, and ``want``, the sequence number it will have
        # (its index plus one).  It lives here, in the closures, because the
        # busy-poll loop reads it on every round; take() (the eventfd path,
        # and ShmRing.take() in this process) moves it too.
        capacity = ring.capacity
        end = _SLOTS + _SLOT_WORDS * capacity
        want = words[_TAIL] + 1
        at = _SLOTS + _SLOT_WORDS * ((want - 1) % capacity)

        def io_poll(_: object) -> bool:
            # The busy-poll loop calls this back to back: one load and a
            # compare, with no attribute lookups or calls on the way.
            return words[at] == want

        def io_poll_ready(_: object) -> None:
            # take() inlined, the one-value case first: this runs between a
            # poll hit and the callback, inside the latency being saved, and
            # so does nothing the callback does not need.
            nonlocal at, want
            slot = at
            if words[slot] != want:
                return  # taken since the hit (a BH's take(), a nested poll)
            value = words[slot + 1]
            slot += _SLOT_WORDS
            if slot == end:
                slot = _SLOTS
            if words[slot] != want + 1:
                values = [value]
                want += 1
                at = slot
            else:  # more than one: the rest too
                values, tail = _collect(words, capacity, want - 1)
                want = tail + 1
                at = _SLOTS + _SLOT_WORDS * (tail % capacity)
            # Before the callback: a nested poll must not see them again.
            words[_TAIL] = want - 1
            try:
                on_items(values)
            finally:
                attachment.polled += 1

        def take() -> list[int]:
            nonlocal at, want
            values, tail = _collect(words, capacity, want - 1)
            if values:
                want = tail + 1
                at = _SLOTS + _SLOT_WORDS * (tail % capacity)
                words[_TAIL] = tail
            return values

        ctx = self._ctx
        ctx.set_event_notifier(
            ring.notifier,
            attachment._io_read,
            io_poll,
            io_poll_ready=io_poll_ready,
        )
        try:
            ctx.set_event_notifier_poll(ring.notifier, attachment._poll_begin, attachment._poll_end)
        except BaseException:
            ctx.set_event_notifier(ring.notifier, None)
            raise
        self._made[attachment] = None
        ring._attached_pid = os.getpid()
        ring._consumer_take = take
        return attachment

    @property
    def attachments(self) -> list[RingAttachment]:
        """The live attachments, oldest first."""
        return list(self._made)

    def close(self) -> None:
        """Detach every ring (the context is closing), newest first; the rings stay open.

        Every ring is detached even if detaching one raised (one that raised
        is still detached: only its handler's removal failed); the first
        error is raised at the end (:func:`aiocore.close_newest_first`).
        """
        close_newest_first(self._made, RingAttachment.detach)


def _factory(ctx: Any) -> ShmRingSource:
    return ShmRingSource(ctx)


@hookimpl
def aiocore_register_sources(register: Any) -> None:
    register("shmring", _factory)
