"""The ASGI response that carries an event stream to one client.

One task group per stream (as in sse-starlette): the sender, a listener for the client going
away, and a listener for the app shutting down. Whichever finishes first cancels the others,
so Redis is never read for a client that is gone and no stream holds up a shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing

import anyio
from starlette.types import Receive, Scope, Send

__all__ = ["EventStreamResponse"]

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # Tells nginx (and proxies that copy it) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse:
    def __init__(
        self, frames: AsyncGenerator[bytes, None], *, shutdown: asyncio.Event, send_timeout: float
    ) -> None:
        self._frames = frames
        self._shutdown = shutdown
        self._send_timeout = send_timeout
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        async with anyio.create_task_group() as group:

            async def first_to_finish(step: Awaitable[object]) -> None:
                await step
                group.cancel_scope.cancel()

            group.start_soon(first_to_finish, self._send_frames(send))
            group.start_soon(first_to_finish, self._wait_for_disconnect(receive))
            group.start_soon(first_to_finish, self._shutdown.wait())
        if not self._client_gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_frames(self, send: Send) -> None:
        async with aclosing(self._frames) as frames:
            async for chunk in frames:
                # A client that stops reading fills its socket buffer and blocks this send;
                # past the bound it is cut off and resumes from its Last-Event-ID.
                try:
                    with anyio.fail_after(self._send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (TimeoutError, OSError):
                    self._client_gone = True
                    return

    async def _wait_for_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._client_gone = True
                return
