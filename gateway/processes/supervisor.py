"""Several gateway processes on one port (`JOBWIRE_GATEWAY_PROCESSES`).

Each process is a whole gateway: its own hub, its own few Redis connections, listening on the
same address with SO_REUSEPORT, so the kernel spreads new connections evenly over the
processes (with one shared listening socket every process wakes for each connection and the
least busy one takes most of them). A client that reconnects to another process resumes
exactly, as it would on another replica.

The supervisor only starts the processes, passes SIGINT/SIGTERM on to them, restarts one that
dies, and stops them all when one cannot even bind its socket; a process whose supervisor was
killed stops by itself.

Metrics: a scrape is answered by whichever process the kernel hands the connection, so each
process keeps its metrics in a file of one directory the supervisor makes (prometheus_client's
multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`, set before the processes start) and a scrape
sums them all. The gauges of a process that exited are dropped (`mark_process_dead`), its
counters kept so that totals never go down; the directory is removed when the supervisor ends.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from types import FrameType

from prometheus_client import multiprocess

from shared.logs import configure_logging
from shared.settings import Settings

__all__ = ["listening_socket", "supervise"]

logger = logging.getLogger("jobwire.gateway")

RESTART_DELAY_S = 1.0
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Time a process gets after SIGTERM before it is killed: uvicorn's own graceful wait, plus
# the hub's shutdown.
STOP_TIMEOUT_S = 15.0


def listening_socket(settings: Settings) -> socket.socket:
    """A TCP socket bound to the gateway's address, shareable by several processes."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    sock.set_inheritable(True)
    return sock


def supervise(settings: Settings, count: int) -> int:
    """Run `count` gateway processes until SIGINT/SIGTERM; the exit code is 0 unless one of
    them failed at start-up."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    metrics_dir = tempfile.mkdtemp(prefix="jobwire-metrics-")
    # Read by prometheus_client when a process imports it: the spawned ones see it from start.
    os.environ[MULTIPROC_DIR] = metrics_dir
    processes = [_start(context, settings, index, metrics_dir) for index in range(count)]
    exit_code = 0
    try:
        while not stopping.is_set():
            for gateway in _wait_for_exits(processes):
                _forget_gauges(gateway, metrics_dir)
                if stopping.is_set():
                    break
                if not gateway.listening.is_set():
                    logger.error("gateway process %d failed at start-up; stopping", gateway.index)
                    stopping.set()
                    exit_code = 1
                    break
                logger.error(
                    "gateway process %d exited (code %s); restarting",
                    gateway.index,
                    gateway.process.exitcode,
                )
                time.sleep(RESTART_DELAY_S)
                processes[gateway.index] = _start(context, settings, gateway.index, metrics_dir)
    finally:
        _stop_all([gateway.process for gateway in processes])
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.environ.pop(MULTIPROC_DIR, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code


def _forget_gauges(gateway: _Gateway, metrics_dir: str) -> None:
    if gateway.process.pid is not None:
        multiprocess.mark_process_dead(gateway.process.pid, metrics_dir)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Gateway:
    index: int
    process: BaseProcess
    listening: EventType  # set once the process has bound its socket


def _start(context: SpawnContext, settings: Settings, index: int, metrics_dir: str) -> _Gateway:
    listening = context.Event()
    process = context.Process(
        target=_run_one,
        args=(settings, listening, os.getpid(), metrics_dir),
        name=f"jobwire-gateway-{index}",
    )
    process.start()
    return _Gateway(index, process, listening)


def _run_one(settings: Settings, listening: EventType, supervisor: int, metrics_dir: str) -> None:
    from gateway.processes.server import serve

    configure_logging(settings)
    _stop_when_orphaned(supervisor)
    sock = listening_socket(settings)
    listening.set()
    serve(settings, sock=sock, metrics_dir=metrics_dir)


def _stop_when_orphaned(supervisor: int) -> None:
    """A gateway process whose supervisor is gone (even killed) stops, rather than keep the
    port with nobody to stop it."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="jobwire-supervisor-watch", daemon=True).start()


def _wait_for_exits(gateways: list[_Gateway]) -> list[_Gateway]:
    """The processes that exited; waits up to a second (so a signal is noticed soon)."""
    ready = wait([gateway.process.sentinel for gateway in gateways], timeout=1.0)
    return [gateway for gateway in gateways if gateway.process.sentinel in ready]


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
