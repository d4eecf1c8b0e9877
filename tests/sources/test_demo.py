"""``aiocore demo echo``: run in a subprocess, connect, echo, stop it."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys

import pytest

from aiocore import PluginRegistry

from .. import conftest

DEMO_BACKENDS = ["poll", "epoll", "io_uring", "auto"]


def _start(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCORE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "aiocore", "demo", "echo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _first_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"the demo printed nothing within {timeout} s")
    return proc.stdout.readline()


@pytest.mark.parametrize("backend", DEMO_BACKENDS)
def test_demo_echo_serves_and_stops(backend: str, registry: PluginRegistry) -> None:
    reason = registry.probe(backend)
    if reason is not None:
        conftest.skip_or_fail_unavailable(backend, reason)
    proc = _start("--backend", backend, "--host", "127.0.0.1", "--port", "0")
    try:
        line = _first_line(proc)
        assert line.startswith("echo server listening on 127.0.0.1:"), line
        assert f"(backend {'poll' if backend == 'auto' else backend})" in line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            message = os.urandom(100_000)
            c.sendall(message)
            got = bytearray()
            while len(got) < len(message):
                chunk = c.recv(65536)
                assert chunk, "the demo closed the connection early"
                got += chunk
            assert got == message
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)  # reaps it and closes its pipes, also after a failure


def test_demo_stops_on_sigterm() -> None:
    proc = _start("--port", "0")
    try:
        assert _first_line(proc).startswith("echo server listening on")
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)  # reaps it and closes its pipes, also after a failure


def test_demo_ipv6(registry: PluginRegistry) -> None:
    from ._helpers import ipv6_loopback_reason

    reason = ipv6_loopback_reason()
    if reason is not None:
        pytest.skip(reason)
    proc = _start("--host", "::1")
    try:
        line = _first_line(proc)
        assert "[::1]:" in line
        port = int(line.split("[::1]:")[1].split()[0])
        with socket.create_connection(("::1", port), timeout=10) as c:
            c.sendall(b"six")
            assert c.recv(10) == b"six"
        proc.terminate()
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)  # reaps it and closes its pipes, also after a failure


def test_demo_bad_arguments() -> None:
    for args, code, text in (
        (["--backend", "nope"], 1, "unknown backend 'nope'"),
        (["--port", "70000"], 2, "--port must be in 0..65535"),
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCORE_")}
        proc = subprocess.run(
            [sys.executable, "-m", "aiocore", "demo", "echo", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert text in proc.stdout + proc.stderr
