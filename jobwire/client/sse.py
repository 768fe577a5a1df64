"""An incremental Server-Sent Events parser that follows the WHATWG event-stream rules.

Feed it bytes in chunks of any size; it returns the events each chunk completes. Unlike a
browser's `lastEventId`, an event's `id` here is the `id:` field of that event's own block, or
None: events a server invents for one connection (`reset`) carry no id and must not be taken
for a position. Comments (the gateway's pings) dispatch nothing; `on_comment` is told of each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EventStreamTooLarge", "SSEParser", "ServerSentEvent"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


class EventStreamTooLarge(ValueError):
    """A line or an event grew past the parser's bound without ending."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    def __init__(
        self,
        max_event_bytes: int = 16 * 1024 * 1024,
        *,
        on_comment: Callable[[str], None] | None = None,
    ) -> None:
        self.retry_ms: int | None = None
        self._max = max_event_bytes
        self._on_comment = on_comment
        self._buffer = b""
        self._started = False
        self._event_type = ""
        self._data: list[str] = []
        self._data_size = 0
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        buffer = self._buffer + chunk
        events: list[ServerSentEvent] = []
        start = 0
        for end_of_line in _LINE_END.finditer(buffer):
            if end_of_line.end() == len(buffer) and end_of_line[0] == b"\r":
                break  # a CR at the end may be the first half of a CRLF still in flight
            event = self._line(self._decode(buffer[start : end_of_line.start()]))
            if event is not None:
                events.append(event)
            start = end_of_line.end()
        self._buffer = buffer[start:]
        if len(self._buffer) + self._data_size > self._max:
            raise EventStreamTooLarge(f"an event grew past {self._max} bytes")
        return events

    def _decode(self, raw: bytes) -> str:
        text = raw.decode("utf-8", errors="replace")
        if not self._started:
            self._started = True
            text = text.removeprefix(_BOM)
        return text

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            if self._on_comment is not None:
                self._on_comment(line[1:].removeprefix(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event = None
        if self._data:
            event = ServerSentEvent(
                event=self._event_type or "message", data="\n".join(self._data), id=self._id
            )
        self._event_type, self._data, self._data_size, self._id = "", [], 0, None
        return event
