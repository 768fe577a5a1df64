"""What `Progress` writes: coalesced progress in call order, data/log/error events, and a quiet
stop once the stream has ended (how the writer coalesces and fills silences:
tests/worker/test_writer.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.events import Event, EventType, make_event, truncation_marker
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import StartGateway
from tests.support import collect_events, scaled
from tests.worker_support import JobHarness, types
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(30)

jobs = JobRegistry()


@jobs.job("test.stages")
async def stages(progress: Progress) -> str:
    await progress.update(current=0, total=2, stage="download")
    await progress.update(current=1)
    await progress.update(current=2)
    await progress.update(current=0, total=5, stage="unpack")
    await progress.advance(3)
    await progress.log("unpacked three")
    await progress.advance(1, message="one more")
    return "done"


@jobs.job("test.reports")
async def reports(progress: Progress) -> None:
    await progress.data(token="Hel", index=0)
    await progress.log("warming up", level="warning")
    await progress.error("cache miss", type="CacheMiss", retryable=True)
    await progress.data(nested={"k": [1, 2]})


@jobs.job("test.chatty")
async def chatty(progress: Progress) -> str:
    for index in range(1_000):
        await progress.data(index=index)
        await asyncio.sleep(0.005)
    return "never reached"


HUGE_CHARS = 30_000_000
# What each of them weighs encoded: the text and the quotes around it, in its field.
HUGE_DATA_BYTES = {
    "data": len(b'{"blob":""}') + HUGE_CHARS,
    "log": len(b'{"level":"info","message":""}') + HUGE_CHARS,
    "error": len(b'{"type":"Huge","message":"","retryable":false}') + HUGE_CHARS,
}


@jobs.job("test.oversized")
async def oversized(progress: Progress) -> str:
    await progress.data(blob="d" * HUGE_CHARS)
    await progress.log("l" * HUGE_CHARS)
    await progress.error("e" * HUGE_CHARS, type="Huge")
    await progress.data(token="still here")
    return "finished"


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


def progress_of(events: list[Event]) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == "progress"]


async def test_a_burst_is_coalesced_and_its_last_value_lands(harness: JobHarness) -> None:
    await harness.start_worker()
    job_id = await harness.submit("demo.burst", count=10_000)

    events = await harness.wait_until_ended(job_id)
    progress = progress_of(events)

    assert types(events)[-2:] == ["progress", "completed"]
    assert 2 <= len(progress) <= 20
    currents = [data["current"] for data in progress]
    assert currents == sorted(currents)
    assert progress[-1]["current"] == 10_000
    assert progress[-1]["percent"] == 100


async def test_new_stage_follows_the_old_stages_last_value(
    harness: JobHarness, settings: Settings
) -> None:
    # An interval longer than the test: only stage changes and other events flush.
    await harness.start_worker(jobs, settings.replace(progress_interval_s=60))
    job_id = await harness.submit("test.stages")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == [
        "queued", "started", "progress", "progress", "progress", "progress", "log", "progress",
        "completed",
    ]  # fmt: skip
    stage_and_current = [(data["stage"], data["current"]) for data in progress_of(events)]
    assert stage_and_current == [
        ("download", 0), ("download", 2), ("unpack", 0), ("unpack", 3), ("unpack", 4),
    ]  # fmt: skip
    assert progress_of(events)[-1]["message"] == "one more"
    assert progress_of(events)[-1]["total"] == 5
    assert events[-1]["data"] == {"result": "done"}


async def test_data_log_and_error_events_carry_exactly_what_was_given(
    harness: JobHarness,
) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.reports")

    events = await harness.wait_until_ended(job_id)

    assert [(event["type"], event["data"]) for event in events[2:-1]] == [
        ("data", {"token": "Hel", "index": 0}),
        ("log", {"level": "warning", "message": "warming up"}),
        ("error", {"type": "CacheMiss", "message": "cache miss", "retryable": True}),
        ("data", {"nested": {"k": [1, 2]}}),
    ]
    assert events[-1]["type"] == "completed"


async def test_job_stops_quietly_once_its_stream_has_ended(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.chatty")
    await harness.wait_for(job_id, "data")

    cancelled = make_event(EventType.CANCELLED, job_id, 1, {"reason": "cancelled elsewhere"})
    assert (await harness.publisher.publish(cancelled)).accepted
    arq_result = await harness.arq_job(job_id).result(timeout=scaled(10), poll_delay=0.02)

    events = await harness.events(job_id)
    assert arq_result is None
    assert events[-1]["type"] == "cancelled"
    assert set(types(events[2:-1])) == {"data"}
    assert (await harness.publisher.publish(cancelled)).status == EventType.CANCELLED.value


@pytest.mark.timeout(60)
async def test_30_mb_data_log_and_error_events_are_stored_truncated_and_the_job_completes(
    harness: JobHarness, settings: Settings, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.oversized")

    async with gateway.client() as client:
        # One subscriber from the start, live; one after the end, from the gateway's ring.
        live = await collect_events(client, job_id, timeout=40)
        replayed = await collect_events(client, job_id)

    entries = await harness.redis.xrange(Keys(settings.key_prefix).events(job_id))
    assert max(len(fields[b"e"]) for _, fields in entries) <= settings.max_event_bytes
    events = await harness.events(job_id)
    assert [(event["type"], event["data"]) for event in events[2:]] == [
        ("data", truncation_marker(HUGE_DATA_BYTES["data"])),
        ("log", truncation_marker(HUGE_DATA_BYTES["log"])),
        ("error", truncation_marker(HUGE_DATA_BYTES["error"])),
        ("data", {"token": "still here"}),
        ("completed", {"result": "finished"}),
    ]
    for watched in (live, replayed):
        assert [(event.event, event.json()["data"]) for event in watched] == [
            (event["type"], event["data"]) for event in events
        ]
