"""The client's event-stream parser follows the WHATWG rules, whatever the chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobwire.client.sse import EventStreamTooLarge, ServerSentEvent, SSEParser
from shared import sse

STREAM = (
    sse.retry(2000)
    + sse.frame(b'{"a":1}', event="queued", id="1-0")
    + sse.comment("ping")
    + sse.frame(b'{"reason":"x"}', event="reset")
    + sse.frame(b"line one\nline two", event="data", id="2-5")
)
EXPECTED = [
    ServerSentEvent("queued", '{"a":1}', "1-0"),
    ServerSentEvent("reset", '{"reason":"x"}', None),
    ServerSentEvent("data", "line one\nline two", "2-5"),
]


def test_frames_written_by_the_gateway_parse_back() -> None:
    parser = SSEParser()

    assert parser.feed(STREAM) == EXPECTED
    assert parser.retry_ms == 2000


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    parser = SSEParser()
    bounds = [0, *sorted(cuts), len(STREAM)]
    events = []
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(STREAM[start:end])

    assert events == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_is_a_line_ending(newline: bytes) -> None:
    raw = b"id: 3-1\nevent: progress\ndata: x\n\n".replace(b"\n", newline)

    # A last CR waits for the next byte, which may make it a CRLF: the comment settles it.
    assert SSEParser().feed(raw + b": ping") == [ServerSentEvent("progress", "x", "3-1")]


def test_a_crlf_split_across_chunks_ends_one_line_only() -> None:
    parser = SSEParser()

    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r\n") == [ServerSentEvent("message", "a", None)]


def test_the_spec_details() -> None:
    parser = SSEParser()
    raw = (
        b"\xef\xbb\xbfdata: first\n\n"  # a byte-order mark at the start is dropped
        b"id: 9-9\n\n"  # an id without data dispatches nothing
        b"data\n\n"  # a field with no colon has an empty value
        b"data:no space\nid: bad\x00\nretry: soon\n\n"  # NUL in id, non-digit retry: ignored
        b"event: partial\ndata: never finished"  # no blank line: not dispatched
    )

    assert parser.feed(raw) == [
        ServerSentEvent("message", "first", None),
        ServerSentEvent("message", "", None),
        ServerSentEvent("message", "no space", None),
    ]
    assert parser.retry_ms is None


def test_comments_dispatch_nothing_but_are_told_to_whoever_asks() -> None:
    comments: list[str] = []
    parser = SSEParser(on_comment=comments.append)

    assert parser.feed(STREAM + b":no space\n: two  spaces\n:\n\n") == EXPECTED
    assert comments == ["ping", "no space", "two  spaces", ""]


def test_an_endless_line_is_refused() -> None:
    parser = SSEParser(max_event_bytes=1000)
    parser.feed(b"data: " + b"x" * 900)

    with pytest.raises(EventStreamTooLarge):
        parser.feed(b"x" * 200)
