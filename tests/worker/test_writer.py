"""`EventWriter`: what one attempt's events look like in the job's stream, in which order they
land, how progress is coalesced, when heartbeats fill a silence, and the refusal once the
stream has ended. Straight against a real Redis, without a worker.

Writes Redis does not take (retried, then `EventNotStored`) are fault tests:
tests/faults/test_worker.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import pairwise
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.events import Event, EventType, decode_event, make_event, now_ms
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.support import wait_until
from worker.writer import EventWriter, JobEnded

pytestmark = pytest.mark.timeout(30)

ATTEMPT = 3
# What the worker writes during an attempt, as `worker.lifecycle` and `worker.progress` shape it.
RUNNING_EVENTS: list[tuple[EventType, dict[str, Any]]] = [
    (EventType.STARTED, {"attempt": ATTEMPT, "worker": "host-41-a1b2c3"}),
    (
        EventType.PROGRESS,
        {
            "current": 2,
            "total": 4,
            "percent": 50.0,
            "stage": "download",
            "message": None,
            "rate": 1.5,
            "eta_s": 1.3,
        },
    ),
    (EventType.HEARTBEAT, {"interval_s": 5.0}),
    (EventType.DATA, {"token": "Hel", "index": 0, "nested": {"k": [1, 2]}}),
    (EventType.LOG, {"level": "warning", "message": "upstream is slow"}),
    (EventType.ERROR, {"type": "CacheMiss", "message": "cache miss", "retryable": True}),
]
# The one event that closes an attempt.
CLOSING_EVENTS: list[tuple[EventType, dict[str, Any]]] = [
    (EventType.RETRYING, {"attempt": ATTEMPT + 1, "delay_s": 0, "reason": "worker shutting down"}),
    (EventType.COMPLETED, {"result": {"rows": 3, "names": ["a", "b"]}}),
    (EventType.FAILED, {"type": "ValueError", "message": "row 7 is not a number"}),
    (EventType.CANCELLED, {"reason": "cancelled by request"}),
]


@pytest.fixture
def job_id() -> str:
    return f"writer-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def publisher(redis: Redis, settings: Settings) -> Publisher:
    return Publisher(redis, settings)


MakeWriter = Callable[..., EventWriter]


@pytest.fixture
async def make_writer(
    publisher: Publisher, settings: Settings, job_id: str
) -> AsyncIterator[MakeWriter]:
    """Makes writers for the test's job; their background tasks are stopped at the end."""
    writers: list[EventWriter] = []

    def make(
        *, progress_interval_s: float = 0.0, heartbeat_s: float = 60.0, attempt: int = ATTEMPT
    ) -> EventWriter:
        writer = EventWriter(
            publisher,
            job_id,
            attempt,
            progress_interval_s=progress_interval_s,
            heartbeat_s=heartbeat_s,
            max_event_bytes=settings.max_event_bytes,
        )
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        await writer.stop()


async def stored(redis: Redis, settings: Settings, job_id: str) -> list[tuple[str, Event]]:
    """The job's stream: (id, event) of each entry, oldest first."""
    entries = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    return [(entry_id.decode(), decode_event(fields[b"e"])) for entry_id, fields in entries]


def types_and_data(entries: Sequence[tuple[str, Event]]) -> list[tuple[str, dict[str, Any]]]:
    return [(event["type"], event["data"]) for _, event in entries]


@pytest.mark.parametrize(
    ("closing", "data"), CLOSING_EVENTS, ids=[t.value for t, _ in CLOSING_EVENTS]
)
async def test_an_attempts_events_are_stored_as_written_each_with_the_attempt(
    make_writer: MakeWriter,
    redis: Redis,
    settings: Settings,
    job_id: str,
    closing: EventType,
    data: dict[str, Any],
) -> None:
    writer = make_writer()
    before_ms = now_ms()

    ids = [str(await writer.write(event_type, fields)) for event_type, fields in RUNNING_EVENTS]
    ids.append(str(await writer.finish(closing, data)))
    entries = await stored(redis, settings, job_id)

    assert [entry_id for entry_id, _ in entries] == ids
    assert types_and_data(entries) == [(t.value, d) for t, d in [*RUNNING_EVENTS, (closing, data)]]
    assert all(set(event) == {"v", "type", "job", "ts", "attempt", "data"} for _, event in entries)
    assert {(event["v"], event["job"], event["attempt"]) for _, event in entries} == {
        (1, job_id, ATTEMPT)
    }
    stamps = [event["ts"] for _, event in entries]
    assert stamps == sorted(stamps)
    assert before_ms <= stamps[0]
    assert stamps[-1] <= now_ms()


async def test_nothing_is_written_after_the_closing_event(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    writer = make_writer()
    await writer.write(EventType.STARTED, {"attempt": ATTEMPT, "worker": "w"})
    await writer.finish(EventType.COMPLETED, {"result": 1})

    with pytest.raises(JobEnded) as ended:
        await writer.write(EventType.LOG, {"level": "info", "message": "too late"})

    assert ended.value.status == "completed"
    assert [event["type"] for _, event in await stored(redis, settings, job_id)] == [
        "started",
        "completed",
    ]


async def test_a_stream_ended_by_someone_else_refuses_every_later_write(
    make_writer: MakeWriter, publisher: Publisher, redis: Redis, settings: Settings, job_id: str
) -> None:
    writer = make_writer()
    await writer.write(EventType.STARTED, {"attempt": ATTEMPT, "worker": "w"})
    # What the gateway writes when the job is cancelled.
    cancel = make_event(EventType.CANCELLED, job_id, 0, {"reason": "cancelled by request"})
    assert (await publisher.publish(cancel)).accepted

    with pytest.raises(JobEnded) as on_write:
        await writer.write(EventType.DATA, {"token": "x"})
    with pytest.raises(JobEnded) as on_progress:
        await writer.write_progress({"current": 1})
    with pytest.raises(JobEnded) as on_finish:
        await writer.finish(EventType.COMPLETED, {"result": None})

    assert on_write.value.status == "cancelled"
    assert on_progress.value.status == on_finish.value.status == "cancelled"
    assert str(on_write.value) == f"job {job_id} already cancelled"
    assert [event["type"] for _, event in await stored(redis, settings, job_id)] == [
        "started",
        "cancelled",
    ]


async def test_progress_sooner_than_its_interval_is_held_and_its_last_value_lands_first(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    # An interval longer than the test: only other writes flush the held value.
    writer = make_writer(progress_interval_s=60)

    for current in (1, 2, 3):
        await writer.write_progress({"current": current})
    held = await stored(redis, settings, job_id)
    await writer.write(EventType.LOG, {"level": "info", "message": "next"})
    await writer.write_progress({"current": 4})
    await writer.finish(EventType.COMPLETED, {"result": "done"})

    assert types_and_data(held) == [("progress", {"current": 1})]
    assert types_and_data(await stored(redis, settings, job_id)) == [
        ("progress", {"current": 1}),
        ("progress", {"current": 3}),
        ("log", {"level": "info", "message": "next"}),
        ("progress", {"current": 4}),
        ("completed", {"result": "done"}),
    ]


async def test_immediate_progress_follows_the_held_value_at_once(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    writer = make_writer(progress_interval_s=60)

    await writer.write_progress({"stage": "download", "current": 0})
    await writer.write_progress({"stage": "download", "current": 9})
    await writer.write_progress({"stage": "unpack", "current": 0}, immediate=True)

    assert types_and_data(await stored(redis, settings, job_id)) == [
        ("progress", {"stage": "download", "current": 0}),
        ("progress", {"stage": "download", "current": 9}),
        ("progress", {"stage": "unpack", "current": 0}),
    ]


async def test_a_held_value_is_written_when_due_though_nothing_else_is(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    interval_s = 0.5
    writer = make_writer(progress_interval_s=interval_s)

    await writer.write_progress({"current": 1})
    await writer.write_progress({"current": 2})
    held = await stored(redis, settings, job_id)

    async def both_written() -> list[tuple[str, Event]] | None:
        entries = await stored(redis, settings, job_id)
        return entries if len(entries) == 2 else None

    entries = await wait_until(both_written, message="the held value written")
    assert isinstance(entries, list)

    assert types_and_data(held) == [("progress", {"current": 1})]
    assert types_and_data(entries) == [("progress", {"current": 1}), ("progress", {"current": 2})]
    assert entries[1][1]["ts"] - entries[0][1]["ts"] >= interval_s * 1000


async def test_progress_spaced_wider_than_its_interval_is_all_written(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    writer = make_writer(progress_interval_s=0.02)

    for current in range(10):
        await writer.write_progress({"current": current})
        await asyncio.sleep(0.05)  # the job's own pace

    written = [data["current"] for _, data in types_and_data(await stored(redis, settings, job_id))]
    assert written == list(range(10))


async def test_heartbeats_fill_silences_only(
    make_writer: MakeWriter, redis: Redis, settings: Settings, job_id: str
) -> None:
    heartbeat_s = 0.5
    writer = make_writer(heartbeat_s=heartbeat_s)
    await writer.write(EventType.STARTED, {"attempt": ATTEMPT, "worker": "w"})
    writer.start_heartbeats()

    # Twenty events a tenth of the interval apart: never a silence long enough.
    for index in range(20):
        await writer.write(EventType.DATA, {"index": index})
        await asyncio.sleep(heartbeat_s / 10)  # the job's own pace

    async def two_heartbeats() -> list[tuple[str, Event]] | None:
        entries = await stored(redis, settings, job_id)
        beats = [entry for entry in entries if entry[1]["type"] == "heartbeat"]
        return entries if len(beats) >= 2 else None

    entries = await wait_until(two_heartbeats, message="heartbeats in the silence")
    assert isinstance(entries, list)
    await writer.finish(EventType.COMPLETED, {"result": None})

    kinds = [event["type"] for _, event in entries]
    assert kinds[:21] == ["started", *["data"] * 20]
    assert set(kinds[21:]) == {"heartbeat"}
    assert all(event["data"] == {"interval_s": heartbeat_s} for _, event in entries[21:])
    # Stamped in whole wall-clock milliseconds, timed on the monotonic clock: 10 ms of slack.
    silence = [event["ts"] for _, event in entries[20:]]
    assert all(later - earlier >= heartbeat_s * 1000 - 10 for earlier, later in pairwise(silence))
