"""What `Progress` writes: coalesced progress in call order, data/log/error events, heartbeats
only in silences, and a quiet stop once the stream has ended."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.events import Event, EventType, make_event
from shared.settings import Settings
from tests.support import wait_until
from tests.worker_support import JobHarness, types
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(30)

jobs = JobRegistry()
# Set by a test to let the job of that id finish.
releases: dict[str, asyncio.Event] = {}


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


@jobs.job("test.goes_quiet")
async def goes_quiet(progress: Progress) -> None:
    await progress.update(current=1, total=3)
    await progress.update(current=2)
    await releases[progress.job_id].wait()


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


async def test_pending_value_is_written_when_due_though_the_job_goes_quiet(
    harness: JobHarness, settings: Settings
) -> None:
    await harness.start_worker(jobs, settings.replace(progress_interval_s=0.1))
    job_id = "goes-quiet-" + settings.key_prefix
    releases[job_id] = asyncio.Event()
    await harness.submit("test.goes_quiet", job_id=job_id)

    async def second_value_written() -> bool:
        return [data["current"] for data in progress_of(await harness.events(job_id))] == [1, 2]

    try:
        await wait_until(second_value_written, message="the pending value flushed")
    finally:
        releases.pop(job_id).set()
    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "progress", "progress", "completed"]
    assert events[3]["ts"] - events[2]["ts"] >= 100


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


async def test_heartbeats_fill_silences(harness: JobHarness, settings: Settings) -> None:
    await harness.start_worker(settings=settings.replace(heartbeat_s=0.2))
    job_id = await harness.submit("demo.quiet", seconds=1.0)

    events = await harness.wait_until_ended(job_id)
    heartbeats = [event for event in events if event["type"] == "heartbeat"]

    assert types(events)[:2] == ["queued", "started"]
    assert events[-1]["type"] == "completed"
    assert 3 <= len(heartbeats) <= 5
    assert all(event["data"] == {"interval_s": 0.2} for event in heartbeats)
    times = [events[1]["ts"]] + [event["ts"] for event in heartbeats]
    assert all(later - earlier >= 190 for earlier, later in itertools.pairwise(times))


async def test_no_heartbeat_while_progress_flows(harness: JobHarness, settings: Settings) -> None:
    await harness.start_worker(settings=settings.replace(heartbeat_s=0.3, progress_interval_s=0.02))
    job_id = await harness.submit("demo.countdown", seconds=1.2, steps=24)

    events = await harness.wait_until_ended(job_id)

    assert events[-1]["type"] == "completed"
    assert "heartbeat" not in types(events)
    assert len(progress_of(events)) >= 20


async def test_job_stops_quietly_once_its_stream_has_ended(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.chatty")
    await harness.wait_for(job_id, "data")

    cancelled = make_event(EventType.CANCELLED, job_id, 1, {"reason": "cancelled elsewhere"})
    assert (await harness.publisher.publish(cancelled)).accepted
    arq_result = await harness.arq_job(job_id).result(timeout=10, poll_delay=0.02)

    events = await harness.events(job_id)
    assert arq_result is None
    assert events[-1]["type"] == "cancelled"
    assert set(types(events[2:-1])) == {"data"}
    assert (await harness.publisher.publish(cancelled)).status == EventType.CANCELLED.value
