"""uvicorn's httptools protocol, offering event streams a direct write path and bounding what a
request's head may be.

Given to uvicorn through its documented `http=` option (`gateway.processes.server`). Each
request's ASGI scope gets the extension `jobwire.transport`: a `TransportConnection` on this
socket, which the hub writes pre-framed bytes to without a task or the middleware stack in
between. Every
other request is served exactly as by uvicorn's own protocol, except that a request line plus
headers over `MAX_HEAD_BYTES`, or more than `MAX_HEADERS` headers, is answered 431 and the
connection closed (uvicorn's httptools protocol would accept any size).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.engine.connection import TRANSPORT_EXTENSION, TransportConnection

__all__ = ["MAX_HEADERS", "MAX_HEAD_BYTES", "StreamingHttpProtocol"]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100

_TOO_LARGE_BODY = orjson.dumps(
    {
        "error": "headers_too_large",
        "detail": f"at most {MAX_HEADERS} headers and {MAX_HEAD_BYTES} bytes of request head",
    }
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%b" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class _HeadTooLarge(Exception):
    """Raised inside the parser to stop it; answered with 431."""


class StreamingHttpProtocol(HttpToolsProtocol):
    _socket_connection: TransportConnection | None = None
    _head_bytes = 0  # received while the head has not ended: all of it is head
    _parsed_head_bytes = 0  # the request line and headers the parser has seen
    _header_count = 0
    _in_head = True
    _head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket_connection = TransportConnection(transport, self.flow)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head that has not ended yet must not grow without bound.
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self._head_too_large:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        self._parsed_head_bytes = 0
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope["extensions"] = {TRANSPORT_EXTENSION: self._socket_connection}

    def on_url(self, url: bytes) -> None:
        self._parsed_head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._parsed_head_bytes += len(name) + len(value) + 4
        if self._header_count > MAX_HEADERS or self._parsed_head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._socket_connection is not None:
            self._socket_connection.connection_lost()

    def _refuse_head(self) -> None:
        self._head_too_large = True
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()
