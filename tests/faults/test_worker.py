"""A worker's jobs through faults: Redis gone when a job ends, SIGKILL mid-job. The stream
always ends with one closing event the user can trust, or the loss is logged loudly. (SIGTERM
with jobs running: tests/worker/test_jobworker.py and tests/worker/test_main.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.clients import create_redis
from shared.keys import Keys
from shared.settings import Settings
from tests.processes import ProcessGroup, RestartableRedis
from tests.support import submit, wait_until
from tests.watchers import verify, watch_client, watch_job
from tests.worker_support import JobHarness, types
from worker.lifecycle import arq_timeout_s
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(45)

SECRET = "result-payload-that-must-not-be-logged"

jobs = JobRegistry()
# Set by a test to let the job of that id end.
releases: dict[str, asyncio.Event] = {}


@jobs.job("faults.held")
async def held(progress: Progress) -> dict[str, str]:
    """Runs until the test releases it, then returns a result."""
    await releases[progress.job_id].wait()
    return {"secret": SECRET}


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


@pytest.fixture
async def private_redis(processes: ProcessGroup) -> AsyncIterator[tuple[RestartableRedis, Redis]]:
    server = processes.redis()
    client = create_redis(server.url)
    try:
        yield server, client
    finally:
        await client.aclose()


async def _start_held_job(harness: JobHarness) -> str:
    job_id = f"held-{time.monotonic_ns()}"
    releases[job_id] = asyncio.Event()
    await harness.submit("faults.held", job_id=job_id)
    await harness.wait_for(job_id, "started")
    return job_id


def _records(caplog: pytest.LogCaptureFixture, level: int, job_id: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("worker") and record.levelno == level
        if job_id in record.getMessage()
    ]


async def test_a_job_ending_while_redis_is_down_writes_its_end_once_redis_is_back(
    settings: Settings,
    private_redis: tuple[RestartableRedis, Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, redis = private_redis
    settings = settings.replace(redis_url=server.url, publish_retry_s=30)
    caplog.set_level(logging.WARNING, logger="worker")
    async with JobHarness.open(settings, redis) as harness:
        await harness.start_worker(jobs)
        job_id = await _start_held_job(harness)

        await asyncio.to_thread(server.stop)
        releases[job_id].set()
        await wait_until(
            lambda: _records(caplog, logging.WARNING, job_id),
            timeout=15,
            message="the worker retrying the closing event",
        )
        await asyncio.to_thread(server.start)
        events = await harness.wait_until_ended(job_id, timeout=15)

    assert types(events) == ["queued", "started", "completed"]
    assert events[-1]["data"] == {"result": {"secret": SECRET}}
    assert "retrying its completed event" in _records(caplog, logging.WARNING, job_id)[0]
    assert _records(caplog, logging.ERROR, job_id) == []


async def test_a_closing_event_redis_never_takes_is_logged_as_an_error_without_payload(
    settings: Settings,
    private_redis: tuple[RestartableRedis, Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, redis = private_redis
    settings = settings.replace(redis_url=server.url, publish_retry_s=0.5)
    caplog.set_level(logging.INFO, logger="worker")
    async with JobHarness.open(settings, redis) as harness:
        await harness.start_worker(jobs)
        job_id = await _start_held_job(harness)

        await asyncio.to_thread(server.stop)
        releases[job_id].set()
        await wait_until(
            lambda: _records(caplog, logging.ERROR, job_id),
            timeout=15,
            message="the lost closing event logged",
        )
        await asyncio.to_thread(server.start)
        lost = await harness.events(job_id)
        # The worker itself carries on once Redis is back.
        later = await _start_held_job(harness)
        releases[later].set()
        later_events = await harness.wait_until_ended(later, timeout=15)

    [error] = _records(caplog, logging.ERROR, job_id)
    assert "completed event" in error
    assert "Redis unreachable" in error
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert types(lost) == ["queued", "started"]
    assert types(later_events) == ["queued", "started", "completed"]


async def test_a_killed_workers_job_runs_again_as_the_next_attempt(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    job_timeout_s = 1.5
    settings = settings.replace(job_timeout_s=job_timeout_s, publish_retry_s=0)
    # arq reruns it once its in-progress key expires: arq's timeout for the job plus 10 s.
    rerun_after_s = arq_timeout_s(job_timeout_s, settings) + 10
    killed, gateway = await asyncio.gather(processes.worker(settings), processes.gateway(settings))
    keys = Keys(settings.key_prefix)
    async with gateway.client() as api:
        job_id = await submit(api, "demo.countdown", seconds=1, steps=5)
    client = watch_client(gateway.url, read_timeout=30)
    try:
        watching = asyncio.create_task(watch_job([client], job_id, timeout=40))
        async with JobHarness.open(settings, redis) as harness:
            await harness.wait_for(job_id, "progress")
            await killed.kill()
            killed_at = time.monotonic()
            await processes.worker(settings)
            events = await harness.wait_until_ended(job_id, timeout=rerun_after_s + 10)
            rerun_took = time.monotonic() - killed_at
        watch = await watching
    finally:
        await client.aclose()

    started = [event for event in events if event["type"] == "started"]
    assert [event["attempt"] for event in started] == [1, 2]
    assert types(events)[-1] == "completed"
    assert events[-1]["attempt"] == 2
    assert "retrying" not in types(events)  # a killed worker writes nothing
    assert (started[1]["ts"] - started[0]["ts"]) / 1000 >= rerun_after_s - 0.5
    assert rerun_took <= rerun_after_s + 5
    verdict = await verify(watch, redis, keys)
    assert verdict.exact, verdict
