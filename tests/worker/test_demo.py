"""The demo jobs, end to end on a real worker: what each writes into its stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.settings import Settings
from shared.state import snapshot
from tests.worker_support import JobHarness, types
from worker import demo

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


async def test_countdown_reports_each_step_and_completes(
    harness: JobHarness, settings: Settings, redis: Redis
) -> None:
    await harness.start_worker()
    job_id = await harness.submit("demo.countdown", seconds=0.5, steps=5)

    events = await harness.wait_until_ended(job_id)
    progress = [event["data"] for event in events if event["type"] == "progress"]

    assert types(events) == ["queued", "started"] + ["progress"] * len(progress) + ["completed"]
    assert [event["attempt"] for event in events] == [0] + [1] * (len(events) - 1)
    currents = [data["current"] for data in progress]
    assert currents == sorted(currents)
    assert currents[0] == 0
    assert currents[-1] == 5
    assert all(data["total"] == 5 for data in progress)
    assert progress[-1]["percent"] == 100
    assert progress[-1]["rate"] > 0
    assert progress[-1]["eta_s"] == 0
    assert events[-1]["data"] == {"result": {"counted": 5}}

    state = snapshot(job_id, await redis.hgetall(harness.keys.state(job_id)))  # type: ignore[misc]
    assert state["status"] == "completed"
    assert state["attempt"] == 1
    assert state["progress"]["current"] == 5
    assert state["result"] == {"counted": 5}
    for key in (harness.keys.state(job_id), harness.keys.events(job_id)):
        assert 0 < await redis.ttl(key) <= settings.retention_s


async def test_tokens_streams_text_one_word_at_a_time(harness: JobHarness) -> None:
    await harness.start_worker()
    text = "  Hello,  wide\nworld "
    job_id = await harness.submit("demo.tokens", text=text, delay_ms=1)

    events = await harness.wait_until_ended(job_id)
    data = [event["data"] for event in events if event["type"] == "data"]

    assert types(events) == ["queued", "started"] + ["data"] * 4 + ["completed"]
    assert data == [
        {"token": "  ", "index": 0},
        {"token": "Hello,  ", "index": 1},
        {"token": "wide\n", "index": 2},
        {"token": "world ", "index": 3},
    ]
    assert "".join(str(item["token"]) for item in data) == text
    assert events[-1]["data"] == {"result": {"text": text}}


def test_demo_jobs_are_registered_under_their_names() -> None:
    assert [spec["name"] for spec in demo.jobs.specs()] == [
        "demo.countdown",
        "demo.tokens",
        "demo.flaky",
        "demo.fail",
        "demo.quiet",
        "demo.burst",
    ]
