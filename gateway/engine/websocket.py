"""WebSocket framing of events, as bytes ready for the socket (RFC 6455).

A server's frames are never masked, so one frame's bytes can go to every subscriber of a job
as they are: the hub builds each once. Every message is one final text frame holding one
JSON object: `{"id": <stream id or cursor>, "type": <event type>, "data": <the envelope>}` for
a stored event (the envelope is the SSE `data:` line, as stored), `{"type": ..., "data": ...}`
without an `id` for what the gateway tells one stream (`reset`, `stalled`), and
`{"type": "end"}` after the last terminal event. The pieces are joined as bytes, not encoded
again: the id is digits, `-`, `:`, `,` and job ids; the type is a known event type.

Permessage-deflate is not offered (`gateway.processes.server`): a compressed frame would be
one connection's, not shared.
"""

from __future__ import annotations

import struct

__all__ = ["END", "PING", "TEXT", "event_frame", "notice_frame", "payloads", "text_frame"]

TEXT = 0x1
_FIN_TEXT = 0x80 | TEXT
_FIN_PING = 0x89


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + payload


def event_frame(event_id: str, event_type: str, envelope: bytes) -> bytes:
    return text_frame(
        b'{"id":"%b","type":"%b","data":%b}' % (event_id.encode(), event_type.encode(), envelope)
    )


def notice_frame(event_type: str, data: bytes) -> bytes:
    """A message about this stream only (`reset`, `stalled`): no `id`, so no position."""
    return text_frame(b'{"type":"%b","data":%b}' % (event_type.encode(), data))


END = b'{"type":"end"}'
# An empty ping: the browser (or any client library) answers with a pong, and a proxy sees
# traffic. It is only sent to streams nothing else was written to since the last round.
PING = bytes((_FIN_PING, 0))


def payloads(frames: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each frame in `frames`, as built here (unmasked, whole): what
    a connection that can only send messages, not bytes, sends instead."""
    messages: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(frames):
        opcode, size = frames[offset] & 0x0F, frames[offset + 1] & 0x7F
        offset += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", frames, offset)
            offset += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", frames, offset)
            offset += 8
        messages.append((opcode, frames[offset : offset + size]))
        offset += size
    return messages
