"""The SSE encoder against a WHATWG-following parser, fed the bytes in arbitrary chunks: the
client's (`jobwire.client.sse`), which shares no code with the encoder."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st

from jobwire.client.sse import ServerSentEvent, SSEParser
from shared.events import Event, EventType, encode_event, make_event
from shared.sse import InvalidField, comment, frame, retry


@dataclass(frozen=True)
class Frame:
    data: str
    event: str | None
    id: str | None


@dataclass(frozen=True)
class Retry:
    ms: int


@dataclass(frozen=True)
class Comment:
    text: str


Item = Frame | Retry | Comment

# Pieces that break naive framing: every line break, an attempted injection, quotes,
# characters other line splitters (str.splitlines) treat as breaks, multi-byte UTF-8.
_NASTY = [
    "\n",
    "\r",
    "\r\n",
    "\n\r",
    "\n\ndata: injected\n\n",
    "\r\n\r\nevent: evil\r\n",
    "id: 1-0\n",
    "retry: 1\n\n",
    ": ",
    "data:",
    '"',
    "'",
    " ",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    "\ufeff",
    "é",
    "中",
    "😀",
]
_any_char = st.characters(exclude_categories=["Cs"])
_data = st.lists(st.one_of(st.sampled_from(_NASTY), _any_char), max_size=40).map("".join)
# `event:`, `id:` and comments are single lines: anything but CR, LF and NUL.
_field_text = st.text(
    st.one_of(st.sampled_from([" ", ":", '"', "é", "😀"]), _any_char).filter(
        lambda c: c not in "\r\n\x00"
    ),
    max_size=20,
)
_frames = st.builds(Frame, data=_data, event=st.none() | _field_text, id=st.none() | _field_text)
_items: st.SearchStrategy[list[Item]] = st.lists(
    st.one_of(
        _frames,
        st.builds(Retry, ms=st.integers(0, 10**9)),
        st.builds(Comment, text=_field_text),
    ),
    max_size=12,
)


def _encode(items: Iterable[Item]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, Frame):
            parts.append(frame(item.data.encode(), event=item.event, id=item.id))
        elif isinstance(item, Retry):
            parts.append(retry(item.ms))
        else:
            parts.append(comment(item.text))
    return b"".join(parts)


def _expected_events(items: Iterable[Item]) -> list[ServerSentEvent]:
    """What a browser dispatches: CRLF and lone CR in data come back as LF (the spec splits
    lines on all three and rejoins data lines with LF); an empty event name is "message"."""
    return [
        ServerSentEvent(
            event=item.event or "message", data=re.sub("\r\n|\r", "\n", item.data), id=item.id
        )
        for item in items
        if isinstance(item, Frame)
    ]


class _Parsed:
    """What the parser made of a stream: the events, the comments, the last `retry:`."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.comments: list[str] = []
        parser = SSEParser(on_comment=self.comments.append)
        self.events = [event for chunk in chunks for event in parser.feed(chunk)]
        self.retry_ms = parser.retry_ms


def _split(raw: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(raw)]
    return [raw[start:end] for start, end in itertools.pairwise(bounds)]


@hypothesis.settings(max_examples=500, deadline=None)
@hypothesis.given(items=_items, data=st.data())
def test_round_trip_through_a_spec_parser_in_any_chunks(
    items: list[Item], data: st.DataObject
) -> None:
    raw = _encode(items)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=len(raw) + 1), label="cuts")

    parsed = _Parsed(_split(raw, cuts))

    assert parsed.events == _expected_events(items)
    assert len(parsed.events) == sum(isinstance(item, Frame) for item in items)
    assert parsed.comments == [item.text for item in items if isinstance(item, Comment)]
    retries = [item.ms for item in items if isinstance(item, Retry)]
    assert parsed.retry_ms == (retries[-1] if retries else None)


@hypothesis.given(items=_items)
def test_every_encoded_line_is_one_known_field(items: list[Item]) -> None:
    raw = _encode(items)

    assert b"\r" not in raw
    assert raw == b"" or raw.endswith(b"\n\n")
    for line in raw.split(b"\n"):
        assert line == b"" or line.startswith((b"data: ", b"id: ", b"event: ", b"retry: ", b": "))


_TRICKY_STREAM: list[Item] = [
    Retry(1500),
    Frame(data="é😀\r\nline two\rline three\n中", event="progress", id="1-0"),
    Comment("ping"),
    Frame(data='{"q": "\\"quoted\\""}\n\ndata: injected', event=None, id=None),
    Frame(data="", event="", id=""),
    Frame(data="\r\n", event="ü", id="2-0"),
]


def test_one_byte_at_a_time() -> None:
    raw = _encode(_TRICKY_STREAM)

    parsed = _Parsed(raw[i : i + 1] for i in range(len(raw)))

    assert parsed.events == _expected_events(_TRICKY_STREAM)
    assert len(parsed.events) == 4


def test_every_single_split_point() -> None:
    raw = _encode(_TRICKY_STREAM)
    expected = _expected_events(_TRICKY_STREAM)

    for cut in range(len(raw) + 1):
        assert _Parsed([raw[:cut], raw[cut:]]).events == expected, cut


def test_tricky_stream_parses_to_exact_events() -> None:
    parsed = _Parsed([_encode(_TRICKY_STREAM)])

    assert parsed.events == [
        ServerSentEvent("progress", "é😀\nline two\nline three\n中", "1-0"),
        ServerSentEvent("message", '{"q": "\\"quoted\\""}\n\ndata: injected', None),
        ServerSentEvent("message", "", ""),
        ServerSentEvent("ü", "\n", "2-0"),
    ]
    assert parsed.comments == ["ping"]
    assert parsed.retry_ms == 1500


def test_frame_bytes() -> None:
    assert frame(b'{"a":1}', event="progress", id="1-0") == (
        b'id: 1-0\nevent: progress\ndata: {"a":1}\n\n'
    )
    assert frame(b"x") == b"data: x\n\n"
    assert frame(b"") == b"data: \n\n"
    assert frame(b"a\r\nb\rc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_comment_and_retry_bytes() -> None:
    assert comment("ping") == b": ping\n\n"
    assert comment() == b": \n\n"
    assert retry(2000) == b"retry: 2000\n\n"
    assert retry(0) == b"retry: 0\n\n"


def test_negative_retry_is_refused() -> None:
    with pytest.raises(InvalidField):
        retry(-1)


_BAD_FIELDS = ["a\nb", "a\rb", "a\r\nb", "\n", "\r", "a\x00b", "\x00", "1-0\n\ndata: x"]


@pytest.mark.parametrize("value", _BAD_FIELDS)
def test_event_name_with_line_break_or_nul_is_refused(value: str) -> None:
    with pytest.raises(InvalidField, match="event"):
        frame(b"x", event=value)


@pytest.mark.parametrize("value", _BAD_FIELDS)
def test_id_with_line_break_or_nul_is_refused(value: str) -> None:
    with pytest.raises(InvalidField, match="id"):
        frame(b"x", id=value)


@pytest.mark.parametrize("value", _BAD_FIELDS)
def test_comment_with_line_break_or_nul_is_refused(value: str) -> None:
    with pytest.raises(InvalidField):
        comment(value)


def test_invalid_field_is_a_value_error() -> None:
    assert issubclass(InvalidField, ValueError)


_payload_text = st.lists(st.one_of(st.sampled_from(_NASTY), _any_char), max_size=20).map("".join)
_envelopes = st.builds(
    make_event,
    event_type=st.sampled_from(EventType),
    job_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
    attempt=st.integers(1, 5),
    data=st.dictionaries(_payload_text, _payload_text | st.lists(_payload_text), max_size=4),
)


@hypothesis.given(event=_envelopes, ms=st.integers(0, 2**48), seq=st.integers(0, 2**20))
def test_jobwire_envelope_is_one_data_line(event: Event, ms: int, seq: int) -> None:
    raw = frame(encode_event(event), event=event["type"], id=f"{ms}-{seq}")

    data_lines = [line for line in raw.split(b"\n") if line.startswith(b"data:")]
    assert data_lines == [b"data: " + encode_event(event)]
    dispatched = _Parsed([raw]).events
    assert len(dispatched) == 1
    assert dispatched[0].event == event["type"]
    assert dispatched[0].id == f"{ms}-{seq}"
    assert orjson.loads(dispatched[0].data) == event
