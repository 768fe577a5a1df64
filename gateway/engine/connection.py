"""The write path from the hub to one subscriber's socket.

The hub writes pre-framed bytes to many connections per event, so that path must not wake a
task per subscriber nor pass each frame through the ASGI middleware stack. Under Jobwire's own
server (`gateway.processes.protocol`), a stream gets a `TransportConnection`: bytes go
straight to the socket's asyncio transport, and a slow reader shows as a growing write
buffer. Under any other ASGI server, an `AsgiConnection` does the same job through `send()`
with one pump task.

The hub hands over SSE bytes; a `TransportConnection` wraps each write in one HTTP/1.1 chunk,
as the response declares chunked encoding, so frames queued together go out as one chunk.
Under Jobwire's server a stream is also *held*: the response head uvicorn builds is kept and
sent with the first chunk (one write per reconnect, not two), and once the head is out uvicorn
forgets the response (`ResponseHolder`), so the request's task, scope and ASGI objects are
freed while the stream lasts; the stream ends with `end_held`.
A WebSocket's frames are whole messages already: a `WebSocketTransportConnection` (offered by
`gateway.processes.wsprotocol`) writes them as they are, and an `AsgiWebSocketConnection`
sends their messages through ASGI `websocket.send`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.types import Receive, Send
from uvicorn.protocols.http.flow_control import FlowControl

from gateway.engine import websocket

__all__ = [
    "TRANSPORT_EXTENSION",
    "AsgiConnection",
    "AsgiWebSocketConnection",
    "Connection",
    "ResponseHolder",
    "TransportConnection",
    "WebSocketTransportConnection",
    "transport_connection",
]

# The ASGI scope extension under which the server (`gateway.processes.protocol`) offers a
# request's `TransportConnection`.
TRANSPORT_EXTENSION = "jobwire.transport"


class Connection(Protocol):
    """What the hub needs of a subscriber's connection."""

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None:
        """Queue SSE bytes for the client; never blocks, never raises."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the client."""

    def exceeds(self, limit: int) -> bool:
        """More than `limit` bytes written and not yet taken (cheap on the hot path)."""

    def abort(self) -> None:
        """Drop the connection now (the client resumes from its Last-Event-ID)."""

    def on_lost(self, callback: Callable[[], object]) -> None:
        """Call `callback` once when the connection is gone (at once if it already is)."""

    def remove_on_lost(self, callback: Callable[[], object]) -> None:
        """Forget `callback`, if it was not called yet: a kept-alive socket outlives each of
        the streams it carried, and must not hold on to them."""

    async def drain(self) -> None:
        """Returns when the client has taken most of what was written (a bounded wait is the
        caller's)."""

    async def wait_closed(self) -> None:
        """Returns when the connection is gone."""


class ResponseHolder(Protocol):
    """The server's side of a held stream (`gateway.processes.protocol`)."""

    def cork(self, scope: Mapping[str, Any]) -> bool:
        """Keep the head about to be written for `scope`'s response for the first chunk; False,
        and nothing kept, when `scope` is not the response the connection is answering."""

    def uncork(self) -> None:
        """The head was built: later writes go to the socket again."""

    def hold(self, task: asyncio.Task[None]) -> None:
        """uvicorn forgets the corked response (its request's task may end); `task` carries
        the stream until `end_held`."""

    def end_held(self, last: bytes) -> None:
        """The held response ends cleanly with `last`: the connection takes its next request,
        or closes if it is not kept alive."""


class TransportConnection:
    """Writes straight to the socket's transport (see `gateway.processes.protocol`)."""

    __slots__ = ("_callbacks", "_flow", "_gone", "_high_water", "_holder", "_pending", "_transport")

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        flow: FlowControl,
        holder: ResponseHolder | None = None,
    ) -> None:
        self._transport = transport
        self._flow = flow
        self._holder = holder
        self._pending = b""  # the response head, sent with the first chunk
        self._high_water = transport.get_write_buffer_limits()[1]
        self._gone = False
        self._callbacks: list[Callable[[], object]] = []

    @property
    def closed(self) -> bool:
        return self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            return
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        try:
            self._transport.write(chunk)
        except (OSError, RuntimeError):
            # A dying connection must never stop the hub's loop over all the others.
            self._transport.abort()

    def keep_head(self, head: bytes) -> None:
        """Called by the protocol with the response head while corked."""
        self._pending += head

    def cork(self, scope: Mapping[str, Any]) -> bool:
        """Whether the response to `scope` can be held: then its head, written by uvicorn
        until `uncork`, goes out with the first chunk."""
        return self._holder is not None and self._holder.cork(scope)

    def uncork(self) -> None:
        if self._holder is not None:
            self._holder.uncork()

    def hold(self, task: asyncio.Task[None]) -> None:
        """The response's ASGI call may return: `task` serves the stream from now on."""
        if self._holder is not None:
            self._holder.hold(task)

    def end_held(self) -> None:
        """End a held response's body (the last chunk, after the head if nothing was sent)."""
        last, self._pending = self._pending + b"0\r\n\r\n", b""
        if self._holder is not None:
            self._holder.end_held(last)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def exceeds(self, limit: int) -> bool:
        # Until the buffer passes the transport's high-water mark flow control has not paused
        # writing: for any limit above that mark, a flag read replaces a call per write (8 %
        # of the hub's time at 48,000 events/s, py-spy).
        if not self._flow.write_paused and limit >= self._high_water:
            return False
        return self._transport.get_write_buffer_size() > limit

    def abort(self) -> None:
        self._transport.abort()

    async def drain(self) -> None:
        """Returns when the transport's buffer is below its low-water mark again."""
        if not self._gone:
            await self._flow.drain()

    def on_lost(self, callback: Callable[[], object]) -> None:
        if self._gone:
            callback()
        else:
            self._callbacks.append(callback)

    def remove_on_lost(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(ValueError):  # already called
            self._callbacks.remove(callback)

    async def wait_closed(self) -> None:
        if self._gone:
            return
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if not lost.done():
                lost.set_result(None)

        self.on_lost(resolve)
        try:
            await lost
        finally:
            self.remove_on_lost(resolve)

    def connection_lost(self) -> None:
        """Called by the protocol when the socket is gone."""
        self._gone = True
        self._holder = None  # the protocol refers to this connection: no cycle is left
        self._pending = b""
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class WebSocketTransportConnection(TransportConnection):
    """Writes WebSocket frames straight to the socket's transport, after uvicorn's WebSocket
    protocol completed the handshake; uvicorn still reads the client's frames and writes the
    closing one (each write is whole frames, so theirs and ours never interleave)."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            return
        try:
            self._transport.write(data)
        except (OSError, RuntimeError):
            self._transport.abort()


class AsgiConnection:
    """The same through ASGI `send()`, for servers that offer no direct path: one pump task
    sends what was written, another ends it when the client disconnects — or when the
    response is complete, as ASGI servers then answer `receive()` with `http.disconnect`.

    `abort` can only stop sending: the server closes the socket once the response returns.
    """

    def __init__(self, send: Send, receive: Receive) -> None:
        self._send = send
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()  # nothing written yet
        self._closed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._callbacks: list[Callable[[], object]] = []
        self._pump = loop.create_task(self._run())
        self._pump.add_done_callback(self._lost)
        self._watch = loop.create_task(self._watch_disconnect(receive))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self._queue.append(data)
            self._size += len(data)
            self._idle.clear()
            self._ready.set()

    def buffered(self) -> int:
        return self._size

    def exceeds(self, limit: int) -> bool:
        return self._size > limit

    def abort(self) -> None:
        self._pump.cancel()

    def on_lost(self, callback: Callable[[], object]) -> None:
        if self._pump.done():
            callback()
        else:
            self._callbacks.append(callback)

    def remove_on_lost(self, callback: Callable[[], object]) -> None:
        with contextlib.suppress(ValueError):  # already called
            self._callbacks.remove(callback)

    def _lost(self, _: object) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    async def drain(self) -> None:
        """Returns when everything written has been sent; the stream goes on."""
        await self._idle.wait()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._pump.cancel()

    async def _send_body(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def _run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._size -= len(data)
                    await self._send_body(data)
                self._idle.set()
        except OSError:
            pass
        finally:
            self._closed.set()
            self._idle.set()
            self._watch.cancel()


class AsgiWebSocketConnection(AsgiConnection):
    """`AsgiConnection` for a WebSocket: the frames the hub writes are sent as the messages
    they hold (`websocket.send`); pings are left to the server, ASGI cannot send them."""

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass
        self._pump.cancel()

    async def _send_body(self, data: bytes) -> None:
        for opcode, payload in websocket.payloads(data):
            if opcode == websocket.TEXT:
                await self._send({"type": "websocket.send", "text": payload.decode()})


def transport_connection(scope: Mapping[str, Any]) -> TransportConnection | None:
    """The direct write path of this request, if the server offers one."""
    extension = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
    return extension if isinstance(extension, TransportConnection) else None
