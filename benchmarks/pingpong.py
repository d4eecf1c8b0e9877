"""Socketpair ping-pong: one byte back and forth, N round trips.

aiocore (a read handler on each end) against asyncio's ``add_reader``
ping-pong and a hand-written raw loop on the same system call (``epoll`` or
``poll``) with no framework: the floor.

    python benchmarks/pingpong.py [--n 100000] [--repeat 5] [--backend epoll]
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import time

from _common import alternate, report

import aiocore


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def aiocore_pingpong(n: int, backend: str) -> float:
    a, b = _pair()
    count = 0

    def on_a(_: object) -> None:
        a.recv(1)
        a.send(b"x")

    def on_b(_: object) -> None:
        nonlocal count
        b.recv(1)
        count += 1
        if count < n:
            b.send(b"x")

    with aiocore.AioContext(backend) as ctx:
        ctx.set_fd_handler(a, on_a)
        ctx.set_fd_handler(b, on_b)
        poll = ctx.poll
        b.send(b"x")
        t0 = time.perf_counter()
        while count < n:
            poll(True)
        dt = time.perf_counter() - t0
        ctx.set_fd_handler(a, None)
        ctx.set_fd_handler(b, None)
    a.close()
    b.close()
    return n / dt


def asyncio_pingpong(n: int, loop_factory: object = asyncio.new_event_loop) -> float:
    loop = loop_factory()  # type: ignore[operator]
    a, b = _pair()
    count = 0
    done = loop.create_future()

    def on_a() -> None:
        a.recv(1)
        a.send(b"x")

    def on_b() -> None:
        nonlocal count
        b.recv(1)
        count += 1
        if count < n:
            b.send(b"x")
        else:
            done.set_result(None)

    loop.add_reader(a, on_a)
    loop.add_reader(b, on_b)
    b.send(b"x")
    t0 = time.perf_counter()
    loop.run_until_complete(done)
    dt = time.perf_counter() - t0
    loop.remove_reader(a)
    loop.remove_reader(b)
    loop.close()
    a.close()
    b.close()
    return n / dt


def raw_pingpong(n: int, kind: str) -> float:
    """The same system calls from a hand-written loop: the floor."""
    a, b = _pair()
    fa, fb = a.fileno(), b.fileno()
    poller = select.epoll() if kind == "epoll" else select.poll()
    poller.register(fa, select.POLLIN)
    poller.register(fb, select.POLLIN)
    wait = poller.poll
    timeout = -1 if kind == "epoll" else None
    count = 0
    b.send(b"x")
    t0 = time.perf_counter()
    while count < n:
        for fd, _ in wait(timeout):
            if fd == fa:
                a.recv(1)
                a.send(b"x")
            else:
                b.recv(1)
                count += 1
                if count < n:
                    b.send(b"x")
    dt = time.perf_counter() - t0
    if kind == "epoll":
        poller.close()  # type: ignore[union-attr]
    a.close()
    b.close()
    return n / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="epoll")
    args = parser.parse_args()
    raw_kind = "epoll" if args.backend in ("epoll", "auto") else "poll"
    contenders = [
        (f"aiocore ({args.backend})", lambda: aiocore_pingpong(args.n, args.backend)),
        ("asyncio add_reader", lambda: asyncio_pingpong(args.n)),
    ]
    try:
        import uvloop

        contenders.append(
            ("uvloop add_reader", lambda: asyncio_pingpong(args.n, uvloop.new_event_loop))
        )
    except ImportError:
        print("uvloop not installed: skipped (pip install uvloop)")
    contenders.append((f"raw {raw_kind} loop (floor)", lambda: raw_pingpong(args.n, raw_kind)))
    rates = alternate(contenders, args.repeat)
    report(
        f"socketpair ping-pong, {args.n:,} round trips",
        "round trips/s",
        rates,
        "asyncio add_reader",
    )


if __name__ == "__main__":
    main()
