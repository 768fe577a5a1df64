"""Server-Sent Events framing, as bytes ready for the socket.

The `data` of a Jobwire event is one line of orjson, so a frame has one `data:` line. Should a
caller pass text with line breaks, it is split into several `data:` lines exactly as the
WHATWG spec reassembles them, so a payload can never end a frame early or inject another.
`event:` and `id:` are single-line fields: a line break or NUL there is refused.
"""

from __future__ import annotations

import re

__all__ = ["InvalidField", "comment", "frame", "retry"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


class InvalidField(ValueError):
    """An `event:` or `id:` value that would break the frame."""


def frame(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    parts: list[bytes] = []
    if id is not None:
        parts.append(b"id: " + _field("id", id) + b"\n")
    if event is not None:
        parts.append(b"event: " + _field("event", event) + b"\n")
    for line in _LINE_BREAK.split(data):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def comment(text: str = "") -> bytes:
    """A comment line: ignored by clients, keeps idle connections alive through proxies."""
    return b": " + _field("comment", text) + b"\n\n"


def retry(milliseconds: int) -> bytes:
    """Tells the client how long to wait before reconnecting."""
    if milliseconds < 0:
        raise InvalidField("retry must be >= 0")
    return b"retry: %d\n\n" % milliseconds


def _field(name: str, value: str) -> bytes:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise InvalidField(f"{name} must not contain CR, LF or NUL")
    return value.encode("utf-8")
