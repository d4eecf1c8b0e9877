"""A bottom half that reschedules itself N times, against asyncio's call_soon chain.

Measures the cost of one loop iteration that runs one callback: for aiocore,
``poll(True)`` with a BH scheduled (no system call: the only handler is the
context's notifier, which has an io_poll); for asyncio, one ``call_soon``
callback per ``_run_once``.  The floor is a bare deque loop doing the same
scheduling with no framework.

    python benchmarks/bh_chain.py [--n 1000000] [--repeat 5] [--backend epoll]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

from _common import alternate, report

import aiocore


def aiocore_chain(n: int, backend: str) -> float:
    with aiocore.AioContext(backend) as ctx:
        count = 0

        def cb(_: object) -> None:
            nonlocal count
            count += 1
            if count < n:
                bh.schedule()

        bh = ctx.bh_new(cb)
        bh.schedule()
        poll = ctx.poll
        t0 = time.perf_counter()
        while count < n:
            poll(True)
        dt = time.perf_counter() - t0
        bh.delete()
    return n / dt


def asyncio_chain(n: int, loop_factory: object = asyncio.new_event_loop) -> float:
    loop = loop_factory()  # type: ignore[operator]
    count = 0
    done = loop.create_future()

    def cb() -> None:
        nonlocal count
        count += 1
        if count < n:
            loop.call_soon(cb)
        else:
            done.set_result(None)

    loop.call_soon(cb)
    t0 = time.perf_counter()
    loop.run_until_complete(done)
    dt = time.perf_counter() - t0
    loop.close()
    return n / dt


def deque_floor(n: int) -> float:
    queue: collections.deque[object] = collections.deque()
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1
        if count < n:
            queue.append(cb)

    queue.append(cb)
    t0 = time.perf_counter()
    pop = queue.popleft
    while queue:
        pop()()  # type: ignore[operator]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="epoll")
    args = parser.parse_args()
    contenders = [
        (f"aiocore BH chain ({args.backend})", lambda: aiocore_chain(args.n, args.backend)),
        ("asyncio call_soon chain", lambda: asyncio_chain(args.n)),
    ]
    try:
        import uvloop

        contenders.append(
            ("uvloop call_soon chain", lambda: asyncio_chain(args.n, uvloop.new_event_loop))
        )
    except ImportError:
        print("uvloop not installed: skipped (pip install uvloop)")
    contenders.append(("bare deque loop (floor)", lambda: deque_floor(args.n)))
    rates = alternate(contenders, args.repeat)
    report(f"BH chain, {args.n:,} callbacks", "callbacks/s", rates, "asyncio call_soon chain")


if __name__ == "__main__":
    main()
