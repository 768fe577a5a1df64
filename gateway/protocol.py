"""uvicorn's httptools protocol, offering event streams a direct write path.

Given to uvicorn through its documented `http=` option (`gateway.server`). Each request's ASGI
scope gets the extension `jobwire.transport`: a `TransportConnection` on this socket, which
the hub writes pre-framed bytes to without a task or the middleware stack in between. Every
other request is served exactly as by uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.connection import TransportConnection

__all__ = ["TRANSPORT_EXTENSION", "StreamingHttpProtocol", "transport_connection"]

TRANSPORT_EXTENSION = "jobwire.transport"


class StreamingHttpProtocol(HttpToolsProtocol):
    _socket_connection: TransportConnection | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket_connection = TransportConnection(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope["extensions"] = {TRANSPORT_EXTENSION: self._socket_connection}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._socket_connection is not None:
            self._socket_connection.connection_lost()


def transport_connection(scope: Mapping[str, Any]) -> TransportConnection | None:
    """The direct write path of this request, if the server offers one."""
    extension = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
    return extension if isinstance(extension, TransportConnection) else None
