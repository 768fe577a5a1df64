"""Redis stream ids, `<ms>-<seq>`, parsed into integers so they compare correctly.

As strings `"9-0" > "10-0"`; as `StreamId`s they order like Redis orders them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["InvalidStreamId", "StreamId"]

_MAX_U64 = 2**64 - 1
# Twenty digits hold any u64; anything longer is refused before int() sees it.
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


class InvalidStreamId(ValueError):
    """Text that is not a complete `<ms>-<seq>` stream id."""


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> StreamId:
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidStreamId("stream ids are ASCII") from None
        match = _STREAM_ID.fullmatch(text)
        if match is None:
            raise InvalidStreamId(f"expected '<ms>-<seq>', got {text[:64]!r}")
        ms, seq = int(match[1]), int(match[2])
        if ms > _MAX_U64 or seq > _MAX_U64:
            raise InvalidStreamId("stream id parts must fit in 64 bits")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"
