"""The write path to one subscriber's socket, on real sockets under a real uvicorn.

A tiny ASGI app opens an event-stream response and hands its connection to the test: a
`TransportConnection` under Jobwire's own protocol (straight to the socket), an
`AsgiConnection` under uvicorn's own (through `send()`, for any other ASGI server). The test
drives it against raw socket clients: what reaches the wire, what a client that does not read
leaves unsent, and every way a connection ends. The last tests run whole event streams through
the gateway over each path.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from gateway.app import create_app
from gateway.engine.connection import (
    AsgiConnection,
    Connection,
    TransportConnection,
    transport_connection,
)
from gateway.engine.response import HEADERS
from gateway.processes.protocol import StreamingHttpProtocol
from gateway.processes.server import GatewayServer
from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.settings import Settings
from tests.conftest import StartGateway
from tests.support import open_unread_stream, raw_get, scaled, stream_ids, wait_until

pytestmark = pytest.mark.timeout(60)

# Which server runs the app decides which connection a stream gets.
PROTOCOLS: dict[str, type[asyncio.Protocol] | str] = {
    "transport": StreamingHttpProtocol,
    "asgi": "httptools",
}
KINDS: dict[str, type[Connection]] = {"transport": TransportConnection, "asgi": AsgiConnection}
BLOCK = b"x" * 65_536


@dataclass
class Opened:
    connection: Connection
    send: Send  # for the final, empty body: the test ends the response as the hub's does


class HandOver:
    """Opens an event-stream response and hands its connection to the test; the request
    ends when the connection does."""

    def __init__(self) -> None:
        self.opened: asyncio.Queue[Opened] = asyncio.Queue()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        connection: Connection = transport_connection(scope) or AsgiConnection(send, receive)
        self.opened.put_nowait(Opened(connection, send))
        await connection.wait_closed()

    async def next(self) -> Opened:
        return await asyncio.wait_for(self.opened.get(), scaled(5))


@dataclass
class Served:
    kind: str  # a key of PROTOCOLS
    port: int
    app: HandOver
    clients: list[asyncio.StreamWriter | socket.socket] = field(default_factory=list)

    def close_clients(self) -> None:
        for client in self.clients:
            if isinstance(client, socket.socket):
                client.close()
            else:
                client.transport.abort()


@contextlib.asynccontextmanager
async def _serve(server: uvicorn.Server) -> AsyncIterator[int]:
    """Runs `server` on a free port of 127.0.0.1 in this event loop; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10)
        assert server.started
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=scaled(10))


@pytest.fixture(params=list(PROTOCOLS))
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    app = HandOver()
    config = uvicorn.Config(
        app,
        http=PROTOCOLS[request.param],
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    async with _serve(uvicorn.Server(config)) as port:
        served = Served(request.param, port, app)
        try:
            yield served
        finally:
            served.close_clients()


async def _open(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Opened]:
    """A client that reads; returns once the response head has arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    served.clients.append(writer)
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    assert head.lower().count(b"transfer-encoding: chunked") == 1
    return reader, writer, await served.app.next()


async def _open_unread(served: Served) -> tuple[socket.socket, Opened]:
    """A client that never reads, with a small receive buffer: writes to it soon back up."""
    sock = await open_unread_stream(served.port, "/s")
    served.clients.append(sock)
    return sock, await served.app.next()


async def _fill(connection: Connection, unsent: int) -> int:
    """Write until more than `unsent` bytes stay unsent; returns how many were written."""
    written = 0
    for _ in range(4_000):
        if connection.buffered() > unsent:
            return written
        connection.write(BLOCK)
        written += len(BLOCK)
        await asyncio.sleep(0)  # one loop turn: what the sockets take is taken
    raise AssertionError(f"still {connection.buffered()} unsent after {written} written")


async def _read_all(sock: socket.socket) -> bytes:
    """What a raw client receives until the server closes or resets the connection."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), scaled(10)):
            received += chunk
    return bytes(received)


async def _end_response(opened: Opened) -> None:
    """End the response cleanly, as the hub's response does once the stream is finished."""
    await asyncio.wait_for(opened.connection.drain(), scaled(5))
    await opened.send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_each_write_is_one_http_chunk_on_the_wire(served: Served) -> None:
    reader, _, opened = await _open(served)
    opened.connection.write(b"data: a\n\n")
    opened.connection.write(b"y" * 300)
    await _end_response(opened)
    body = await asyncio.wait_for(reader.read(), scaled(5))

    assert body == b"9\r\ndata: a\n\n\r\n" + b"12c\r\n" + b"y" * 300 + b"\r\n" + b"0\r\n\r\n"


async def test_only_jobwires_protocol_offers_the_direct_connection(served: Served) -> None:
    _, writer, opened = await _open(served)
    writer.transport.abort()
    await asyncio.wait_for(opened.connection.wait_closed(), scaled(5))

    assert type(opened.connection) is KINDS[served.kind]


async def test_drain_waits_for_the_client_and_the_stream_goes_on(served: Served) -> None:
    reader, _, opened = await _open(served)
    opened.connection.write(b"first")
    await asyncio.wait_for(opened.connection.drain(), scaled(5))
    opened.connection.write(b"second")
    received = await asyncio.wait_for(reader.readexactly(21), scaled(5))
    closed_after_drain = opened.connection.closed
    await _end_response(opened)
    rest = await asyncio.wait_for(reader.read(), scaled(5))

    assert received == b"5\r\nfirst\r\n6\r\nsecond\r\n"
    assert not closed_after_drain
    assert rest == b"0\r\n\r\n"


async def test_exceeds_matches_what_a_reader_that_does_not_read_leaves_unsent(
    served: Served,
) -> None:
    sock, opened = await _open_unread(served)
    connection = opened.connection
    assert connection.buffered() == 0
    assert not connection.exceeds(0)

    await _fill(connection, 2 * 1024 * 1024)
    unsent = connection.buffered()
    for limit in (0, 1000, 65_536, 1024 * 1024, unsent - 1):
        assert connection.exceeds(limit), (limit, unsent)
    assert not connection.exceeds(unsent)
    assert not connection.exceeds(unsent + 1024 * 1024)

    reading = asyncio.create_task(_read_all(sock))
    await asyncio.wait_for(connection.drain(), scaled(20))  # the client now takes it all
    assert not connection.exceeds(65_536)
    connection.abort()
    await asyncio.wait_for(connection.wait_closed(), scaled(5))
    await reading


async def test_on_lost_is_called_once_when_the_client_goes_and_at_once_after(
    served: Served,
) -> None:
    _, writer, opened = await _open(served)
    connection = opened.connection
    calls: list[str] = []
    connection.on_lost(lambda: calls.append("first"))
    connection.on_lost(lambda: calls.append("second"))
    writer.transport.abort()

    await wait_until(lambda: calls, message="on_lost called")
    await asyncio.wait_for(connection.wait_closed(), scaled(5))
    assert sorted(calls) == ["first", "second"]
    assert connection.closed
    connection.on_lost(lambda: calls.append("late"))
    assert calls[-1] == "late", "a connection already gone calls back at once"
    connection.write(b"data: to no one\n\n")  # never raises
    connection.abort()
    await asyncio.wait_for(connection.wait_closed(), scaled(5))
    assert sorted(calls) == ["first", "late", "second"]


async def test_a_removed_on_lost_callback_is_neither_held_nor_called(served: Served) -> None:
    _, writer, opened = await _open(served)
    connection = opened.connection
    calls: list[str] = []

    def removed() -> None:
        calls.append("removed")

    connection.on_lost(removed)
    connection.on_lost(lambda: calls.append("kept"))
    connection.remove_on_lost(removed)
    connection.remove_on_lost(removed)  # twice, or never added: nothing to do
    held = weakref.ref(removed)
    del removed
    gc.collect()
    assert held() is None, "a stream that ended must not stay reachable from its socket"
    writer.transport.abort()
    await asyncio.wait_for(connection.wait_closed(), scaled(5))

    await wait_until(lambda: calls, message="on_lost called")
    assert calls == ["kept"]


async def test_abort_drops_the_connection_and_what_it_had_not_sent(served: Served) -> None:
    sock, opened = await _open_unread(served)
    connection = opened.connection
    calls: list[str] = []
    connection.on_lost(lambda: calls.append("lost"))
    written = await _fill(connection, 1024 * 1024)

    connection.abort()
    await asyncio.wait_for(connection.wait_closed(), scaled(5))
    received = await _read_all(sock)

    assert calls == ["lost"]
    assert connection.closed
    assert len(received) < written, "unsent bytes were dropped, not delivered"
    assert not received.endswith(b"0\r\n\r\n"), "the client can tell it was cut off"


async def test_wait_closed_returns_when_the_client_goes(served: Served) -> None:
    _, writer, opened = await _open(served)
    waiter = asyncio.create_task(opened.connection.wait_closed())
    done, _ = await asyncio.wait({waiter}, timeout=0.2)
    assert not done, "the client is still there"

    writer.close()
    await asyncio.wait_for(waiter, scaled(5))
    await asyncio.wait_for(opened.connection.wait_closed(), scaled(1))  # and at once from then on


# -- whole streams through the gateway ----------------------------------------------------


async def _publish_job(publisher: Publisher, job_id: str, count: int, size: int) -> None:
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    for n in range(count):
        data = {"current": n, "pad": "x" * size}
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, data))
    await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": None}))


def _chunks(body: bytes) -> list[bytes]:
    """The chunks of a chunked body, checked strictly: exact sizes, the final empty chunk,
    nothing after it."""
    chunks: list[bytes] = []
    while True:
        size_line, separator, body = body.partition(b"\r\n")
        assert separator, "a chunk size line ends with CRLF"
        size = int(size_line, 16)
        data, end, body = body[:size], body[size : size + 2], body[size + 2 :]
        assert end == b"\r\n", "a chunk's data is exactly its declared size"
        if size == 0:
            assert body == b"", "nothing follows the final chunk"
            return chunks
        chunks.append(data)


async def _raw_body(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), scaled(20))
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


async def test_a_gateway_stream_is_well_formed_chunks_of_whole_frames(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    port = urlsplit(gateway.url).port
    assert port is not None
    job_id = "chunked-job"
    await _publish_job(Publisher(redis, settings), job_id, 100, size=100)

    chunks = _chunks(await _raw_body(port, f"/jobs/{job_id}/events"))

    assert all(chunk.endswith(b"\n\n") for chunk in chunks), "a frame never spans two chunks"
    assert max(chunk.count(b"\nid: ") for chunk in chunks) > 1, "frames queued together"
    body = b"".join(chunks)
    ids = [line[4:].decode() for line in body.split(b"\n") if line.startswith(b"id: ")]
    assert ids == await stream_ids(redis, settings, job_id)


async def test_a_gateway_stream_under_another_asgi_server_is_exact_when_paced(
    redis: Redis, settings: Settings
) -> None:
    # A small buffer makes the backfill pace itself on `drain()` many times.
    paced = settings.replace(max_buffer_bytes=16_384)
    job_id = "paced-job"
    await _publish_job(Publisher(redis, paced), job_id, 300, size=1000)
    app = create_app(paced)
    server = GatewayServer(
        uvicorn.Config(app, http="httptools", log_level="warning"), app.state.shutdown
    )
    async with _serve(server) as port:
        response = await raw_get(port, f"/jobs/{job_id}/events")

    assert response.status == 200
    assert response.event_ids() == await stream_ids(redis, settings, job_id)
