"""One stored event as the hub holds it (`Entry`): parsed and framed once, however many
subscribers get it.

The stored frame carries the event's own stream id as its `id:`, which is what a single-job
stream sends. A multi-job stream's `id:` is the subscriber's cursor instead, so those frames
are built per subscriber (`Entry.framed_as`: the stored frame's `id:` line swapped, one bytes
concatenation). The WebSocket frame of a single-job stream
(`Entry.ws_frame`) is built the first time a WebSocket subscriber needs it, then kept: a job
watched only over SSE never pays for it.

Whoever can reach Redis can publish anything on a job's live channel, so what is not an event
the hub can deliver is refused here (`BadEntry`), and counted and logged by `BadEntryLog`
rather than allowed to stop the reader.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson

from gateway.engine import websocket
from shared import sse
from shared.events import TERMINAL_TYPES, EventType
from shared.streamid import InvalidStreamId, StreamId

__all__ = ["BadEntry", "BadEntryLog", "Entry"]

logger = logging.getLogger("jobwire.hub")

_EVENT_TYPES = frozenset(event_type.value for event_type in EventType)
# Whoever publishes bad entries could flood the log: one line per this many seconds at most.
_LOG_EVERY_S = 60.0


class BadEntry(ValueError):
    """An announced or stored entry that is not a deliverable event. Its message never quotes
    the entry: those bytes are not ours to put in a log."""


@dataclass(slots=True)
class Entry:
    """One stored event: its id, type and time, its envelope, and its single-job frames."""

    id: StreamId
    type: str
    ts: int
    payload: bytes
    frame: bytes
    _ws_frame: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def size(self) -> int:
        """Bytes the entry holds, as counted against the ring's byte bound."""
        return len(self.payload) + len(self.frame)

    @classmethod
    def of(cls, raw_id: bytes | str, payload: bytes) -> Entry:
        """The entry of a stream id and the event's JSON, as Redis hands them over; raises
        BadEntry for anything else."""
        stream_id = _stream_id(raw_id)
        event_type, ts = _type_and_ts(payload)
        text_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        frame = sse.frame(payload, event=event_type, id=text_id)
        return cls(stream_id, event_type, ts, payload, frame)

    @classmethod
    def stored(cls, raw_id: bytes, fields: dict[bytes, bytes]) -> Entry:
        """The entry of an XRANGE reply's item; raises BadEntry if it is not an event."""
        payload = fields.get(b"e")
        if payload is None:
            raise BadEntry("no event field")
        return cls.of(raw_id, payload)

    def framed_as(self, event_id: bytes) -> bytes:
        """The same event framed with another `id:` (a multi-job stream's cursor, made of job
        ids and stream ids: no line break): the stored frame with its first line replaced."""
        frame = self.frame
        return b"id: " + event_id + frame[frame.index(b"\n") :]

    @property
    def ws_frame(self) -> bytes:
        """The event as a WebSocket text frame with its own stream id, built once."""
        frame = self._ws_frame
        if frame is None:
            frame = self._ws_frame = self.ws_framed_as(str(self.id))
        return frame

    def ws_framed_as(self, event_id: str) -> bytes:
        """The event as a WebSocket text frame with another `id` (a multi-job cursor)."""
        return websocket.event_frame(event_id, self.type, self.payload)


def _stream_id(raw_id: bytes | str) -> StreamId:
    try:
        return StreamId.parse(raw_id)
    except InvalidStreamId:
        raise BadEntry("not a stream id") from None


def _type_and_ts(payload: bytes) -> tuple[str, int]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise BadEntry("not JSON") from None
    if not isinstance(event, dict):
        raise BadEntry("not a JSON object")
    event_type, ts = event.get("type"), event.get("ts")
    # Only a known type: it becomes the frame's `event:` line and decides the job's status.
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        raise BadEntry("no known event type")
    if type(ts) is not int:
        raise BadEntry("no timestamp")
    return event_type, ts


class BadEntryLog:
    """Counts the entries skipped as bad, and logs them at most once a minute."""

    def __init__(self) -> None:
        self.count = 0
        self._quiet_until = 0.0

    def skipped(self, job_id: str, error: BadEntry) -> None:
        self.count += 1
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + _LOG_EVERY_S
            logger.warning(
                "skipped a bad entry of job %s (%s); %d skipped since start",
                job_id,
                error,
                self.count,
            )
