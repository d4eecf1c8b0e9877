"""Echo server benchmark: requests per second and server CPU per request.

One server process per contender, one client process driving N connections
over loopback, each connection sending a message and waiting for its echo
before sending the next (request/response, one request in flight per
connection).  Contenders, measured in the same run, alternating, median of
the repeats:

* ``aiocore-<backend>``: ``ctx.sources.socket.listen`` with
  ``stream.start(on_data=stream.write)``, on every available backend;
* ``asyncio``: a stock ``asyncio.Protocol`` served by ``loop.create_server``;
* ``uvloop``: the same protocol on uvloop (if installed);
* ``raw-epoll``: a hand-written ``select.epoll`` loop in Python that reads
  with ``recv_into`` into one reused buffer: the floor for Python code.

The client is plain Python too, so on a two-core machine it saturates its core
and caps requests per second for every contender alike.  What separates the
servers is **server CPU microseconds per request**: the server process's CPU
time (user + system, from ``/proc/<pid>/schedstat`` summed over its threads,
nanosecond resolution; ``/proc/<pid>/stat`` ticks as a fallback) over the
measured phase, divided by the requests completed in it.  The server and the
client are pinned to different CPUs when there are at least two.

    python benchmarks/echo_server.py [--clients 8] [--size 1024] [--seconds 2]
        [--repeat 5] [--only aiocore-epoll,asyncio] [--profile aiocore-epoll]

``--profile NAME`` runs that server once under cProfile and prints its top
functions instead of benchmarking.  Benchmarks never assert; they report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------
# Servers (each runs in its own process: ``--serve NAME``)
# ---------------------------------------------------------------------------


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def serve_aiocore(backend: str) -> None:
    import aiocore

    ctx = aiocore.AioContext(backend=backend)

    def on_connection(stream: Any) -> None:
        stream.start(on_data=stream.write)

    srv = ctx.sources.socket.listen((HOST, 0), on_connection)
    _announce(srv.address[1])
    poll = ctx.poll
    try:
        while True:
            poll(True)
    finally:
        ctx.close()


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _serve_asyncio_loop(loop: asyncio.AbstractEventLoop) -> None:
    server = loop.run_until_complete(loop.create_server(_EchoProtocol, HOST, 0))
    _announce(server.sockets[0].getsockname()[1])
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def serve_asyncio() -> None:
    _serve_asyncio_loop(asyncio.new_event_loop())


def serve_uvloop() -> None:
    import uvloop

    _serve_asyncio_loop(uvloop.new_event_loop())


def serve_raw_epoll() -> None:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((HOST, 0))
    lsock.listen(128)
    lsock.setblocking(False)
    lfd = lsock.fileno()
    ep = select.epoll()
    ep.register(lfd, select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    _announce(lsock.getsockname()[1])
    poll = ep.poll
    while True:
        for fd, _ev in poll():
            if fd == lfd:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
                continue
            sock = conns[fd]
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n:
                # A 1 KiB echo into an empty socket buffer is taken whole.
                sock.send(view[:n])
            else:
                ep.unregister(fd)
                del conns[fd]
                sock.close()


SERVERS = {
    "asyncio": serve_asyncio,
    "uvloop": serve_uvloop,
    "raw-epoll": serve_raw_epoll,
}


def run_server(name: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if name.startswith("aiocore-"):
        serve_aiocore(name.removeprefix("aiocore-"))
    else:
        SERVERS[name]()


# ---------------------------------------------------------------------------
# Client (its own process: ``--client``)
# ---------------------------------------------------------------------------


def run_client(port: int, clients: int, size: int, seconds: float, warmup: float) -> None:
    """Drive *clients* connections; print START, then END with the count."""
    msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
    socks = []
    for _ in range(clients):
        s = socket.create_connection((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    got = dict.fromkeys(by_fd, 0)
    for fd, s in by_fd.items():
        ep.register(fd, select.EPOLLIN)
        s.send(msg)
    buf = bytearray(size * 4)
    count = 0
    start_at = time.perf_counter() + warmup
    started = False
    deadline = start_at + seconds
    t0 = 0.0
    poll = ep.poll
    while True:
        for fd, _ev in poll(1.0):
            s = by_fd[fd]
            n = s.recv_into(buf)
            if not n:
                raise SystemExit("server closed a connection")
            total = got[fd] + n
            if total >= size:
                got[fd] = 0
                count += 1
                s.send(msg)
            else:
                got[fd] = total
        now = time.perf_counter()
        if not started and now >= start_at:
            started = True
            count = 0
            t0 = now
            sys.stdout.write("START\n")
            sys.stdout.flush()
        elif started and now >= deadline:
            sys.stdout.write(f"END {count} {now - t0}\n")
            sys.stdout.flush()
            break
    for s in socks:
        s.close()


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time (user + system) of process *pid* so far, in nanoseconds."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _cpus() -> tuple[int | None, int | None]:
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _spawn(args: list[str], cpu: int | None, **kw: Any) -> subprocess.Popen[str]:
    pin = [] if cpu is None else ["--cpu", str(cpu)]
    return subprocess.Popen(
        [sys.executable, str(HERE), *pin, *args], stdout=subprocess.PIPE, text=True, **kw
    )


def _read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"expected {prefix!r} from {proc.args!r}, got {line!r}")
    return line


def measure(
    name: str, args: argparse.Namespace, pin: bool, profiled: bool = False
) -> dict[str, float]:
    """One run of contender *name*: requests/s and server CPU us/request.

    *profiled* runs the server under cProfile (which prints its profile to
    stderr when terminated; the CPU figure is then inflated by the profiler).
    """
    server_cpu, client_cpu = _cpus() if pin else (None, None)
    server = _spawn(["--serve-profiled" if profiled else "--serve", name], server_cpu)
    try:
        port = int(_read_line(server, "PORT ").split()[1])
        client = _spawn(
            [
                "--client",
                "--port",
                str(port),
                "--clients",
                str(args.clients),
                "--size",
                str(args.size),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
            ],
            client_cpu,
        )
        try:
            _read_line(client, "START")
            cpu0 = cpu_ns(server.pid)
            end = _read_line(client, "END ")
            cpu1 = cpu_ns(server.pid)
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
    _, count_s, elapsed_s = end.split()
    count, elapsed = int(count_s), float(elapsed_s)
    return {"rps": count / elapsed, "cpu_us": (cpu1 - cpu0) / 1000 / count}


def contenders(only: list[str] | None) -> list[str]:
    import aiocore

    registry = aiocore.default_registry()
    names = [f"aiocore-{b}" for b in registry.backends if registry.probe(b) is None]
    names.append("asyncio")
    try:
        import uvloop  # noqa: F401
    except ImportError:
        sys.stderr.write("uvloop is not installed: not measured\n")
    else:
        names.append("uvloop")
    if hasattr(select, "epoll"):
        names.append("raw-epoll")
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"unknown or unavailable contenders {sorted(unknown)}; have {names}")
        names = [n for n in names if n in only]
    return names


def profile(name: str) -> None:
    """Run server *name* under cProfile for one client run; print the top entries."""
    import cProfile
    import pstats

    if not name.startswith("aiocore-"):
        raise SystemExit("--profile takes an aiocore-<backend> contender")
    prof = cProfile.Profile()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(SystemExit):
        prof.runcall(serve_aiocore, name.removeprefix("aiocore-"))
    stats = pstats.Stats(prof, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--size", type=int, default=1024, help="message size in bytes")
    p.add_argument("--seconds", type=float, default=2.0, help="measured phase per run")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", help="comma-separated contenders")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--profile", metavar="NAME", help="profile one aiocore server run")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--serve-profiled", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    if args.serve:
        run_server(args.serve)
        return
    if args.serve_profiled:
        profile(args.serve_profiled)
        return
    if args.client:
        run_client(args.port, args.clients, args.size, args.seconds, args.warmup)
        return
    if args.profile:
        print(measure(args.profile, args, not args.no_pin, profiled=True))
        return

    names = contenders(args.only.split(",") if args.only else None)
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for i in range(args.repeat):
        for name in names:
            results[name].append(measure(name, args, not args.no_pin))
        sys.stderr.write(f"\rrun {i + 1}/{args.repeat}")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * 20 + "\r")
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    med = {
        n: {k: statistics.median(r[k] for r in runs) for k in ("rps", "cpu_us")}
        for n, runs in results.items()
    }
    print(
        f"echo: {args.clients} clients, {args.size} B messages, {args.seconds:g} s per run, "
        f"median of {args.repeat}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    width = max(len(n) for n in med)
    print(f"  {'server'.ljust(width)}  {'requests/s':>11}  {'server CPU us/req':>17}  [min .. max]")
    for n, m in med.items():
        cpus = [r["cpu_us"] for r in results[n]]
        print(
            f"  {n.ljust(width)}  {m['rps']:11,.0f}  {m['cpu_us']:17.2f}  "
            f"[{min(cpus):.2f} .. {max(cpus):.2f}]"
        )
    aio = {n: m for n, m in med.items() if n.startswith("aiocore-")}
    if not aio:
        return
    best = min(aio, key=lambda n: aio[n]["cpu_us"])
    b = aio[best]["cpu_us"]
    print(f"best aiocore backend: {best} ({b:.2f} us/request)")
    goals = (("asyncio", 0.5), ("uvloop", 1.25), ("raw-epoll", 1.25))
    for other, goal in goals:
        if other in med:
            ratio = b / med[other]["cpu_us"]
            verdict = "met" if ratio <= goal else "MISSED"
            print(f"  vs {other:9}: {ratio:5.2f}x  (goal <= {goal}x: {verdict})")


if __name__ == "__main__":
    main()
