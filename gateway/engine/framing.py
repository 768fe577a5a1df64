"""How a subscriber's transport frames what the hub sends it (`Framing`): Server-Sent Events or
WebSocket messages. The hub picks the bytes by the subscriber's framing; each is built once
per event and shared by the job's subscribers of that framing.
"""

from __future__ import annotations

from gateway.engine import websocket
from gateway.engine.entry import Entry
from shared import sse

__all__ = ["SSE", "WEBSOCKET", "Framing"]


class Framing:
    """Server-Sent Events (this class) or WebSocket (`_WebSocketFraming`)."""

    name = "sse"
    ping = sse.comment("ping")

    def event(self, entry: Entry) -> bytes:
        """A single-job stream's frame: the event with its own stream id."""
        return entry.frame

    def event_as(self, entry: Entry, event_id: bytes) -> bytes:
        """A multi-job stream's frame: the event with the subscriber's cursor as its id."""
        return entry.framed_as(event_id)

    def notice(self, event_type: str, data: bytes) -> bytes:
        """What the gateway tells one stream (`reset`, `stalled`): no id, so no position."""
        return sse.frame(data, event=event_type)


class _WebSocketFraming(Framing):
    name = "websocket"
    ping = websocket.PING

    def event(self, entry: Entry) -> bytes:
        return entry.ws_frame

    def event_as(self, entry: Entry, event_id: bytes) -> bytes:
        return entry.ws_framed_as(event_id.decode())

    def notice(self, event_type: str, data: bytes) -> bytes:
        return websocket.notice_frame(event_type, data)


SSE = Framing()
WEBSOCKET = _WebSocketFraming()
