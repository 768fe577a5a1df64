"""Event parsing, the resume position's duplicate rule (one job's, and a cursor's over
several), and the reconnect backoff."""

from __future__ import annotations

import pytest

from jobwire.client.backoff import Backoff
from jobwire.client.events import InvalidEvent, JobEvent, parse_event
from jobwire.client.position import Cursor, JobPosition
from jobwire.client.sse import ServerSentEvent
from shared.events import EventType, encode_event, make_event


def stored(event_id: str, event_type: EventType = EventType.PROGRESS) -> JobEvent:
    envelope = make_event(event_type, "job-1", 2, {"current": 1}, ts=1234)
    return parse_event(
        ServerSentEvent(event_type.value, encode_event(envelope).decode(), event_id), "job-1"
    )


def reset() -> JobEvent:
    data = '{"reason":"unknown_position","state":{"status":"running","attempt":3}}'
    return parse_event(ServerSentEvent("reset", data, None), "job-1")


def test_a_stored_event_keeps_its_envelope_and_id() -> None:
    event = stored("17-3", EventType.COMPLETED)

    assert event == JobEvent("completed", "17-3", "job-1", 2, {"current": 1}, ts=1234)
    assert event.is_terminal
    assert not event.is_reset
    assert event.stream_id == (17, 3)


@pytest.mark.parametrize("event_type", list(EventType))
def test_a_watch_ends_at_exactly_the_event_types_that_end_a_job(event_type: EventType) -> None:
    assert stored("1-0", event_type).is_terminal is event_type.is_terminal


def test_a_reset_has_no_id_and_carries_the_snapshot() -> None:
    event = reset()

    assert (event.type, event.id, event.job, event.attempt) == ("reset", None, "job-1", 3)
    assert event.is_reset
    assert event.data["state"]["status"] == "running"


@pytest.mark.parametrize(
    ("data", "event_id"),
    [
        ("not json", "1-0"),
        ("[1, 2]", "1-0"),
        ('{"type": "progress"}', "1-0"),
        (encode_event(make_event(EventType.LOG, "j", 1, {})).decode(), "not-an-id"),
    ],
    ids=["not-json", "a-list", "no-envelope", "a-bad-id"],
)
def test_anything_else_is_invalid(data: str, event_id: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(ServerSentEvent("progress", data, event_id), "j")


def test_the_position_drops_duplicates_comparing_ids_as_integers() -> None:
    position = JobPosition("job-1", after="9-0")

    assert not position.take(stored("9-0"))
    assert not position.take(stored("8-5"))
    assert position.take(stored("10-0"))  # as strings "10-0" < "9-0"
    assert not position.take(stored("10-0"))
    assert position.take(stored("10-1"))
    assert str(position.last) == "10-1"


def test_after_a_reset_the_next_stored_event_is_taken_whatever_its_id() -> None:
    position = JobPosition("job-1", after="50-0")

    assert position.take(reset())
    assert position.take(stored("3-0"))  # the stream the gateway holds starts over here
    assert not position.take(stored("3-0"))
    assert position.take(stored("4-0"))


def composite(job_id: str, cursor: str, event_type: EventType = EventType.PROGRESS) -> JobEvent:
    """An event of `job_id` as a stream of several jobs frames it: its id is the cursor."""
    envelope = encode_event(make_event(event_type, job_id, 1, {}, ts=1)).decode()
    return Cursor({}).read(ServerSentEvent(event_type.value, envelope, cursor))


def test_a_cursor_keeps_one_position_per_job_and_resumes_each() -> None:
    cursor = Cursor({"a": "5-0", "b": None})

    assert cursor.last_event_id == "a:5-0"
    first = composite("b", "a:5-0,b:9-0")
    assert (first.job, first.id) == ("b", "9-0")
    assert cursor.take(first)
    assert not cursor.take(composite("a", "a:4-0,b:9-0"))  # before a's position: a duplicate
    assert cursor.take(composite("a", "a:10-0,b:9-0"))
    assert cursor.last_event_id == "a:10-0,b:9-0"
    assert cursor.take(composite("a", "a:11-0,b:9-0", EventType.COMPLETED))
    assert not cursor.finished  # b is still running
    assert cursor.take(composite("b", "a:11-0,b:12-0", EventType.FAILED))
    assert cursor.finished


def test_a_cursor_refuses_events_it_cannot_place() -> None:
    with pytest.raises(InvalidEvent):
        composite("c", "a:1-0")  # the cursor has no entry for the event's job
    with pytest.raises(InvalidEvent):
        Cursor({"a": None}).take(composite("c", "c:1-0"))  # a job the stream was not asked for


def test_backoff_grows_to_its_cap_with_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(initial_s=1, maximum_s=8, factor=2)

    for failures, step in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 100
    assert backoff.delay(1, retry_after_s=5) >= 5
    assert backoff.delay(1, retry_after_s=10_000) <= 48
