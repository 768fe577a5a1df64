"""A feed's ring of recent events: bounded in count and in bytes, the newest always kept, and
answering "what came after this position" only when it really holds the position. Ids are
compared as integers: 9-0 comes before 10-0. What the feed remembers of who may watch its job
never outlives the job."""

from __future__ import annotations

from typing import cast

import orjson

from gateway.engine.entry import Entry
from gateway.engine.feed import Feed
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Subscriber
from shared.state import TokenBinding
from shared.streamid import StreamId


def _entry(event_id: str, pad: int = 0, event_type: str = "progress", ts: int = 1) -> Entry:
    # A fixed `ts`, so entries with ids of the same length have the same size.
    event = {
        "v": 1,
        "type": event_type,
        "job": "j",
        "ts": ts,
        "attempt": 1,
        "data": {"p": "x" * pad},
    }
    return Entry.of(event_id, orjson.dumps(event))


def _feed(max_entries: int = 256, max_bytes: int = 1 << 20) -> Feed:
    return Feed("j", b"live:j", max_ring_entries=max_entries, max_ring_bytes=max_bytes)


def _record(feed: Feed, *event_ids: str) -> None:
    for event_id in event_ids:
        assert feed.record(_entry(event_id)), event_id


def _ids(entries: list[Entry] | None) -> list[str] | None:
    return None if entries is None else [str(entry.id) for entry in entries]


def test_the_ring_keeps_the_newest_entries_up_to_its_count() -> None:
    feed = _feed(max_entries=3)
    _record(feed, "1-0", "2-0", "3-0", "4-0", "5-0")

    assert _ids(list(feed.ring)) == ["3-0", "4-0", "5-0"]
    assert feed.ring_bytes == sum(entry.size for entry in feed.ring)
    assert feed.last_id == StreamId(5, 0)


def test_the_ring_keeps_what_fits_its_byte_bound() -> None:
    entries = [_entry(f"{n}-0", pad=1000) for n in range(1, 7)]
    bound = sum(entry.size for entry in entries[-3:])
    feed = _feed(max_bytes=bound)
    for entry in entries:
        feed.record(entry)

    assert list(feed.ring) == entries[-3:]
    assert feed.ring_bytes == bound


def test_an_entry_larger_than_the_byte_bound_stays_alone_until_the_next() -> None:
    feed = _feed(max_bytes=10_000)
    _record(feed, "1-0", "2-0")
    huge = _entry("3-0", pad=20_000)
    feed.record(huge)

    assert list(feed.ring) == [huge], "the newest entry always stays, however large"
    assert feed.ring_bytes == huge.size > 10_000
    assert _ids(feed.newer_than(StreamId(3, 0))) == []

    _record(feed, "4-0")
    assert _ids(list(feed.ring)) == ["4-0"]
    assert feed.ring_bytes == feed.ring[0].size


def test_newer_than_a_position_the_ring_holds() -> None:
    feed = _feed()
    _record(feed, "1-0", "2-0", "3-0", "4-0", "5-0")

    assert _ids(feed.newer_than(StreamId(1, 0))) == ["2-0", "3-0", "4-0", "5-0"]
    assert _ids(feed.newer_than(StreamId(3, 0))) == ["4-0", "5-0"]
    assert _ids(feed.newer_than(StreamId(5, 0))) == []
    assert all(feed.holds(StreamId(ms, 0)) for ms in range(1, 6))


def test_newer_than_a_position_pushed_out_of_the_ring_is_unknown() -> None:
    feed = _feed(max_entries=3)
    _record(feed, "1-0", "2-0", "3-0", "4-0", "5-0")

    assert feed.newer_than(StreamId(2, 0)) is None
    assert feed.newer_than(StreamId(1, 0)) is None
    assert _ids(feed.newer_than(StreamId(3, 0))) == ["4-0", "5-0"]
    assert [feed.holds(StreamId(ms, 0)) for ms in range(1, 6)] == [False, False, True, True, True]


def test_newer_than_a_position_the_ring_never_held_is_unknown() -> None:
    feed = _feed()
    assert feed.newer_than(StreamId(1, 0)) is None, "an empty ring vouches for nothing"

    _record(feed, "10-0", "30-0", "50-0")
    for position in ("20-0", "40-0", "60-0", "5-0", "30-1"):
        assert feed.newer_than(StreamId.parse(position)) is None, position
        assert not feed.holds(StreamId.parse(position)), position


def test_ids_are_compared_as_integers() -> None:
    feed = _feed()
    _record(feed, "9-0", "10-0", "11-0", "11-9", "11-10")

    assert _ids(list(feed.ring)) == ["9-0", "10-0", "11-0", "11-9", "11-10"]
    assert _ids(feed.newer_than(StreamId.parse("9-0"))) == ["10-0", "11-0", "11-9", "11-10"]
    assert _ids(feed.newer_than(StreamId.parse("11-9"))) == ["11-10"]
    assert feed.last_id == StreamId(11, 10)


def test_an_entry_the_feed_already_had_is_not_recorded_again() -> None:
    feed = _feed()
    _record(feed, "9-0", "10-0")
    ring_bytes = feed.ring_bytes

    assert not feed.record(_entry("10-0")), "the same event again (pub/sub and a catch-up)"
    assert not feed.record(_entry("9-5")), "an older event"
    assert _ids(list(feed.ring)) == ["9-0", "10-0"]
    assert feed.ring_bytes == ring_bytes
    assert feed.last_id == StreamId(10, 0)


def _binding(feed: Feed) -> TokenBinding | None:
    return feed.binding


def _learn(feed: Feed, binding: TokenBinding, updated_at: int) -> None:
    """A subscriber joins having read `binding` from a state last updated at `updated_at`."""
    resume = Resume("j", None, None, False, updated_at=updated_at, binding=binding)
    feed.learn(resume, cast(Subscriber, object()))


def test_a_queued_event_begins_another_job_so_ring_and_binding_start_over() -> None:
    feed = _feed()
    _record(feed, "1-0", "2-0")
    _learn(feed, TokenBinding("alice", "first", 0), updated_at=5)
    assert _binding(feed) == TokenBinding("alice", "first", 0)

    assert feed.record(_entry("3-0", event_type="queued", ts=100))

    assert _ids(list(feed.ring)) == ["3-0"]
    assert feed.ring_bytes == feed.ring[0].size
    assert _binding(feed) is None
    assert _ids(feed.newer_than(StreamId(1, 0))) is None, "the first job's positions are gone"


def test_a_binding_read_before_the_job_began_or_of_an_older_generation_is_not_taken() -> None:
    feed = _feed()
    feed.record(_entry("3-0", event_type="queued", ts=100))

    _learn(feed, TokenBinding("alice", "first", 0), updated_at=99)  # read of the job before
    assert _binding(feed) is None
    _learn(feed, TokenBinding("bob", "second", 1), updated_at=100)
    _learn(feed, TokenBinding("bob", "second", 0), updated_at=200)  # read before a revocation
    assert _binding(feed) == TokenBinding("bob", "second", 1)
    assert feed.revoke(2) == []
    assert _binding(feed) == TokenBinding("bob", "second", 2)
