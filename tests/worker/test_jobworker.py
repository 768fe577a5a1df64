"""`JobWorker`'s stop: running jobs get the shutdown grace to finish, the rest write `retrying`
("worker shutting down") and go back to the queue for the next attempt; cancel requests are
still served meanwhile; `cancel_running_jobs()` ends the grace at once; a worker stopped while
it starts up still stops cleanly. (The second SIGTERM that calls `cancel_running_jobs()` is
`worker.main`'s: tests/worker/test_main.py.)"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.catalog import count_alive, load_catalog
from shared.events import Event
from shared.settings import Settings
from tests.processes import ProcessGroup
from tests.support import scaled, wait_until
from tests.worker_support import JobHarness, types
from worker.jobworker import JobWorker
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(45)

jobs = JobRegistry()
# Set by a test to let the job of that id end.
releases: dict[str, asyncio.Event] = {}


@jobs.job("test.held")
async def held(progress: Progress) -> int:
    """Runs until the test releases it; returns its attempt."""
    await releases[progress.job_id].wait()
    return progress.attempt


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


async def _start_held_job(harness: JobHarness) -> str:
    job_id = f"held-{uuid.uuid4().hex[:12]}"
    releases[job_id] = asyncio.Event()
    await harness.submit("test.held", job_id=job_id)
    await harness.wait_for(job_id, "started")
    return job_id


async def _wait_for_attempt(harness: JobHarness, job_id: str, attempt: int) -> list[Event]:
    """The job's events, once attempt `attempt` has started."""

    async def started() -> list[Event] | None:
        events = await harness.events(job_id)
        attempts = [e["data"]["attempt"] for e in events if e["type"] == "started"]
        return events if attempt in attempts else None

    found = await wait_until(started, timeout=10, message=f"attempt {attempt} started")
    assert isinstance(found, list)
    return found


async def test_a_job_ending_in_the_grace_completes_and_cancel_running_jobs_ends_the_grace(
    harness: JobHarness, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    worker = await harness.start_worker(jobs, settings.replace(shutdown_grace_s=60))
    assert isinstance(worker, JobWorker)
    finishing = await _start_held_job(harness)
    interrupted = await _start_held_job(harness)

    # Cancelling the task that runs the worker starts the same stop as a signal.
    stopping = asyncio.create_task(harness.stop_worker(worker))
    await wait_until(
        lambda: "2 running jobs get 60 s to finish" in caplog.text, message="the grace begun"
    )
    releases[finishing].set()
    finished = await harness.wait_until_ended(finishing)
    still_stopping = not stopping.done()
    worker.cancel_running_jobs()
    await asyncio.wait_for(stopping, scaled(10))
    handed_back = await harness.events(interrupted)

    await harness.start_worker(jobs)
    rerun = await _wait_for_attempt(harness, interrupted, 2)
    releases[interrupted].set()
    rerun = await harness.wait_until_ended(interrupted)

    assert types(finished) == ["queued", "started", "completed"]
    assert finished[-1]["data"] == {"result": 1}
    assert still_stopping  # the interrupted job was still being given its grace
    assert types(handed_back) == ["queued", "started", "retrying"]
    assert handed_back[-1]["data"] == {"attempt": 2, "delay_s": 0, "reason": "worker shutting down"}
    assert types(rerun) == ["queued", "started", "retrying", "started", "completed"]
    assert [event["attempt"] for event in rerun[1:]] == [1, 1, 2, 2]
    assert rerun[-1]["data"] == {"result": 2}


async def test_a_worker_stopped_while_starting_up_finishes_and_retires(
    harness: JobHarness, redis: Redis
) -> None:
    worker = await harness.start_worker()
    await wait_until(lambda: worker.main_task is not None, message="the worker starting up")

    await harness.stop_worker(worker)

    assert await load_catalog(redis, harness.keys)
    assert await count_alive(redis, harness.keys, 15) == 0


async def test_sigterm_lets_jobs_finish_within_the_grace_then_hands_the_rest_back(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    grace_s = 3.0
    settings = settings.replace(shutdown_grace_s=grace_s)
    async with JobHarness.open(settings, redis) as harness:
        stopping = await processes.worker(settings)
        short = await harness.submit("demo.countdown", seconds=1, steps=5)
        long = await harness.submit("demo.countdown", seconds=6, steps=6)
        cancelled = await harness.submit("demo.countdown", seconds=6, steps=6)
        for job_id in (short, long, cancelled):
            await harness.wait_for(job_id, "progress")

        stopping.signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Cancel requests are still served during the grace period.
        assert await harness.cancel_running(cancelled)
        exit_status = await stopping.wait(timeout=grace_s + 10)
        stopped_after = time.monotonic() - signalled
        handed_back = await harness.events(long)

        await processes.worker(settings.replace(shutdown_grace_s=0))
        rerun = await _wait_for_attempt(harness, long, 2)
        short_events = await harness.events(short)
        cancelled_events = await harness.events(cancelled)

    assert exit_status == 0, processes.logs()
    assert grace_s <= stopped_after <= grace_s + 3, stopped_after
    assert types(short_events)[-1] == "completed"
    assert "retrying" not in types(short_events)
    assert types(cancelled_events)[-1] == "cancelled"
    assert types(handed_back)[-1] == "retrying"
    assert handed_back[-1]["data"] == {"attempt": 2, "delay_s": 0, "reason": "worker shutting down"}
    assert [e["data"]["attempt"] for e in rerun if e["type"] == "started"] == [1, 2]
