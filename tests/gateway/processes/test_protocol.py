"""Jobwire's HTTP protocol (`gateway.processes.protocol`) under a real gateway: a request head
over MAX_HEAD_BYTES, or with more than MAX_HEADERS headers, is answered 431 with a JSON body
and the connection closed; heads within the limits are served, also one after another on a
kept-alive connection; a head still arriving after JOBWIRE_HEAD_TIMEOUT_S is answered 408
and closed, while slow heads in time, other clients and event streams are served; an event
stream gets the direct write path (`jobwire.transport`); and a stream GET the hub's ring
vouches for is answered without an ASGI call, with the head, events and counts the ASGI path
gives, while every other stream request is left to the ASGI path.

tests/faults/test_hostile.py sends far larger heads (a megabyte, ten thousand headers) with
other garbage, and checks that the gateway refuses them without harm to other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.engine.connection import TransportConnection
from gateway.engine.counters import ResumeKind
from gateway.engine.response import EventStreamResponse
from gateway.processes.protocol import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    GatewayServerState,
    LeanFlowControl,
    StreamingHttpProtocol,
)
from shared.events import EventType, make_event
from shared.logs import REQUEST_ID
from shared.publish import Publisher
from shared.settings import Settings
from shared.streamid import StreamId
from tests.conftest import Gateway, StartGateway
from tests.support import (
    RawResponse,
    dechunk,
    publish_completed,
    raw_get,
    scaled,
    stream_ids,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

REQUEST_LINE = b"GET /healthz HTTP/1.1\r\nHost: a\r\n"


class Client:
    """One kept-alive connection, requests sent as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> RawResponse:
        """Send `raw`, read the answer's head and its body (sized, or to the close)."""
        self.writer.write(raw)
        async with asyncio.timeout(scaled(10)):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines)
            }
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            else:
                body = dechunk(await self.reader.read())
        return RawResponse(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(scaled(5)):
            return await self.reader.read() == b""


@contextlib.asynccontextmanager
async def connect(gateway: Gateway) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


def _headers(count: int) -> bytes:
    return b"".join(b"X-Header-%d: v\r\n" % n for n in range(count))


TOO_LARGE = {
    # One header takes the head past MAX_HEAD_BYTES.
    "one-large-header": REQUEST_LINE + b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    # Already over the limit before it ends: refused without waiting for the rest.
    "a-head-that-does-not-end": (REQUEST_LINE + b"X-Big: ").ljust(MAX_HEAD_BYTES + 1, b"a"),
    "a-long-url": b"GET /healthz?q=" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    # Host is one of them.
    "one-header-too-many": REQUEST_LINE + _headers(MAX_HEADERS) + b"\r\n",
}


@pytest.mark.parametrize("request_bytes", TOO_LARGE.values(), ids=TOO_LARGE.keys())
async def test_a_head_over_the_limits_gets_431_and_the_connection_closed(
    start_gateway: StartGateway, request_bytes: bytes
) -> None:
    gateway = await start_gateway()
    async with connect(gateway) as client:
        answer = await client.request(request_bytes)
        closed = await client.closed_by_server()

    assert answer.status == 431
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert orjson.loads(answer.body) == {
        "error": "headers_too_large",
        "detail": f"at most {MAX_HEADERS} headers and {MAX_HEAD_BYTES} bytes of request head",
    }
    assert closed


async def test_a_head_at_the_limits_is_served(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with connect(gateway) as client:
        many = await client.request(REQUEST_LINE + _headers(MAX_HEADERS - 1) + b"\r\n")
        large = await client.request(
            REQUEST_LINE + b"X-Big: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n"
        )

    assert (many.status, orjson.loads(many.body)) == (200, {"status": "ok"})
    assert (large.status, orjson.loads(large.body)) == (200, {"status": "ok"})


async def test_large_allowed_heads_one_after_another_on_one_connection_are_served(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "kept-alive"
    await _queue(publisher, job_id)
    big_header = b"X-Big: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    async with connect(gateway) as client:
        # Together far over the limit: what counts is each request's own head.
        answers = [await client.request(REQUEST_LINE + big_header + b"\r\n") for _ in range(5)]
        watching = asyncio.create_task(client.request(_stream_request(job_id, big_header)))
        await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
        await publish_completed(Publisher(redis, settings), job_id)
        events = await watching

    assert [answer.status for answer in answers] == [200] * 5
    assert events.status == 200
    assert events.event_ids() == await stream_ids(redis, settings, job_id)


async def test_an_event_stream_gets_the_direct_write_path(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "direct"
    await _queue(publisher, job_id)
    async with connect(gateway) as client:
        watching = asyncio.create_task(client.request(_stream_request(job_id)))
        await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
        [subscriber] = gateway.hub._subscribers
        for n in range(3):
            await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": n}))
        await publish_completed(Publisher(redis, settings), job_id)
        events = await watching

    assert isinstance(subscriber.connection, TransportConnection)
    assert events.status == 200
    assert events.event_ids() == await stream_ids(redis, settings, job_id)


async def _queue(publisher: Publisher, job_id: str) -> None:
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted


def _stream_request(job_id: str, extra_headers: bytes = b"") -> bytes:
    head = f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
    return head.encode() + extra_headers + b"\r\n"


# Short, so the tests are; stretched with the machine's load, so a head meant to arrive in time
# still does on a busy machine.
HEAD_LIMIT_S = scaled(1.0)
# A trickle sends a byte this often: ten a limit.
TRICKLE_S = HEAD_LIMIT_S / 10
SLOW_HEADER = b"X-Slow: " + b"a" * 1_000


async def trickle(client: Client, data: bytes) -> None:
    """Sends `data` a byte per TRICKLE_S (the slowness is the attack) while the connection
    lasts."""
    for byte in data:
        if client.writer.transport.is_closing():
            return
        client.writer.write(bytes([byte]))
        await asyncio.sleep(TRICKLE_S)


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection (a reset after its answer,
    for a byte that crossed the close, ends it too)."""
    received = b""
    async with asyncio.timeout(scaled(HEAD_LIMIT_S + 10)):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65_536):
                received += chunk
    return received


async def test_a_request_sent_while_a_stream_is_held_is_answered_when_it_ends(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    job_id = "next"
    await _queue(Publisher(redis, settings), job_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        async with asyncio.timeout(scaled(10)):
            await reader.readuntil(b"\n\n\r\n")
        # Sent in two parts, the first while the parser of the held stream is let go.
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        await writer.drain()
        [protocol] = [
            p
            for p in gateway.server.server_state.connections
            if isinstance(p, StreamingHttpProtocol)
        ]
        await wait_until(lambda: vars(protocol)["parser"] is not None, message="a new parser")
        writer.write(b"st: a\r\nConnection: close\r\n\r\n")
        await publish_completed(Publisher(redis, settings), job_id)
        rest = await read_to_close(reader)
    finally:
        writer.close()

    stream_end, _, answer = rest.partition(b"\r\n0\r\n\r\n")
    assert b"event: completed" in stream_end
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'{"status":"ok"}')


@pytest.mark.parametrize("first_request", [False, True], ids=["fresh", "kept-alive"])
async def test_a_head_still_arriving_after_the_limit_gets_408_and_the_connection_closed(
    start_gateway: StartGateway, settings: Settings, first_request: bool
) -> None:
    gateway = await start_gateway(settings.replace(head_timeout_s=HEAD_LIMIT_S))
    began = time.monotonic()  # the clock starts as the connection opens
    async with connect(gateway) as slow, gateway.client() as other:
        if first_request:  # and again at the next request's first byte
            assert (await slow.request(REQUEST_LINE + b"\r\n")).status == 200
            began = time.monotonic()
        trickling = asyncio.create_task(trickle(slow, REQUEST_LINE + SLOW_HEADER))
        try:
            served = await other.get("/healthz")  # meanwhile, another client is served
            answer = await read_to_close(slow.reader)
            took_s = time.monotonic() - began
            # The head was still arriving: its thousand bytes take a hundred limits.
            still_trickling = not trickling.done()
        finally:
            trickling.cancel()

    assert served.status_code == 200
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nconnection: close" in head
    assert orjson.loads(body) == {
        "error": "request_timeout",
        "detail": f"the request head did not arrive within {HEAD_LIMIT_S:g} s",
    }
    assert took_s >= HEAD_LIMIT_S
    assert still_trickling


async def test_a_connection_that_never_sends_a_byte_is_closed_after_the_limit(
    start_gateway: StartGateway, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(head_timeout_s=HEAD_LIMIT_S))
    began = time.monotonic()
    async with connect(gateway) as silent:
        answer = await read_to_close(silent.reader)

    assert answer == b""  # nothing to answer: it asked nothing
    assert time.monotonic() - began >= HEAD_LIMIT_S


async def test_slow_heads_that_end_within_the_limit_are_served(
    start_gateway: StartGateway, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(head_timeout_s=HEAD_LIMIT_S))
    head = REQUEST_LINE + b"X-Slow: a\r\n\r\n"
    async with connect(gateway) as slow:
        began = time.monotonic()
        answers = []
        # Each head in five pieces over half the limit: the two of them take longer than the
        # limit, but each is timed from its own first byte.
        for _ in range(2):
            for start in range(0, len(head), 10):
                slow.writer.write(head[start : start + 10])
                await asyncio.sleep(HEAD_LIMIT_S * 0.12)
            answers.append(await slow.request(b""))
        took_s = time.monotonic() - began

    assert [(answer.status, orjson.loads(answer.body)) for answer in answers] == [
        (200, {"status": "ok"}),
        (200, {"status": "ok"}),
    ]
    assert took_s > HEAD_LIMIT_S


async def test_an_event_stream_outlives_the_head_limit(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(head_timeout_s=HEAD_LIMIT_S))
    publisher = Publisher(redis, settings)
    job_id = "outlives-the-head-limit"
    await _queue(publisher, job_id)
    async with connect(gateway) as watcher, connect(gateway) as silent:
        watching = asyncio.create_task(watcher.request(_stream_request(job_id)))
        await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
        # Even the start of another request's head behind it does not get the stream cut.
        watcher.writer.write(b"GET /healthz HTTP/1.1\r\nX-Half: ")
        # A connection opened with the stream, cut by the sweep: the limit has passed.
        assert await read_to_close(silent.reader) == b""
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": 1}))
        await publish_completed(Publisher(redis, settings), job_id)
        events = await watching

    assert events.status == 200
    assert events.event_ids() == await stream_ids(redis, settings, job_id)


async def test_a_held_stream_keeps_a_lean_connection(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "lean"
    await _queue(publisher, job_id)
    async with connect(gateway) as client:
        watching = asyncio.create_task(client.request(_stream_request(job_id)))
        await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
        [protocol] = [
            p
            for p in gateway.server.server_state.connections
            if isinstance(p, StreamingHttpProtocol)
        ]
        # The instance dict shares its keys (a full one is 1.5 KB), no event or deque is kept
        # for a connection that never waits or pipelines.
        assert sys.getsizeof(vars(protocol)) < 512
        assert isinstance(protocol.flow, LeanFlowControl)
        assert sys.getsizeof(protocol.pipeline) < 128  # an empty deque: 624
        await publish_completed(Publisher(redis, settings), job_id)
        events = await watching
    assert events.event_ids() == await stream_ids(redis, settings, job_id)


async def test_a_held_stream_keeps_no_request_objects_and_its_connection_serves_the_next(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "held"
    await _queue(publisher, job_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        # The head and the first frames come in one write.
        async with asyncio.timeout(scaled(10)):
            first = await reader.readuntil(b"\n\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"retry: " in first
        connections = gateway.server.server_state.connections
        [protocol] = [p for p in connections if isinstance(p, StreamingHttpProtocol)]
        # The request's scope, cycle, parser and task are gone; one small task carries the stream.
        assert vars(protocol)["scope"] is None
        assert vars(protocol)["parser"] is None
        assert not isinstance(vars(protocol)["cycle"], RequestResponseCycle)
        assert len(gateway.server.server_state.tasks) == 1
        await publish_completed(Publisher(redis, settings), job_id)
        async with asyncio.timeout(scaled(10)):
            body = await reader.readuntil(b"\r\n0\r\n\r\n")
        assert b"event: completed" in body
        # Kept alive: the same connection serves the next request.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert (await read_to_close(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        await wait_until(lambda: not gateway.server.server_state.tasks)
    finally:
        writer.close()


# --- stream requests the ring answers -----------------------------------------------------


class RingAnswers:
    """Wraps a gateway's `stream_in_ring`, recording the path of each request it was asked
    about and whether it answered it."""

    def __init__(self, gateway: Gateway) -> None:
        state = gateway.server.server_state
        assert isinstance(state, GatewayServerState)
        assert state.stream_in_ring is not None
        self._answer = state.stream_in_ring
        self.asked: list[tuple[str, bool]] = []
        state.stream_in_ring = self

    def __call__(self, scope: dict[str, Any]) -> tuple[EventStreamResponse, str] | None:
        answer = self._answer(scope)
        self.asked.append((scope["path"], answer is not None))
        return answer


@dataclass
class Watched:
    """A gateway whose ring answers are recorded, and a job it watches for a first client."""

    gateway: Gateway
    answers: RingAnswers
    first: Client
    watching: asyncio.Task[RawResponse]  # the first client's whole stream
    ids: list[str]  # the job's events so far


async def _watched_job(
    start_gateway: StartGateway, redis: Redis, settings: Settings, job_id: str, progress: int
) -> Watched:
    """A job watched by a first client (so the gateway watches the job) and then given
    `progress` events, which its ring holds."""
    gateway = await start_gateway()
    answers = RingAnswers(gateway)
    publisher = Publisher(redis, settings)
    await _queue(publisher, job_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    first = Client(reader, writer)
    watching = asyncio.create_task(first.request(_stream_request(job_id)))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
    # Announced live from now on, so the ring keeps every event that follows.
    await wait_until(lambda: _subscribed(gateway, job_id), message="the job's feed subscribed")
    for n in range(progress):
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": n}))
    ids = await stream_ids(redis, settings, job_id)
    last = StreamId.parse(ids[-1])
    await wait_until(lambda: gateway.hub.vouch(job_id, last) is not None, message="in the ring")
    return Watched(gateway, answers, first, watching, ids)


def _subscribed(gateway: Gateway, job_id: str) -> bool:
    feed = gateway.hub._feeds.get(job_id)
    return feed is not None and feed.subscribed.is_set()


def _same_head(response: RawResponse) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name != "date"}


async def test_a_resume_the_ring_vouches_for_is_answered_as_the_asgi_path_answers(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    job_id = "ring"
    watched = await _watched_job(start_gateway, redis, settings, job_id, progress=3)
    gateway, ids = watched.gateway, watched.ids
    resumed_from = {"Last-Event-ID": ids[1], "X-Request-ID": "resume-1"}
    resuming = asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events", resumed_from))
    multi = asyncio.create_task(
        raw_get(gateway.port, f"/events?job={job_id}", {"Last-Event-ID": f"{job_id}:{ids[2]}"})
    )
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 3)
    await publish_completed(Publisher(redis, settings), job_id)
    whole, resumed, composite = await asyncio.gather(watched.watching, resuming, multi)
    watched.first.writer.close()
    ids = await stream_ids(redis, settings, job_id)

    assert watched.answers.asked == [
        (f"/jobs/{job_id}/events", False),  # no position: read from Redis
        (f"/jobs/{job_id}/events", True),
        ("/events", True),
    ]
    assert whole.event_ids() == ids
    assert resumed.event_ids() == ids[2:]
    assert composite.event_ids() == [f"{job_id}:{id_}" for id_ in ids[3:]]
    assert resumed.body.startswith(b"retry: ")
    # The same head by either path, but for its date and request id.
    assert resumed.headers["x-request-id"] == "resume-1"
    assert re.fullmatch("[0-9a-f]{32}", composite.headers["x-request-id"])
    for response in (resumed, composite):
        assert _same_head(response) | {"x-request-id": ""} == _same_head(whole) | {
            "x-request-id": "",
            "connection": "close",
        }
    counters = gateway.hub.counters
    assert counters.resumes[ResumeKind.RING] == 2
    assert counters.requests[("/jobs/{job_id}/events", "GET", 200)] == 2
    assert counters.requests[("/events", "GET", 200)] == 1


async def test_stream_requests_the_ring_cannot_answer_alone_are_answered_by_the_asgi_path(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    job_id = "asgi"
    watched = await _watched_job(start_gateway, redis, settings, job_id, progress=1)
    gateway, ids = watched.gateway, watched.ids
    path = f"/jobs/{job_id}/events"
    malformed = await raw_get(gateway.port, path, {"Last-Event-ID": "yesterday"})
    unknown_job = await raw_get(gateway.port, "/jobs/nope/events", {"Last-Event-ID": ids[0]})
    inventing = asyncio.create_task(raw_get(gateway.port, path, {"Last-Event-ID": "1-1"}))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 2)
    await publish_completed(Publisher(redis, settings), job_id)
    _, invented = await asyncio.gather(watched.watching, inventing)
    watched.first.writer.close()
    ids = await stream_ids(redis, settings, job_id)
    at_the_end = await raw_get(gateway.port, path, {"Last-Event-ID": ids[-1]})

    assert [answered for _, answered in watched.answers.asked] == [False] * 5
    assert invented.status == 200
    assert b"event: reset" in invented.body
    assert invented.event_ids() == ids
    assert malformed.status == 400
    assert orjson.loads(malformed.body)["error"] == "invalid_last_event_id"
    assert unknown_job.status == 404
    assert at_the_end.status == 204


class AccessLines(logging.Handler):
    """uvicorn's access lines, with the request id each was written under."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[tuple[object, ...], str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple)
        self.lines.append((record.args, REQUEST_ID.get()))


async def test_a_ring_answer_is_access_logged_with_its_request_id_and_forwarded_client(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    job_id = "logged"
    watched = await _watched_job(start_gateway, redis, settings, job_id, progress=1)
    gateway, ids = watched.gateway, watched.ids
    access = logging.getLogger("uvicorn.access")
    lines = AccessLines()
    access.addHandler(lines)
    try:
        # From 127.0.0.1, a proxy uvicorn trusts by default: the client is the one it names.
        headers = {
            "Last-Event-ID": ids[-1],
            "X-Request-ID": "via-proxy",
            "X-Forwarded-For": "203.0.113.7",
        }
        resuming = asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events", headers))
        await wait_until(lambda: gateway.hub.counts()["subscribers"] == 2)
        await publish_completed(Publisher(redis, settings), job_id)
        await asyncio.gather(watched.watching, resuming)
    finally:
        access.removeHandler(lines)
        watched.first.writer.close()

    assert watched.answers.asked[-1] == (f"/jobs/{job_id}/events", True)
    assert lines.lines == [
        (("203.0.113.7:0", "GET", f"/jobs/{job_id}/events", "1.1", 200), "via-proxy")
    ]
