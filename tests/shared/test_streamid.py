from __future__ import annotations

import hypothesis
import pytest
from hypothesis import strategies as st

from shared.streamid import InvalidStreamId, StreamId

_MAX_U64 = 2**64 - 1
_parts = st.integers(0, _MAX_U64)
_ids = st.tuples(_parts, _parts)


def test_parse_text_and_bytes() -> None:
    assert StreamId.parse("1700000000000-3") == StreamId(1_700_000_000_000, 3)
    assert StreamId.parse(b"1700000000000-3") == StreamId(1_700_000_000_000, 3)
    assert StreamId.parse("0-0") == StreamId(0, 0)


def test_largest_id_is_accepted() -> None:
    text = f"{_MAX_U64}-{_MAX_U64}"

    assert StreamId.parse(text) == StreamId(_MAX_U64, _MAX_U64)
    assert str(StreamId.parse(text)) == text


def test_leading_zeros_parse_to_the_same_id() -> None:
    assert StreamId.parse("007-01") == StreamId(7, 1)
    assert str(StreamId.parse("007-01")) == "7-1"


def test_ids_compare_as_integers_not_as_strings() -> None:
    assert "9-0" > "10-0"
    assert StreamId.parse("9-0") < StreamId.parse("10-0")
    assert StreamId.parse("5-9") < StreamId.parse("5-10")
    assert StreamId.parse("5-10") < StreamId.parse("6-0")
    assert StreamId.parse("5-1") == StreamId.parse(b"5-1")
    assert sorted(StreamId.parse(t) for t in ["10-0", "9-0", "9-10", "9-2"]) == [
        StreamId(9, 0),
        StreamId(9, 2),
        StreamId(9, 10),
        StreamId(10, 0),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1-",
        "-1",
        "1-2-3",
        "1--2",
        " 1-2",
        "1-2 ",
        "1-2\n",
        "a-b",
        "1.5-2",
        "+1-2",
        "1-+2",
        "0x1-2",
        "*",
        "$",
        ">",
        "1-*",
        "\uff11-\uff12",  # fullwidth digits
        "\u0661-\u0662",  # Arabic-Indic digits
        f"{2**64}-0",
        f"0-{2**64}",
        "1" * 21 + "-0",
        "9" * 10_000 + "-0",
        b"",
        b"\xff-1",
        b"1-\xc3\xa9",
        b"1-2\x00",
    ],
)
def test_malformed_ids_are_refused(text: str | bytes) -> None:
    with pytest.raises(InvalidStreamId):
        StreamId.parse(text)


def test_invalid_stream_id_is_a_value_error() -> None:
    assert issubclass(InvalidStreamId, ValueError)


@hypothesis.given(_ids)
def test_str_round_trips(parts: tuple[int, int]) -> None:
    text = f"{parts[0]}-{parts[1]}"

    assert str(StreamId.parse(text)) == text
    assert StreamId.parse(text.encode()) == StreamId(*parts)


@hypothesis.given(_ids, _ids)
def test_ordering_equals_integer_tuple_ordering(a: tuple[int, int], b: tuple[int, int]) -> None:
    first = StreamId.parse(f"{a[0]}-{a[1]}")
    second = StreamId.parse(f"{b[0]}-{b[1]}")

    assert (first < second) is (a < b)
    assert (first == second) is (a == b)
    assert (first > second) is (a > b)


@hypothesis.given(st.lists(_ids, max_size=30))
def test_sorting_ids_sorts_like_redis(ids: list[tuple[int, int]]) -> None:
    parsed = [StreamId.parse(f"{ms}-{seq}") for ms, seq in ids]

    assert [tuple(i) for i in sorted(parsed)] == sorted(ids)
