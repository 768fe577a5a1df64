"""One attempt of a stream over a WebSocket (`/jobs/{id}/ws`, `/events/ws`), for the resume
loop of `jobwire.client.stream`.

Each message `{"id", "type", "data"}` is handed on as the `ServerSentEvent` the same event
would have been (`data` is the SSE data line's envelope), so positions and events are read the
one way; `{"type": "end"}` is the end, as 204 or the terminal event is on SSE. The position is
sent as `?last_event_id=` and the credential in `Authorization` (never in the URL). A refusal
is the gateway's HTTP answer before the upgrade, judged like an SSE answer. The client pings
the gateway itself (the library's keepalive): a gateway's pings are not visible to it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from jobwire.client.events import InvalidEvent
from jobwire.client.sse import ServerSentEvent

__all__ = ["END", "SocketRefused", "socket_messages", "socket_url"]

END = ServerSentEvent(event="end")
# The gateway's messages are events (bounded by JOBWIRE_MAX_EVENT_BYTES) and snapshots.
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class SocketRefused(Exception):
    """The gateway answered the handshake in HTTP: `response` says how."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def socket_url(base_url: httpx.URL, path: str, params: Sequence[tuple[str, str]]) -> str:
    """The ws:// (or wss://) URL of `path` on the gateway at `base_url`."""
    scheme = "wss" if base_url.scheme == "https" else "ws"
    url = base_url.copy_with(scheme=scheme).join(path.lstrip("/"))
    return str(url.copy_merge_params(httpx.QueryParams(list(params))))


async def socket_messages(
    url: str, headers: dict[str, str], *, open_timeout_s: float, keepalive_s: float
) -> AsyncGenerator[ServerSentEvent | None, None]:
    """None once the socket is open, then the stream's messages as events, then `END` if the
    gateway ended it; raises `SocketRefused`, `InvalidEvent`, TimeoutError, or OSError for a
    lost connection."""
    try:
        async with connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout_s,
            ping_interval=keepalive_s,
            ping_timeout=keepalive_s,
            max_size=_MAX_MESSAGE_BYTES,
            compression=None,
            user_agent_header="jobwire-client",
        ) as ws:
            yield None
            async for raw in ws:
                message = _event(raw)
                yield message
                if message is END:
                    return
    except InvalidStatus as exc:
        answer = exc.response
        raise SocketRefused(
            httpx.Response(
                answer.status_code,
                headers=list(answer.headers.raw_items()),
                content=bytes(answer.body),
            )
        ) from None
    except (InvalidHandshake, ConnectionClosed) as exc:
        raise ConnectionError(f"WebSocket: {exc}") from None


def _event(raw: str | bytes) -> ServerSentEvent:
    try:
        message: Any = orjson.loads(raw)
        event_type, event_id = message["type"], message.get("id")
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise InvalidEvent("a WebSocket message that is not a Jobwire message") from None
    if event_type == "end":
        return END
    data = orjson.dumps(message.get("data")).decode()
    return ServerSentEvent(event=event_type, data=data, id=event_id)
