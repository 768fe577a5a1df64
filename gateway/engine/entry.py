"""One stored event as the hub holds it (`Entry`): parsed and framed once, however many
subscribers get it.

The stored frame carries the event's own stream id as its `id:`, which is what a single-job
stream sends. A multi-job stream's `id:` is the subscriber's cursor instead, so those frames
are built per subscriber (`Entry.framed_as`).
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from shared import sse
from shared.events import TERMINAL_TYPES
from shared.streamid import StreamId

__all__ = ["Entry"]


class Entry(NamedTuple):
    """One stored event: its id, type and time, its envelope, and its single-job frame."""

    id: StreamId
    type: str
    ts: int
    payload: bytes
    frame: bytes

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def size(self) -> int:
        """Bytes the entry holds, as counted against the ring's byte bound."""
        return len(self.payload) + len(self.frame)

    @classmethod
    def of(cls, raw_id: bytes | str, payload: bytes) -> Entry:
        """The entry of a stream id and the event's JSON, as Redis hands them over."""
        text_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        event = orjson.loads(payload)
        event_type = event["type"]
        frame = sse.frame(payload, event=event_type, id=text_id)
        return cls(StreamId.parse(text_id), event_type, event["ts"], payload, frame)

    def framed_as(self, event_id: str) -> bytes:
        """The same event framed with another `id:` (a multi-job stream's cursor)."""
        return sse.frame(self.payload, event=self.type, id=event_id)
