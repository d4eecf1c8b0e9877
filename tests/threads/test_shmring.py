"""The ``shmring`` source: a shared-memory ring polled by a context, kicked only when needed."""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiocore_plugins.shmring_source import ShmRing, shmring_unavailable_reason

import aiocore
from aiocore import AioContext
from tests.conftest import fork

from ._support import Watchdog, join_all

if shmring_unavailable_reason() is not None:
    pytest.skip(str(shmring_unavailable_reason()), allow_module_level=True)


@pytest.fixture
def ring() -> Iterator[ShmRing]:
    r = ShmRing(capacity=8)
    yield r
    r.close()


def test_push_and_take(ring: ShmRing) -> None:
    assert ring.take() == [] and ring.pending() == 0
    for v in (0, 1, 2**64 - 1):
        assert ring.push(v)
    assert ring.pending() == 3
    assert ring.take() == [0, 1, 2**64 - 1]
    # Wrap around several times, a full ring refuses without storing.
    for base in range(0, 40, 8):
        assert all(ring.push(base + i) for i in range(8))
        assert not ring.push(999)
        assert ring.take() == list(range(base, base + 8))
    assert "capacity=8" in repr(ring)


def test_kicks_only_when_the_consumer_is_not_polling(ring: ShmRing) -> None:
    assert ring.notifier.test_and_clear() is False
    ring.push(1)
    assert ring.kicks == 1 and ring.notifier.test_and_clear()
    ring._set_polling(True)  # io_poll_begin
    assert ring.consumer_polling
    ring.push(2)
    ring.push(3)
    assert ring.kicks == 1 and not ring.notifier.test_and_clear()
    ring._set_polling(False)  # io_poll_end; the core then polls once more
    assert ring.pending() == 3  # which sees what came while polling: no kick needed
    ring.push(4)
    assert ring.kicks == 2


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda r: r.push(-1), ValueError, "value must be in 0"),
        (lambda r: r.push(2**64), ValueError, "value must be in 0"),
        (lambda r: r.push(1.0), TypeError, "value must be an int"),
        (lambda r: r.push(True), TypeError, "value must be an int"),
    ],
)
def test_bad_values_change_nothing(
    ring: ShmRing, call: Callable[[ShmRing], object], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        call(ring)
    assert ring.pending() == 0 and ring.kicks == 0


def test_producer_push_full_wrap_and_kicks(ring: ShmRing) -> None:
    producer = ring.producer()
    assert repr(producer).startswith("<RingProducer head=0 of <ShmRing capacity=8")
    for base in range(0, 40, 8):
        assert all(producer.push(base + i) for i in range(8))
        assert not producer.push(999)  # full: refreshes its tail, still full
        assert ring.take() == list(range(base, base + 8))
    # It kicked for every value (nobody polls) and counts on the ring.
    assert ring.kicks == 40 and ring.notifier.test_and_clear()
    ring._set_polling(True)
    assert producer.push(1) and ring.kicks == 40


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (-1, ValueError, "value must be in 0"),
        (2**64, ValueError, "value must be in 0"),
        (1.0, TypeError, "value must be an int"),
        (True, TypeError, "value must be an int"),
        ("1", TypeError, "value must be an int"),
    ],
)
def test_producer_bad_values_change_nothing(
    ring: ShmRing, value: object, exc: type[Exception], match: str
) -> None:
    producer = ring.producer()
    assert producer.push(7)
    with pytest.raises(exc, match=match):
        producer.push(value)  # type: ignore[arg-type]
    assert ring.pending() == 1 and ring.kicks == 1
    assert producer.push(8) and ring.take() == [7, 8]


def test_producer_hand_over(ring: ShmRing) -> None:
    """push() reads head each time, so it may follow a producer; a new
    producer starts from the head it finds."""
    first = ring.producer()
    assert first.push(1) and first.push(2)
    assert ring.push(3)  # reads the head the producer moved
    second = ring.producer()
    assert second.push(4)
    assert ring.take() == [1, 2, 3, 4]
    # A producer that saw a full ring re-reads tail once it is drained.
    assert all(second.push(i) for i in range(8)) and not second.push(9)
    assert len(ring.take()) == 8
    assert second.push(9) and ring.take() == [9]


def test_producer_of_a_closed_ring(no_fd_leak: None) -> None:
    r = ShmRing(capacity=4)
    producer = r.producer()
    assert producer.push(1)
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        producer.push(2)
    with pytest.raises(RuntimeError, match="closed"):
        r.producer()


def test_bad_capacity() -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        ShmRing(capacity="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity must be between 1 and"):
        ShmRing(capacity=0)


def test_closed_ring(no_fd_leak: None) -> None:
    r = ShmRing(capacity=4)
    r.close()
    r.close()
    assert repr(r) == "<ShmRing closed>"
    with pytest.raises(RuntimeError, match="closed"):
        r.push(1)


def _plain(registry: aiocore.PluginRegistry, poll_max_ns: int) -> AioContext:
    return AioContext(registry=registry, poll_max_ns=poll_max_ns)


def test_attach_errors(registry: aiocore.PluginRegistry, ring: ShmRing) -> None:
    with _plain(registry, 0) as ctx:
        source = ctx.sources.shmring
        with pytest.raises(TypeError, match="ring must be a ShmRing"):
            source.attach(object(), print)
        with pytest.raises(TypeError, match="on_items must be a callable"):
            source.attach(ring, 3)
        source.attach(ring, print)
        with pytest.raises(ValueError, match="already attached"):
            source.attach(ring, print)
        assert len(source.attachments) == 1
        assert ctx.handler_fds() == [ring.notifier.fileno()]


def test_detach_and_close(registry: aiocore.PluginRegistry, no_fd_leak: None) -> None:
    r = ShmRing(capacity=4)
    with _plain(registry, 32768) as ctx:
        got: list[list[int]] = []
        attachment = ctx.sources.shmring.attach(r, got.append)
        r.push(5)
        for _ in range(3):
            ctx.poll(False)
        assert got == [[5]]
        attachment.detach()
        attachment.detach()
        assert ctx.handler_fds() == []
        assert not r.consumer_polling  # the producer kicks again
        ctx.sources.shmring.attach(r, got.append)
        with pytest.raises(RuntimeError, match="detach it before closing"):
            r.close()
    # Closing the context detached it; the ring stays open.
    assert r.push(6)
    r.close()


def test_values_in_order_when_take_moves_the_tail_too(registry: aiocore.PluginRegistry) -> None:
    """The handler's io_poll_ready keeps the next value's slot from its last
    call; a take() in between (what the eventfd path does) moves the tail
    behind its back, and it must read the slot the tail is at, not the one it
    remembered.  Capacity 3: the values wrap around the slots many times."""
    r = ShmRing(capacity=3)
    got: list[int] = []
    expected: list[int] = []
    try:
        with _plain(registry, 0) as ctx:
            ctx.sources.shmring.attach(r, got.extend)
            for i in range(30):
                assert r.push(i)
                expected.append(i)
                if i % 3 == 0:
                    got.extend(r.take())
                else:
                    assert ctx.poll(False) is True  # io_poll hit: io_poll_ready takes it
                assert got == expected
    finally:
        r.close()


def test_a_burst_is_one_callback_across_the_wrap(registry: aiocore.PluginRegistry) -> None:
    """Values waiting when the hit is handled come in one on_items() call,
    also when they straddle the end of the slots; each slot's sequence
    number, not a stale one from the previous lap, says a value is there."""
    r = ShmRing(capacity=4)
    calls: list[list[int]] = []
    try:
        with _plain(registry, 0) as ctx:
            ctx.sources.shmring.attach(r, calls.append)
            value = 0
            for burst in (1, 3, 4, 2, 4, 1, 3):
                for _ in range(burst):
                    assert r.push(value)
                    value += 1
                assert ctx.poll(False) is True
                assert ctx.poll(False) is False  # nothing twice
            assert [len(c) for c in calls] == [1, 3, 4, 2, 4, 1, 3]
            assert [v for c in calls for v in c] == list(range(value))
            assert r.pending() == 0
    finally:
        r.close()


def test_a_nested_poll_in_the_callback_delivers_nothing_twice(
    registry: aiocore.PluginRegistry,
) -> None:
    """on_items() may poll the context again; the cursor has moved before it
    runs, so the nested poll sees only what was pushed since."""
    r = ShmRing(capacity=4)
    got: list[list[int]] = []
    try:
        with _plain(registry, 0) as ctx:

            def on_items(values: list[int]) -> None:
                got.append(values)
                if values == [0]:
                    assert ctx.poll(False) is False  # nothing new: no second [0]
                    assert r.push(1)
                    assert ctx.poll(False) is True  # [1], nested

            ctx.sources.shmring.attach(r, on_items)
            assert r.push(0)
            assert ctx.poll(False) is True
            assert got == [[0], [1]]
    finally:
        r.close()


def test_a_take_between_the_hit_and_the_dispatch(registry: aiocore.PluginRegistry) -> None:
    """A BH of the same poll() that takes the values itself: the hit's
    io_poll_ready, dispatched after the BHs, then finds nothing and must not
    deliver the taken values (or a stale slot) a second time."""
    r = ShmRing(capacity=4)
    got: list[int] = []
    taken: list[int] = []
    try:
        with _plain(registry, 0) as ctx:
            ctx.sources.shmring.attach(r, got.extend)
            for i in range(12):
                assert r.push(i)
                ctx.bh_schedule_oneshot(lambda _: taken.extend(r.take()))
                ctx.poll(False)
                assert ctx.poll(False) is False
            assert got == [] and taken == list(range(12))
    finally:
        r.close()


def test_thread_producer_every_value_once_in_order(registry: aiocore.PluginRegistry) -> None:
    n = 20_000
    r = ShmRing(capacity=64)
    got: list[int] = []
    with _plain(registry, 32768) as ctx:
        attachment = ctx.sources.shmring.attach(r, got.extend)
        ctx.poll(False)

        def produce() -> None:
            for i in range(n):
                while not r.push(i):
                    time.sleep(0)
                if i % 64 == 0:
                    time.sleep(0.00001)  # let the loop sleep now and then

        t = threading.Thread(target=produce)
        t.start()
        with Watchdog(ctx, 30) as dog:
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                ctx.poll(True)
        join_all([t], 10)
        assert not dog.fired, "a kick was lost"
        assert got == list(range(n))
        assert attachment.wakeups + attachment.polled > 0
        attachment.detach()
    r.close()


@pytest.mark.parametrize("how", ["push", "producer"])
def test_process_producer_no_lost_kick(registry: aiocore.PluginRegistry, how: str) -> None:
    """A forked producer pushes bursts, each followed by waiting until all is consumed.

    The bursts keep the consumer polling (kicks skipped); the waits let it
    stop polling and sleep, so the polling -> sleeping transition is crossed
    at every burst.  Nothing else would wake the loop after a burst's last
    value: a lost kick stalls that burst, and the producer reports it after
    2 s.  Every value must arrive once, in order.
    """
    bursts = 1500
    r = ShmRing(capacity=256)
    stats = mmap.mmap(-1, 32)  # the child's results: kicks, values, stalls, done
    got: list[int] = []
    ctx = _plain(registry, 32768)
    attachment = ctx.sources.shmring.attach(r, got.extend)
    ctx.poll(False)
    pid = fork()
    if pid == 0:  # the producer: must never return into pytest
        status = 1
        try:
            words = memoryview(stats).cast("Q")
            rng = __import__("random").Random(7)
            push = r.push if how == "push" else r.producer().push
            value = 0
            for _ in range(bursts):
                for _ in range(rng.randrange(1, 40)):
                    while not push(value):
                        pass
                    value += 1
                limit = time.monotonic() + 2
                while r.pending() and time.monotonic() < limit:
                    time.sleep(0.00001 * rng.randrange(0, 20))
                if r.pending():
                    words[2] += 1  # stalled: the kick was lost
                    break
            words[0] = r.kicks
            words[1] = value
            words[3] = 1
            words.release()
            r.notifier.set()  # wake the loop to see "done"
            status = 0
        finally:
            os._exit(status)
    try:
        done = memoryview(stats).cast("Q")
        with Watchdog(ctx, 50):
            deadline = time.monotonic() + 50
            while not done[3] and time.monotonic() < deadline:
                ctx.poll(True)
        done.release()
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert status == 0
        words = memoryview(stats).cast("Q")
        kicks, sent, stalls = words[0], words[1], words[2]
        words.release()
        assert stalls == 0, "a kick was lost: a burst stayed in the ring"
        for _ in range(5):
            ctx.poll(False)
        assert got == list(range(sent))
        assert 0 < kicks <= sent
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        attachment.detach()
        ctx.close()
        r.close()
        stats.close()
