"""Child processes of a bench run: started in their own session, stopped by pid, and waited
for by probing the port they serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "ServiceFailed",
    "free_port",
    "service",
    "wait_for_http",
    "wait_for_listeners",
    "wait_for_port",
]

# Children run `python -m bench.…` and import the project's packages from here.
REPO_ROOT = Path(__file__).resolve().parent.parent

STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 30.0
_PROBE_INTERVAL_S = 0.05


class ServiceFailed(RuntimeError):
    """A service the bench started exited or never became ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def service(
    name: str,
    command: Sequence[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path = REPO_ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command`; on exit stop it (SIGTERM, then SIGKILL) and wait for it."""
    output = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        list(command),
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output if log is not None else None,
        start_new_session=True,
        cwd=cwd,
    )
    try:
        yield process
    finally:
        _stop(name, process)
        if log is not None and not isinstance(output, int):
            output.close()


def _stop(name: str, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"bench: {name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it", flush=True)
        process.kill()
        process.wait()


def wait_for_port(
    name: str, port: int, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S
) -> None:
    """Until `port` accepts a connection."""

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    _wait_for(name, process, accepts, f"listen on port {port}", timeout)


def wait_for_http(
    name: str, port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Until `GET path` answers 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(b"HTTP/1.1 200")

    _wait_for(name, process, answers, f"answer {path}", timeout)


def wait_for_listeners(
    name: str, port: int, count: int, process: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Until `count` sockets listen on `port` (several processes sharing it, SO_REUSEPORT)."""

    def listening() -> bool:
        return _listening_sockets(port) >= count

    _wait_for(name, process, listening, f"listen {count} times on port {port}", timeout)


def _wait_for(
    name: str,
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    timeout: float,
) -> None:
    """Poll `ready` (an OSError counts as not yet) until it holds; the process must not exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceFailed(f"{name} exited ({process.returncode}) during start-up")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(_PROBE_INTERVAL_S)
    raise ServiceFailed(f"{name} did not {what} within {timeout:.0f}s")


def _listening_sockets(port: int) -> int:
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1
        for fields in (line.split() for line in lines)
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A"  # 0A: LISTEN
    )
