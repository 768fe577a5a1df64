"""Hostile and broken input against a real gateway process: slowloris requests, thousands of
idle connections, garbage and oversized requests, ids with path characters, bytes that are not
UTF-8, and payloads that try to smuggle SSE events into a stream. The answer is always a clear
4xx (or, for requests too broken to parse, uvicorn's 400 and a closed connection), never a 5xx,
and every other client keeps being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from shared.clients import create_redis
from shared.events import EventType
from shared.keys import Keys
from shared.settings import Settings
from tests.processes import GatewayProcess, ProcessGroup, open_files
from tests.support import RedisServer, ServerSentEvent, SSEParser, scaled, submit, wait_until
from tests.watchers import (
    GATEWAY_EVENT_TYPES,
    TEST_API_KEY,
    check_envelope,
    shared_ssl_context,
    verify,
    watch_client,
    watch_job,
)

pytestmark = pytest.mark.timeout(60)

STORED_TYPES = frozenset(EventType)

AUTH = f"Authorization: Bearer {TEST_API_KEY}\r\n".encode()
# Everything an SSE parser reacts to: a blank line ending the frame, a new event with its own
# type, data, id and retry, a comment, and CR / CRLF line ends.
INJECTION = (
    'x\n\nevent: injected\ndata: {"v":1,"type":"completed"}\nid: 9999999999999-0\n'
    "retry: 1\n\n: comment\r\rdata: injected\r\n\r\ndata: "
)


@dataclass
class Stack:
    gateway: GatewayProcess
    settings: Settings
    redis: Redis

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)


@pytest.fixture(scope="module")
async def stack(redis_server: RedisServer) -> AsyncIterator[Stack]:
    """One gateway and one worker process for the whole module: hostile input must not
    disturb a gateway that others keep using."""
    tag = f"h{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env(
        {
            "JOBWIRE_REDIS_URL": redis_server.url,
            "JOBWIRE_KEY_PREFIX": tag,
            "JOBWIRE_QUEUE_NAME": f"{tag}:queue",
            "JOBWIRE_WORKER_POLL_S": "0.05",
            "JOBWIRE_SHUTDOWN_GRACE_S": "0",
        }
    )
    redis = create_redis(settings.events_redis_url)
    async with ProcessGroup.open() as processes:
        gateway, _ = await asyncio.gather(processes.gateway(settings), processes.worker(settings))
        try:
            yield Stack(gateway, settings, redis)
            await gateway.stop()  # its log is complete once it has exited
            assert_clean_log(gateway.log())
        finally:
            await redis.aclose()


def assert_clean_log(log: str) -> None:
    """No request made the gateway fail: no traceback, no 5xx in the access log."""
    assert "Traceback" not in log, log
    assert "Exception in ASGI application" not in log, log
    assert '" 5' not in log, log


@dataclass
class RawAnswer:
    status: int | None  # None: the connection was closed without an answer
    body: bytes
    content_type: str | None


async def exchange(
    port: int, request: bytes, *, timeout: float = 5.0, hang_up_early: bool = False
) -> RawAnswer:
    """Sends `request` as is on a fresh connection and reads one answer, or the close.

    With `hang_up_early`, no answer within `timeout` is fine: the client then hangs up (a
    client that sent half a body and went away), so that wait is the test's own pause and is not
    `scaled`; otherwise `timeout` bounds the wait for an answer and is.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
        try:
            async with asyncio.timeout(timeout if hang_up_early else scaled(timeout)):
                return await _read_answer(reader)
        except TimeoutError:
            if hang_up_early:
                return RawAnswer(None, b"", None)
            raise
    finally:
        writer.transport.abort()


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return RawAnswer(None, b"", None)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    length = int(headers.get("content-length", "0"))
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        body = b""
    return RawAnswer(int(status_line.split()[1]), body, headers.get("content-type"))


def assert_clear_refusal(answer: RawAnswer, what: object) -> None:
    """A 4xx (JSON with an error code when the app answers) or a close; never a 5xx."""
    if answer.status is None:
        return
    assert 400 <= answer.status < 500, (what, answer)
    if answer.content_type == "application/json":
        assert "error" in orjson.loads(answer.body), (what, answer)


async def assert_still_serving(stack: Stack) -> None:
    """A normal client gets a whole job, submit to terminal event, promptly."""
    async with asyncio.timeout(scaled(10)):
        async with stack.gateway.client() as api:
            assert (await api.get("/healthz")).status_code == 200
            job_id = await submit(api, "demo.tokens", text="still here", delay_ms=1)
        async with watch_client(stack.gateway.url) as client:
            watch = await watch_job([client], job_id)
    assert (await verify(watch, stack.redis, stack.keys)).exact


async def test_slowloris_requests_do_not_hold_up_other_clients(stack: Stack) -> None:
    port = stack.gateway.port
    trickled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40

    async def slowloris() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for byte in trickled:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)  # the attack is the slowness
        except ConnectionError:
            pass  # cut off by the server: also fine
        finally:
            writer.transport.abort()

    attackers = [asyncio.create_task(slowloris()) for _ in range(100)]
    try:
        started = time.monotonic()
        for _ in range(3):
            await assert_still_serving(stack)
        served_in = time.monotonic() - started
        assert not all(task.done() for task in attackers)  # they were there all along
    finally:
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
    assert served_in < 5, served_in


async def test_thousands_of_idle_connections_leave_the_gateway_serving(stack: Stack) -> None:
    idle = 3_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= idle * 2 + 500, f"open-file limit {soft} too low for this test"
    pid, port = stack.gateway.pid, stack.gateway.port
    before = open_files(pid)
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(idle // 250):
            opened = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(250))
            )
            writers += [writer for _, writer in opened]
        # Half of them went quiet after one request (idle keep-alive), half never spoke.
        for writer in writers[: idle // 2]:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await assert_still_serving(stack)
        holding = open_files(pid)
    finally:
        for writer in writers:
            writer.transport.abort()

    def released() -> bool:
        return open_files(pid) <= before + 20

    await wait_until(released, timeout=15, message="the gateway letting the connections go")
    assert holding >= before + idle * 0.9, (before, holding)  # they really were open
    await assert_still_serving(stack)


GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\xff\xfe\xfd\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\n Folded: header\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: -1\r\n\r\n",
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: 1e3\r\n\r\n",
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{}",
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Type: application/json\r\nContent-Length: 300000\r\n\r\n"
    + b"[" * 300_000,
    b"POST /jobs HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
    b"BREW /jobs HTTP/1.1\r\nHost: a\r\n\r\n",
    b"DELETE /jobs HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /jobs/x/events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: " + b"9" * 10_000 + b"\r\n\r\n",
]


GARBAGE_CASES = [
    *(pytest.param(request, id=str(index)) for index, request in enumerate(GARBAGE)),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        id="one-megabyte-header",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-Many: v\r\n" * 10_000 + b"\r\n",
        id="ten-thousand-headers",
    ),
]


@pytest.mark.parametrize("request_bytes", GARBAGE_CASES)
async def test_garbage_and_oversized_requests_are_refused_not_crashed_on(
    stack: Stack, request_bytes: bytes
) -> None:
    answer = await exchange(stack.gateway.port, request_bytes)

    assert_clear_refusal(answer, request_bytes[:80])


# Bodies that end before they are complete: the client is gone while the app reads them.
BROKEN_BODIES = [
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
    b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name": ',
]


async def test_a_request_broken_off_mid_body_leaves_no_error_behind(settings: Settings) -> None:
    async with ProcessGroup.open() as processes:
        gateway = await processes.gateway(settings)
        for body in BROKEN_BODIES:
            request = b"POST /jobs HTTP/1.1\r\nHost: a\r\n" + AUTH + body
            answer = await exchange(gateway.port, request, timeout=0.5, hang_up_early=True)
            assert_clear_refusal(answer, body)
        async with gateway.client() as api:
            assert (await api.get("/healthz")).status_code == 200
        await gateway.stop()

        assert_clean_log(gateway.log())


JOB_PATHS = [
    "/jobs/..%2F..%2Fetc%2Fpasswd",
    "/jobs/../../etc/passwd",
    "/jobs/%2e%2e",
    "/jobs/a%2Fb",
    "/jobs/a%00b",
    "/jobs/%7Bother%7D",
    "/jobs/a%7D:events",
    "/jobs/a:b:c",
    "/jobs/a*b",
    "/jobs/a%20b",
    "/jobs/-leading-dash",
    "/jobs/x%0D%0ASet-Cookie:%20a=b",
    "/jobs/%ff%fe",
    "/jobs/" + "a" * 129,
    "/jobs/%E2%80%AEevil",
]


@pytest.mark.parametrize("path", JOB_PATHS)
async def test_job_ids_with_path_characters_get_a_clear_4xx(stack: Stack, path: str) -> None:
    keys_before = await stack.redis.keys(f"{stack.settings.key_prefix}:*")
    for method, suffix in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
        request = f"{method} {path}{suffix} HTTP/1.1\r\nHost: a\r\n".encode() + AUTH + b"\r\n"
        answer = await exchange(stack.gateway.port, request)
        assert answer.status is not None, (method, path)
        assert answer.status in (400, 404), (method, path, answer)
        assert orjson.loads(answer.body)["error"], (method, path, answer)
    async with stack.gateway.client() as api:
        for job_id in (path.removeprefix("/jobs/"), "../x", "a/b", "{x}", "a\x00b", "é"):
            reply = await api.post("/jobs", json={"name": "demo.countdown", "job_id": job_id})
            assert reply.status_code == 400, (job_id, reply.text)
            assert reply.json()["error"]
    assert await stack.redis.keys(f"{stack.settings.key_prefix}:*") == keys_before


def _post(body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"POST /jobs HTTP/1.1\r\nHost: a\r\n" + AUTH
    head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


NOT_UTF8 = [
    b"GET /jobs/\xff\xfe/events HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /jobs/ok/events?last_event_id=%ff%fe HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /jobs/ok/events HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Last-Event-ID: \xff\xfe\r\n\r\n",
    b"GET /jobs/ok HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    _post(b'\xff\xfe{"name": "demo.countdown"}\xc3'),
    _post(b'{"name": "demo.tokens\xff", "args": {}}'),
    _post(b'{"name": "demo.tokens", "args": {"text": "\\ud800"}}'),
    _post(b"name=%ff%fe", b"application/x-www-form-urlencoded"),
]


@pytest.mark.parametrize("request_bytes", NOT_UTF8, ids=range(len(NOT_UTF8)))
async def test_bytes_that_are_not_utf8_get_a_clear_4xx(stack: Stack, request_bytes: bytes) -> None:
    answer = await exchange(stack.gateway.port, request_bytes)

    assert answer.status is not None, request_bytes
    assert_clear_refusal(answer, request_bytes)


async def test_payloads_carrying_sse_syntax_never_inject_an_event(stack: Stack) -> None:
    async with stack.gateway.client() as api:
        failing = await submit(api, "demo.fail", message=INJECTION)
        typing = await submit(api, "demo.tokens", text=f"{INJECTION} and {INJECTION}", delay_ms=1)
        unknown_name = await api.post("/jobs", json={"name": INJECTION})
        unknown_arg = await api.post(
            "/jobs", json={"name": "demo.tokens", "args": {INJECTION: INJECTION}}
        )
    for refused in (unknown_name, unknown_arg):
        assert refused.status_code in (400, 422), refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]

    single = [await _raw_stream(stack, f"/jobs/{job_id}/events") for job_id in (failing, typing)]
    both = await _raw_stream(stack, f"/events?job={failing}&job={typing}")

    stored = {
        job_id: [raw.decode() for raw, _ in await stack.redis.xrange(stack.keys.events(job_id))]
        for job_id in (failing, typing)
    }
    for job_id, raw in zip((failing, typing), single, strict=True):
        events = _parse_strictly(raw, stack)
        assert [event.id for event in events] == stored[job_id]
        for event in events:
            check_envelope(event, job_id)
    # On the multi-job stream an id is a cursor of every job's position: `<job>:<id>,...`.
    delivered: dict[str, list[str]] = {failing: [], typing: []}
    for event in _parse_strictly(both, stack):
        envelope = orjson.loads(event.data)
        check_envelope_fields(envelope, event)
        assert event.id is not None
        positions = dict(entry.rsplit(":", 1) for entry in event.id.split(","))
        delivered[envelope["job"]].append(positions[envelope["job"]])
    assert delivered == stored

    failure = orjson.loads(_parse_strictly(single[0], stack)[-1].data)
    assert failure["type"] == "failed"
    assert failure["data"]["message"] == INJECTION  # carried intact, just never as SSE syntax
    tokens = [
        orjson.loads(e.data)["data"]["token"]
        for e in _parse_strictly(single[1], stack)
        if e.event == "data"
    ]
    assert "".join(tokens) == f"{INJECTION} and {INJECTION}"
    async with stack.gateway.client() as api:
        snapshot = (await api.get(f"/jobs/{failing}")).json()
    assert snapshot["error"]["message"] == INJECTION


def check_envelope_fields(envelope: dict[str, object], event: ServerSentEvent) -> None:
    assert envelope["v"] == 1, event
    assert envelope["type"] == event.event, event
    assert envelope["type"] in STORED_TYPES, event


async def _raw_stream(stack: Stack, path: str) -> bytes:
    """The whole body of an event stream, as bytes, until the server ends it."""
    async with (
        asyncio.timeout(scaled(15)),
        httpx.AsyncClient(
            base_url=stack.gateway.url, timeout=scaled(10), verify=shared_ssl_context()
        ) as client,
        client.stream("GET", path, headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as reply,
    ):
        assert reply.status_code == 200, path
        return b"".join([chunk async for chunk in reply.aiter_raw()])


def _parse_strictly(raw: bytes, stack: Stack) -> list[ServerSentEvent]:
    """The stream as a browser reads it: every event is a stored envelope, none injected."""
    parser = SSEParser()
    events = parser.feed(raw)
    assert parser.retry == stack.settings.sse_retry_ms  # no injected `retry:`
    assert all(comment in ("ping", "") for comment in parser.comments), parser.comments
    assert all(event.event != "injected" for event in events)
    stored = [event for event in events if event.id is not None]
    for event in events:
        if event.id is None:
            assert event.event in GATEWAY_EVENT_TYPES, event
    return stored
