"""Events across any number of connections: the resume loop, for one job's stream, several
jobs' (`GET /events`) and a submit-and-stream (`POST /jobs`), over SSE or (the GETs) over a
WebSocket (`jobwire.client.websocket`): each attempt yields the same messages either way.

On a network error, a timeout, an early end of the stream or an answer other than 200, it
waits (exponential backoff with jitter) and sends the same request again with
`Last-Event-ID` set to where it is (`jobwire.client.position`): the last stored event it
delivered, or for several jobs the cursor of each. The gateway then sends exactly what came
after, and any event at or before that position is dropped anyway, so a consumer never sees a
duplicate. It stops after the terminal event (of every job), on 204 (nothing left after the
position), and raises on a 4xx that retrying cannot fix (400, 401, 403, 404, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx

from jobwire.client.backoff import Backoff
from jobwire.client.errors import GatewayUnreachable
from jobwire.client.events import InvalidEvent, JobEvent
from jobwire.client.http import (
    RETRYABLE_CLIENT_ERRORS,
    authorization,
    describe,
    rejection,
    retry_after_s,
)
from jobwire.client.position import Position
from jobwire.client.sse import EventStreamTooLarge, ServerSentEvent, SSEParser
from jobwire.client.websocket import END, SocketRefused, socket_messages, socket_url
from shared.settings import Settings

__all__ = [
    "DEFAULT_READ_TIMEOUT_S",
    "ConnectionListener",
    "ConnectionState",
    "StreamOptions",
    "StreamRequest",
    "Transport",
    "stream_events",
]

# The gateway pings an idle stream every JOBWIRE_PING_S: three pings missed (at the default
# interval) mean the connection is dead even if no error says so.
_MISSED_PINGS = 3
Transport = Literal["sse", "ws"]
DEFAULT_READ_TIMEOUT_S = _MISSED_PINGS * Settings().ping_s


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """Told to a listener when a stream connects, and when it is lost (with the wait before
    the next attempt)."""

    connected: bool
    reason: str | None = None
    failures: int = 0
    retry_in_s: float | None = None


ConnectionListener = Callable[[ConnectionState], None]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    backoff: Backoff = field(default_factory=Backoff)
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    connect_timeout_s: float = 10.0
    # How long the gateway may stay silent (no answer, or none that is an event stream) before
    # `GatewayUnreachable`. None: keep trying for as long as the consumer waits (like a
    # browser's EventSource).
    give_up_after_s: float | None = None
    # "sse", or "ws": a GET stream over a WebSocket (a submit-and-stream stays a POST).
    transport: Transport = "sse"


class _Retry(Exception):
    """An answer worth trying again after a while."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Silence:
    """Since when nothing came from the gateway on an event stream, against the time allowed.

    Counted from the last byte (a ping counts), not from the first failure: a gateway that
    accepts connections and never answers would otherwise hold each attempt for a whole read
    timeout and be given up on only after several of them.
    """

    def __init__(self, limit_s: float | None, url: str, what: str) -> None:
        self._limit_s = limit_s
        self._url, self._what = url, what
        self._since = time.monotonic()

    def heard(self) -> None:
        self._since = time.monotonic()

    def left_s(self) -> float | None:
        """Seconds until giving up (None: never)."""
        if self._limit_s is None:
            return None
        return self._limit_s - (time.monotonic() - self._since)

    def check(self, reason: str) -> None:
        """Raises `GatewayUnreachable` once the time allowed is over."""
        left_s = self.left_s()
        if left_s is not None and left_s <= 0:
            raise GatewayUnreachable(
                f"giving up: nothing from the gateway at {self._url} for {self._limit_s:g} s"
                f" ({self._what}; last: {reason})"
            )


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What every attempt sends, besides the position (`Last-Event-ID`) and the credential."""

    path: str
    what: str  # what is streamed, for messages: "job 3f0c…"
    method: str = "GET"
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


async def stream_events(
    http: httpx.AsyncClient,
    request: StreamRequest,
    position: Position,
    *,
    credential: str | None = None,
    options: StreamOptions = StreamOptions(),
    on_connection: ConnectionListener | None = None,
) -> AsyncGenerator[JobEvent, None]:
    """Every event after `position` (which it moves), each exactly once, until `position`
    is finished or the gateway answers 204."""
    failures = 0
    silence = _Silence(options.give_up_after_s, str(http.base_url).rstrip("/"), request.what)
    while True:
        retry_after = None
        try:
            attempt = _attempt(http, request, position, credential, options, silence)
            async with aclosing(attempt) as messages:
                async for message in messages:
                    if message is _CONNECTED:
                        if on_connection is not None:
                            on_connection(ConnectionState(connected=True))
                        continue
                    if message is END:
                        return
                    event = position.read(message)
                    if not position.take(event):
                        continue
                    failures = 0
                    yield event
                    if position.finished:
                        return
            reason = "the stream ended before the job did"
        except TimeoutError:  # only _response's bound raises it; httpx raises its own
            reason = "no response"
        except _Retry as exc:
            reason, retry_after = str(exc), exc.retry_after
        except httpx.UnsupportedProtocol:
            raise
        except (httpx.TransportError, InvalidEvent, EventStreamTooLarge, OSError) as exc:
            reason = describe(exc)
        failures += 1
        silence.check(reason)
        delay = options.backoff.delay(failures, retry_after)
        left_s = silence.left_s()
        if left_s is not None:
            delay = min(delay, left_s)
        if on_connection is not None:
            on_connection(ConnectionState(False, reason, failures, delay))
        await asyncio.sleep(delay)
        silence.check(reason)


_CONNECTED = ServerSentEvent(event="connected")  # a marker of the attempts, never an event


def _attempt(
    http: httpx.AsyncClient,
    request: StreamRequest,
    position: Position,
    credential: str | None,
    options: StreamOptions,
    silence: _Silence,
) -> AsyncGenerator[ServerSentEvent, None]:
    """One connection's messages: `_CONNECTED` once it is open, then the stream's, then `END`
    when the gateway says nothing is left (204, or the WebSocket's `end`)."""
    if options.transport == "ws" and request.method == "GET":
        return _socket_attempt(http, request, position, credential, options, silence)
    return _sse_attempt(http, request, position, credential, options, silence)


async def _sse_attempt(
    http: httpx.AsyncClient,
    request: StreamRequest,
    position: Position,
    credential: str | None,
    options: StreamOptions,
    silence: _Silence,
) -> AsyncGenerator[ServerSentEvent, None]:
    headers = {**request.headers, **_headers(position.last_event_id, credential)}
    sent = http.build_request(
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        headers=headers,
        timeout=httpx.Timeout(options.connect_timeout_s, read=options.read_timeout_s),
    )
    async with _response(http, sent, silence.left_s()) as response:
        if await _finished(response):
            yield END
            return
        silence.heard()
        yield _CONNECTED
        parser = SSEParser()
        # Closed here, not left to the garbage collector after an early return.
        chunks_of = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with aclosing(chunks_of) as chunks:
            async for chunk in chunks:
                silence.heard()
                for message in parser.feed(chunk):
                    yield message


async def _socket_attempt(
    http: httpx.AsyncClient,
    request: StreamRequest,
    position: Position,
    credential: str | None,
    options: StreamOptions,
    silence: _Silence,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The same over a WebSocket. Its keepalive pings in place of the read timeout: the
    connection is lost when a third of it passes without a pong."""
    params = list(request.params)
    if position.last_event_id is not None:
        params.append(("last_event_id", position.last_event_id))
    url = socket_url(http.base_url, _socket_path(request.path), params)
    headers = {**request.headers, **authorization(credential)}
    messages = socket_messages(
        url,
        headers,
        open_timeout_s=options.connect_timeout_s,
        keepalive_s=options.read_timeout_s / 3,
    )
    opened = False
    try:
        async with aclosing(messages):
            async for message in messages:
                silence.heard()
                if message is None:
                    opened = True
                    yield _CONNECTED
                else:
                    yield message
    except SocketRefused as exc:
        await _finished(exc.response)  # raises what an HTTP answer other than 200 would
    finally:
        if opened:  # open until now, its pings answered: the gateway was not silent
            silence.heard()


def _socket_path(path: str) -> str:
    """The WebSocket route of an SSE stream's: /jobs/{id}/events -> /jobs/{id}/ws, /events ->
    /events/ws."""
    if path.rstrip("/") == "/events":
        return "/events/ws"
    return path.removesuffix("/events") + "/ws"


@asynccontextmanager
async def _response(
    http: httpx.AsyncClient, request: httpx.Request, answer_within_s: float | None
) -> AsyncIterator[httpx.Response]:
    """The stream's response, its head awaited at most `answer_within_s` (None: as long as
    httpx's timeouts allow); raises TimeoutError past that. The body is read without it."""
    async with asyncio.timeout(answer_within_s):
        response = await http.send(request, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _headers(position: str | None, credential: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if position is not None:
        headers["Last-Event-ID"] = position
    return headers | authorization(credential)


async def _finished(response: httpx.Response) -> bool:
    """True on 204; returns False for a stream to read; raises for anything else."""
    status = response.status_code
    if status == 204:
        return True
    if status == 200:
        content_type = response.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "text/event-stream":
            raise _Retry(f"HTTP 200 but not an event stream ({content_type[:60]!r})")
        return False
    await response.aread()
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
        raise rejection(response)
    raise _Retry(f"HTTP {status}", retry_after_s(response))
