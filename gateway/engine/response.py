"""The ASGI response that carries an event stream: it hands the connection to the hub and
closes the response the way the stream's outcome calls for."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from gateway.engine.connection import AsgiConnection, Connection, transport_connection
from gateway.engine.hub import Hub
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Outcome

__all__ = ["EventStreamResponse"]

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # Tells nginx (and proxies that copy it) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
    # Declared, because the hub frames the chunks of a direct write itself.
    (b"transfer-encoding", b"chunked"),
]


class EventStreamResponse:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        connection: Connection = transport_connection(scope) or AsgiConnection(send, receive)
        outcome = await self._hub.serve(
            connection, self._resumes, self._head, composite=self._composite
        )
        if outcome is Outcome.LOST:
            return
        if outcome is not Outcome.CUT:
            try:
                async with asyncio.timeout(self._send_timeout):
                    await connection.drain()
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            except TimeoutError:
                self._hub.counters.send_timeouts += 1
        # Too slow to take what it was sent: drop it; it resumes from its Last-Event-ID.
        connection.abort()
        await connection.wait_closed()
