"""``aiocore demo``: small programs that show the sources at work.

``aiocore demo echo [--backend NAME] [--host 127.0.0.1] [--port 0]`` runs an
echo server on the socket source (``ctx.sources.socket``) and prints its
address; Ctrl-C (or SIGTERM) stops it.  Try it with ``nc 127.0.0.1 PORT``.

Importing this module adds the ``demo`` entry to :data:`aiocore._cli.COMMANDS`
(the CLI imports it if it exists), so the core's CLI does not depend on it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, TextIO

from ._cli import COMMANDS
from ._context import AioContext

__all__ = ["run_echo_server"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo", metavar="DEMO")
    echo = sub.add_parser(
        "echo",
        help="run an echo server on the socket source",
        description="Run an echo server on the socket source; Ctrl-C stops it.",
    )
    echo.add_argument("--backend", help="backend name (default: AIOCORE_BACKEND, config, auto)")
    echo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    echo.add_argument("--port", type=int, default=0, help="port (0: any free port)")


def _format_address(address: Any) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def run_echo_server(ctx: AioContext, host: str, port: int, out: TextIO) -> None:
    """Serve echo on *ctx* until interrupted; the source applies back-pressure.

    A client that sends faster than it reads makes ``write()`` return
    ``False``; the server then stops reading from it until ``on_drain``.
    """
    _listen(ctx, host, port, out)
    _serve(ctx)


def _listen(ctx: AioContext, host: str, port: int, out: TextIO) -> None:

    def on_connection(stream: Any) -> None:
        def on_data(data: bytes) -> None:
            if not stream.write(data):
                stream.pause_reading()

        stream.start(on_data, on_drain=stream.resume_reading)

    srv = ctx.sources.socket.listen((host, port), on_connection)
    out.write(
        f"echo server listening on {_format_address(srv.address)} "
        f"(backend {ctx.backend_name}); Ctrl-C stops it\n"
    )
    out.flush()


def _serve(ctx: AioContext) -> None:
    poll = ctx.poll
    while True:
        poll(True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.demo != "echo":
        out.write("usage: aiocore demo echo [--backend NAME] [--host HOST] [--port PORT]\n")
        return 2
    if not 0 <= args.port <= 65535:
        out.write(f"aiocore demo echo: --port must be in 0..65535, got {args.port}\n")
        return 2
    # The context first: a refused --backend then leaves the caller's SIGTERM
    # handler alone (main() also runs in-process, from tests and embedders).
    ctx = AioContext(backend=args.backend)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        try:
            _listen(ctx, args.host, args.port, out)
        except (OSError, ValueError) as exc:
            # A port in use, a host that does not resolve: a user's error,
            # so a message, not a traceback.
            sys.stderr.write(
                f"aiocore demo echo: cannot listen on {args.host}:{args.port}: {exc}\n"
            )
            return 1
        _serve(ctx)
    except KeyboardInterrupt:
        out.write("stopped\n")
    finally:
        ctx.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


COMMANDS["demo"] = ("run a demo: 'aiocore demo echo' serves echo", _add_arguments, _run)
