"""The ASGI responses that carry an event stream, over HTTP (`EventStreamResponse`) or a
WebSocket (`WebSocketStreamResponse`): each hands the connection to the hub and ends the way the
stream's outcome calls for.

A WebSocket ends with a close code a client can act on: 1000 after the `end` message (every
job delivered its terminal event); 1012 at shutdown and 1013 when Redis could not be read
(reconnect, elsewhere or shortly); 4401 when its watch token was revoked (a reconnect is
refused with 401). Too slow a reader is dropped without a close frame, as on SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial

from starlette.types import Receive, Scope, Send

from gateway.engine import websocket
from gateway.engine.connection import (
    AsgiConnection,
    AsgiWebSocketConnection,
    Connection,
    TransportConnection,
    transport_connection,
)
from gateway.engine.framing import WEBSOCKET
from gateway.engine.hub import Hub
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Outcome

__all__ = ["EventStreamResponse", "WebSocketStreamResponse", "websocket_ended"]

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # Tells nginx (and proxies that copy it) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
    # Declared, because the hub frames the chunks of a direct write itself.
    (b"transfer-encoding", b"chunked"),
]


def _released() -> None:
    pass


class _HubStream:
    """What either response hands the hub: the jobs and where each resumes, the bytes that go
    first, whether the stream carries several jobs, and how long its end may take to send."""

    __slots__ = ("_composite", "_head", "_hub", "_resumes", "_send_timeout")

    def __init__(
        self,
        hub: Hub,
        resumes: list[Resume],
        head: bytes,
        *,
        composite: bool,
        send_timeout: float,
    ) -> None:
        self._hub = hub
        self._resumes = resumes
        self._head = head
        self._composite = composite
        self._send_timeout = send_timeout


class EventStreamResponse(_HubStream):
    """The stream over HTTP. Under Jobwire's server it is held (`TransportConnection.cork`):
    its head goes out with the first frames, and its ASGI call returns once the head is
    built, leaving one small task to carry the stream; `release` is called when the stream
    ends, however it ends."""

    __slots__ = ("_release",)

    def __init__(
        self,
        hub: Hub,
        resumes: list[Resume],
        head: bytes,
        *,
        composite: bool,
        send_timeout: float,
        release: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(hub, resumes, head, composite=composite, send_timeout=send_timeout)
        self._release = release or _released

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = transport_connection(scope)
        if direct is not None and direct.cork(scope):
            try:
                # Counted, tagged and logged on its way as any response start is.
                await _start(send)
            except BaseException:
                self._release()
                raise
            finally:
                direct.uncork()
            direct.hold(asyncio.get_running_loop().create_task(self.held(direct)))
            return
        try:
            await _start(send)
            connection: Connection = direct or AsgiConnection(send, receive)
            outcome = await self._serve(connection)
            await self._finish(connection, outcome, partial(_end_body, send))
        finally:
            self._release()

    async def held(self, connection: TransportConnection) -> None:
        """Carries the stream on `connection`, whose head is written with the first frames,
        to its end."""
        try:
            outcome = await self._serve(connection)
            await self._finish(connection, outcome, connection.end_held)
        finally:
            self._release()

    def _serve(self, connection: Connection) -> Awaitable[Outcome]:
        return self._hub.serve(connection, self._resumes, self._head, composite=self._composite)

    async def _finish(
        self, connection: Connection, outcome: Outcome, end: Callable[[], Awaitable[None] | None]
    ) -> None:
        """End the body cleanly within the send timeout, or drop the connection."""
        if outcome is Outcome.LOST:
            return
        if outcome is not Outcome.CUT:
            try:
                async with asyncio.timeout(self._send_timeout):
                    await connection.drain()
                    ended = end()
                    if ended is not None:
                        await ended
                return
            except TimeoutError:
                self._hub.counters.send_timeouts += 1
        # Too slow to take what it was sent: drop it; it resumes from its Last-Event-ID.
        connection.abort()
        await connection.wait_closed()


async def _start(send: Send) -> None:
    # A new message each time: the send wrappers add to its headers.
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})


async def _end_body(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


_CLOSE_CODES = {
    Outcome.FINISHED: 1000,  # normal closure
    Outcome.SHUTDOWN: 1012,  # service restart: reconnect (to another replica)
    Outcome.UNAVAILABLE: 1013,  # try again later
    Outcome.REVOKED: 4401,  # the watch token was revoked: a reconnect is refused with 401
}
_END = websocket.END.decode()


class WebSocketStreamResponse(_HubStream):
    """The stream over a WebSocket: accepted once the request was checked and its resume
    points found (a refusal is an HTTP answer before the upgrade), then fed by the hub."""

    __slots__ = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})
        connection: Connection = transport_connection(scope) or AsgiWebSocketConnection(
            send, receive
        )
        outcome = await self._hub.serve(
            connection, self._resumes, self._head, composite=self._composite, framing=WEBSOCKET
        )
        if outcome is Outcome.LOST:
            return
        if outcome is not Outcome.CUT:
            try:
                async with asyncio.timeout(self._send_timeout):
                    await connection.drain()
                    await _close(send, _CLOSE_CODES[outcome])
                return
            except TimeoutError:
                self._hub.counters.send_timeouts += 1
            except OSError:  # the client left meanwhile (uvicorn's ClientDisconnected)
                return
        connection.abort()
        await connection.wait_closed()


async def websocket_ended(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a resume at the terminal event of every job: the `end` message at once."""
    await send({"type": "websocket.accept"})
    with contextlib.suppress(OSError):  # the client left meanwhile
        await _close(send, 1000)


async def _close(send: Send, code: int) -> None:
    if code == 1000:
        await send({"type": "websocket.send", "text": _END})
    await send({"type": "websocket.close", "code": code})
