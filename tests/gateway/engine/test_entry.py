"""An event as the hub holds it: framed once, with its stream id as the SSE `id:`."""

from __future__ import annotations

import orjson
import pytest

from gateway.engine.entry import BadEntry, Entry
from shared import sse
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
    framed = entry.framed_as(b"a:5-0,b:7-1")
    [event] = parser.feed(framed)

    assert framed == sse.frame(entry.payload, event="data", id="a:5-0,b:7-1")
    assert event.id == "a:5-0,b:7-1"
    assert event.event == "data"
    assert event.data.encode() == entry.payload


@pytest.mark.parametrize("event_type", list(EventType))
def test_only_completed_failed_and_cancelled_are_terminal(event_type: EventType) -> None:
    entry = Entry.of("1-0", _payload(event_type.value))

    terminal = event_type in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)
    assert entry.terminal is terminal


NOT_EVENTS = {
    "an-id-that-is-not-one": (b"secret", _payload("progress"), "not a stream id"),
    "an-id-past-64-bits": (b"18446744073709551616-0", _payload("progress"), "not a stream id"),
    "not-json": (b"1-0", b"{secret", "not JSON"),
    "not-an-object": (b"1-0", b'["secret"]', "not a JSON object"),
    "no-type": (b"1-0", b'{"ts": 1, "secret": 1}', "no known event type"),
    "an-unknown-type": (b"1-0", b'{"type": "secret", "ts": 1}', "no known event type"),
    "a-type-that-is-not-text": (b"1-0", b'{"type": ["progress"], "ts": 1}', "no known event type"),
    "no-ts": (b"1-0", b'{"type": "progress", "secret": 1}', "no timestamp"),
    "a-ts-that-is-text": (b"1-0", b'{"type": "progress", "ts": "secret"}', "no timestamp"),
    "a-ts-that-is-true": (b"1-0", b'{"type": "progress", "ts": true}', "no timestamp"),
}


@pytest.mark.parametrize("case", list(NOT_EVENTS))
def test_what_is_not_an_event_is_refused_without_being_quoted(case: str) -> None:
    raw_id, payload, reason = NOT_EVENTS[case]
    with pytest.raises(BadEntry) as refused:
        Entry.of(raw_id, payload)

    assert str(refused.value) == reason  # never the entry's own bytes


def test_a_stored_item_without_its_event_is_refused() -> None:
    with pytest.raises(BadEntry, match="no event field"):
        Entry.stored(b"1-0", {b"x": _payload("progress")})

    assert Entry.stored(b"1-0", {b"e": _payload("progress")}) == Entry.of(
        b"1-0", _payload("progress")
    )
