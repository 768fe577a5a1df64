"""uvicorn's WebSocket protocol (the websockets sans-I/O one), offering event streams the same
direct write path as HTTP (`gateway.processes.protocol`).

Given to uvicorn through its documented `ws=` option (`gateway.processes.server`). Once a
handshake is accepted, the connection's ASGI scope gets the extension `jobwire.transport`: a
`WebSocketTransportConnection` on this socket, to which the hub writes whole, pre-built frames
without a task or an ASGI message in between. uvicorn keeps reading the client's frames
(pongs, its close) and writes the handshake and the closing frame; every write of either side
is whole frames, on the one event loop, so they never interleave.

A refused handshake (the app's HTTP answer, sent before any upgrade) counts as a completed
one, so uvicorn does not log it as an app that forgot to answer.

A Jobwire stream takes no messages from its client: they are dropped here, not queued for an
app that never reads them (uvicorn would also stop reading the socket until the app did, and
miss the client's close).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request

from gateway.engine.connection import TRANSPORT_EXTENSION, WebSocketTransportConnection

__all__ = ["StreamingWebSocketProtocol"]


class StreamingWebSocketProtocol(WebSocketsSansIOProtocol):
    _socket_connection: WebSocketTransportConnection | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.flow: FlowControl | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.flow = FlowControl(self.transport)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101 or self.flow is None:
            return
        self._socket_connection = WebSocketTransportConnection(self.transport, self.flow)
        # The app's task was created, not yet run: it sees the extension.
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[TRANSPORT_EXTENSION] = self._socket_connection

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.flow is not None:
            self.flow.resume_writing()

    def send_receive_event_to_app(self) -> None:
        self.frames = []

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # A refusal was answered: uvicorn would log the handshake as never completed.
            self.handshake_complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.flow is not None:
            self.flow.resume_writing()  # nothing drains a lost connection: release its waiters
        if self._socket_connection is not None:
            self._socket_connection.connection_lost()
