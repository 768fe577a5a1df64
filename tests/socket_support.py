"""Helpers for tests of the WebSocket streams, with the `websockets` client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import scaled

__all__ = ["Refusal", "SocketRead", "read_socket", "refusal", "ws_url"]


def ws_url(base_url: str, path: str) -> str:
    """`path` on the gateway at `base_url` (http://...), as a ws:// URL."""
    return "ws" + base_url.removeprefix("http") + path


@dataclass
class SocketRead:
    """What one WebSocket connection delivered, and how it was closed."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def ids(self) -> list[str]:
        return [message["id"] for message in self.messages if "id" in message]

    @property
    def types(self) -> list[str]:
        return [message["type"] for message in self.messages]


async def read_socket(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    timeout: float = 20.0,
) -> SocketRead:
    """Every message until the server closes (or the first `limit`, then closes itself)."""
    read = SocketRead()
    async with asyncio.timeout(scaled(timeout)), connect(url, additional_headers=headers) as ws:
        await _read_into(ws, read, limit)
    return read


async def _read_into(ws: ClientConnection, read: SocketRead, limit: int | None) -> None:
    try:
        async for message in ws:
            read.messages.append(orjson.loads(message))
            if limit is not None and len(read.messages) >= limit:
                return
    except ConnectionClosed:
        pass
    finally:
        read.close_code = ws.close_code


@dataclass
class Refusal:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


async def refusal(url: str, *, headers: dict[str, str] | None = None) -> Refusal:
    """The HTTP answer to a WebSocket handshake the gateway refuses."""
    try:
        async with connect(url, additional_headers=headers):
            pass
    except InvalidStatus as exc:
        response = exc.response
        return Refusal(
            response.status_code, orjson.loads(response.body or b"null"), dict(response.headers)
        )
    raise AssertionError("the handshake was accepted")
