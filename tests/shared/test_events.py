from __future__ import annotations

from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st

from shared.events import (
    ENVELOPE_VERSION,
    TERMINAL_TYPES,
    Event,
    EventType,
    InvalidEvent,
    decode_event,
    encode_event,
    make_event,
    now_ms,
)

# Text that tries hard to break a line-based wire format.
_NASTY = ["\n", "\r", "\r\n", "\n\ndata: injected\n\n", "id: 1-0\n", '"', "\\", "\x00", "\u2028"]
_text = st.lists(
    st.one_of(st.sampled_from(_NASTY), st.characters(exclude_categories=["Cs"])), max_size=30
).map("".join)
_json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_events = st.builds(
    make_event,
    event_type=st.sampled_from(EventType),
    job_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,40}", fullmatch=True),
    attempt=st.integers(1, 100),
    data=st.dictionaries(_text, _json_values, max_size=5),
    ts=st.integers(0, 2**53),
)


def test_make_event_builds_the_envelope() -> None:
    event = make_event(EventType.PROGRESS, "job-1", 2, {"current": 3}, ts=1_700_000_000_123)

    assert event == {
        "v": ENVELOPE_VERSION,
        "type": "progress",
        "job": "job-1",
        "ts": 1_700_000_000_123,
        "attempt": 2,
        "data": {"current": 3},
    }


def test_make_event_stamps_the_current_time() -> None:
    before = now_ms()
    event = make_event(EventType.HEARTBEAT, "job-1", 1, {"interval_s": 15})
    after = now_ms()

    assert before <= event["ts"] <= after


def test_terminal_types() -> None:
    assert {t for t in EventType if t.is_terminal} == {
        EventType.COMPLETED,
        EventType.FAILED,
        EventType.CANCELLED,
    }
    assert frozenset(TERMINAL_TYPES) == {t for t in EventType if t.is_terminal}


def test_encoding_is_compact_json() -> None:
    event = make_event(EventType.DATA, "j", 1, {"text": "a\nb"}, ts=5)

    assert encode_event(event) == (
        b'{"v":1,"type":"data","job":"j","ts":5,"attempt":1,"data":{"text":"a\\nb"}}'
    )


@hypothesis.given(_events)
def test_encode_decode_round_trip(event: Event) -> None:
    raw = encode_event(event)

    assert decode_event(raw) == event
    assert decode_event(raw.decode()) == event


@hypothesis.given(_events)
def test_encoding_never_contains_a_raw_line_break(event: Event) -> None:
    raw = encode_event(event)

    assert b"\n" not in raw
    assert b"\r" not in raw


def test_injection_attempt_stays_inside_one_line() -> None:
    event = make_event(EventType.DATA, "j", 1, {"token": "\n\ndata: injected\r\n\r\nid: 9-9\n"})

    raw = encode_event(event)

    assert raw.count(b"\n") == 0
    assert raw.count(b"\r") == 0
    assert decode_event(raw)["data"] == {"token": "\n\ndata: injected\r\n\r\nid: 9-9\n"}


_MISSING = object()
_COMPLETE: dict[str, object] = {
    "v": 1,
    "type": "progress",
    "job": "j",
    "ts": 1,
    "attempt": 1,
    "data": {},
}


def _envelope(**changes: object) -> bytes:
    value = _COMPLETE | changes
    return orjson.dumps({k: v for k, v in value.items() if v is not _MISSING})


def test_a_complete_envelope_decodes() -> None:
    assert decode_event(_envelope()) == _COMPLETE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"not json",
        b"\xff\xfe",
        b'{"v": 1,',
        b"null",
        b"[]",
        b'"progress"',
        b"42",
        _envelope(v=_MISSING),
        _envelope(v=2),
        _envelope(v="1"),
        _envelope(type=_MISSING),
        _envelope(type="exploded"),
        _envelope(type="PROGRESS"),
        _envelope(type=5),
        _envelope(type=["progress"]),
        _envelope(job=_MISSING),
        _envelope(job=7),
        _envelope(ts=_MISSING),
        _envelope(ts="1"),
        _envelope(ts=1.5),
        _envelope(attempt=_MISSING),
        _envelope(attempt=None),
        _envelope(data=_MISSING),
        _envelope(data=[1, 2]),
        _envelope(data="text"),
    ],
)
def test_junk_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


def test_invalid_event_is_a_value_error() -> None:
    assert issubclass(InvalidEvent, ValueError)
