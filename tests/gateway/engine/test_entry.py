"""An event as the hub holds it: framed once, with its stream id as the SSE `id:`."""

from __future__ import annotations

import orjson
import pytest

from gateway.engine.entry import Entry
from shared.events import EventType
from shared.streamid import StreamId
from tests.support import SSEParser


def _payload(event_type: str) -> bytes:
    event = {"v": 1, "type": event_type, "job": "j", "ts": 1234, "attempt": 1, "data": {}}
    return orjson.dumps(event)


def test_an_entry_is_framed_with_its_stream_id_and_type() -> None:
    payload = _payload("progress")
    entry = Entry.of(b"1700000000000-12", payload)

    assert entry.id == StreamId(1700000000000, 12)
    assert (entry.type, entry.ts, entry.payload) == ("progress", 1234, payload)
    assert entry.frame == b"id: 1700000000000-12\nevent: progress\ndata: " + payload + b"\n\n"
    assert entry.size == len(payload) + len(entry.frame)


def test_framed_as_changes_only_the_id() -> None:
    entry = Entry.of("5-0", _payload("data"))
    parser = SSEParser()
    [event] = parser.feed(entry.framed_as("a:5-0,b:7-1"))

    assert event.id == "a:5-0,b:7-1"
    assert event.event == "data"
    assert event.data.encode() == entry.payload


@pytest.mark.parametrize("event_type", list(EventType))
def test_only_completed_failed_and_cancelled_are_terminal(event_type: EventType) -> None:
    entry = Entry.of("1-0", _payload(event_type.value))

    terminal = event_type in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)
    assert entry.terminal is terminal
