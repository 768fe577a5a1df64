"""Test helpers: a redis-server process, free ports, waiting on conditions, and reading event
streams with the client's WHATWG parser (so tests read streams the way browsers do)."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from redis.asyncio import Redis

from jobwire.client import sse
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings

__all__ = [
    "RawResponse",
    "RedisServer",
    "SSEParser",
    "ServerSentEvent",
    "TIMEOUT_SCALE",
    "collect_events",
    "event_types",
    "free_port",
    "publish_started",
    "raw_get",
    "read_events",
    "scaled",
    "stream_ids",
    "submit",
    "wait_until",
]


# A machine busier than this is slow, not hung: bounds stop growing here.
_MAX_TIMEOUT_SCALE = 5.0


def _timeout_scale() -> float:
    """How many times longer than on an idle machine waiting may take on this one.

    `TEST_TIMEOUT_SCALE` when set (not `JOBWIRE_...`: every `JOBWIRE_*` name is a setting, and
    an unknown one is warned about, which fails a test). Else 1 plus the load per core when the
    session starts (plus one for each other test process of the run), at most
    `_MAX_TIMEOUT_SCALE`: with L tasks runnable on C cores, a test's processes get about
    C / (C + L) of them. The load is the 1-minute average, or the tasks
    runnable right now if more (the average lags a minute behind a load that just began).
    """
    chosen = os.environ.get("TEST_TIMEOUT_SCALE")
    if chosen:
        return max(float(chosen), 1.0)
    load = max(os.getloadavg()[0], _runnable_now() - 1)  # minus this process
    # The other test processes of this run (pytest-xdist) have only just begun to load it.
    load += int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) - 1
    return min(1.0 + load / (os.cpu_count() or 1), _MAX_TIMEOUT_SCALE)


def _runnable_now() -> int:
    try:
        running, _, _ = Path("/proc/loadavg").read_text().split()[3].partition("/")
        return int(running)
    except (OSError, IndexError, ValueError):
        return 0


# Fixed once per session, so every bound of a run stretches alike (and the per-test limit of
# pytest-timeout with them: tests/conftest.py).
TIMEOUT_SCALE = _timeout_scale()


def scaled(seconds: float) -> float:
    """A bound on waiting of `seconds` on an idle machine, stretched for this one.

    The helpers here and in tests/watchers.py, tests/processes.py and tests/conftest.py scale
    the bounds they are given; a test scales only those it applies itself
    (`asyncio.timeout(scaled(30))`). Only bounds on waiting for a condition scale: never an
    assertion, a pause that is part of the test, or a setting of the code under test.
    """
    return seconds * TIMEOUT_SCALE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    binary: str
    port: int
    data_dir: Path
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--dir", str(self.data_dir),
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + scaled(timeout)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=scaled(10))


async def wait_until(
    condition: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds
    (`scaled`)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout:.3g}s")
        await asyncio.sleep(interval)


@dataclass(frozen=True, slots=True)
class ServerSentEvent(sse.ServerSentEvent):
    """An event as `SSEParser` gives it to tests: with the `retry:` in force when it came."""

    retry: int | None = None

    def json(self) -> dict[str, Any]:
        value = orjson.loads(self.data)
        assert isinstance(value, dict)
        return value


class SSEParser:
    """The client's WHATWG event-stream parser (`jobwire.client.sse`), plus what a test of the
    gateway checks and a client has no use for: every comment (pings, and proof that nothing
    was injected into one), and the `retry:` in force stamped on each event (the last one by
    the end of the chunk that completed it)."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        self._parser = sse.SSEParser(on_comment=self.comments.append)

    @property
    def retry(self) -> int | None:
        return self._parser.retry_ms

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        return [
            ServerSentEvent(event.event, event.data, event.id, self.retry)
            for event in self._parser.feed(chunk)
        ]


async def read_events(
    response: httpx.Response, *, limit: int | None = None
) -> AsyncIterator[ServerSentEvent]:
    """The events of a streaming SSE response, as they arrive; stops after `limit`."""
    parser = SSEParser()
    count = 0
    async for chunk in response.aiter_raw():
        for event in parser.feed(chunk):
            yield event
            count += 1
            if limit is not None and count >= limit:
                return


def event_types(events: Iterable[ServerSentEvent]) -> list[str]:
    return [event.event for event in events]


async def collect_events(
    client: httpx.AsyncClient,
    job_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    limit: int | None = None,
    timeout: float = 20.0,
) -> list[ServerSentEvent]:
    """Events of one connection: all until the server closes it, or the first `limit`; within
    `timeout` (`scaled`)."""
    events: list[ServerSentEvent] = []
    async with asyncio.timeout(scaled(timeout)):
        url = f"/jobs/{job_id}/events"
        async with client.stream("GET", url, headers=headers, params=params) as response:
            assert response.status_code == 200, response.status_code
            async for event in read_events(response, limit=limit):
                events.append(event)
    return events


async def submit(client: httpx.AsyncClient, name: str, **args: object) -> str:
    response = await client.post("/jobs", json={"name": name, "args": args})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def event_ids(self) -> list[str]:
        """The `id:` of every frame, in order."""
        return [raw.decode() for raw in re.findall(rb"^id: (\S+)$", self.body, re.MULTILINE)]


async def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    """GET over a bare socket until the server ends the response: cheap enough to run
    hundreds at once in one test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.lower().split(": ", 1) for line in header_lines)
    if parsed.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return RawResponse(int(status_line.split()[1]), parsed, body)


def dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


async def stream_ids(redis: Redis, settings: Settings, job_id: str) -> list[str]:
    """The ids the job's stream holds, oldest first: what every client must have received."""
    entries = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    return [entry_id.decode() for entry_id, _ in entries]


def port_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def open_unread_stream(
    port: int, path: str, receive_buffer: int | None = 4096
) -> socket.socket:
    """Send `GET path` over a bare socket that is then never read: with a small receive
    buffer, the server's writes to it soon back up (a slow consumer)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def close_with_reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0), like a lost network."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def publish_progress(publisher: Publisher, job_id: str, count: int, size: int = 0) -> None:
    """`count` progress events of attempt 1, each padded with `size` bytes when asked."""
    for n in range(count):
        data: dict[str, object] = {"current": n}
        if size:
            data["pad"] = "x" * size
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, data))


async def publish_completed(publisher: Publisher, job_id: str) -> None:
    """The job's closing event: `completed` with no result."""
    completed = make_event(EventType.COMPLETED, job_id, 1, {"result": None})
    assert (await publisher.publish(completed)).accepted


async def publish_started(publisher: Publisher, job_id: str, name: str = "bench") -> None:
    """A job as a worker leaves it once it began: `queued`, then `started` (attempt 1)."""
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": name, "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    started = make_event(EventType.STARTED, job_id, 1, {"attempt": 1})
    assert (await publisher.publish(started)).accepted
