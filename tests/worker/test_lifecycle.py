"""Each way a job can end, and the one closing event it writes, on a real worker and Redis; and
the heartbeats that fill a running job's silences."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import Retry
from arq.constants import retry_key_prefix
from redis.asyncio import Redis

from shared.events import EventType, make_event
from shared.settings import Settings
from tests.support import scaled, wait_until
from tests.worker_support import JobHarness, types
from worker.lifecycle import result_for_event
from worker.progress import Progress
from worker.registry import JobRegistry
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(30)

jobs = JobRegistry()


class Flake(Exception):
    pass


@jobs.job("test.echo")
async def echo(progress: Progress, value: Any = None) -> Any:
    return value


@jobs.job("test.always_flaky", max_tries=2, retry_on=(Flake,))
async def always_flaky(progress: Progress) -> None:
    raise Flake(f"attempt {progress.attempt} flaked")


@jobs.job("test.flaky_by_default", retry_on=(Flake,))
async def flaky_by_default(progress: Progress) -> None:
    raise Flake("again")


@jobs.job("test.asks_to_retry")
async def asks_to_retry(progress: Progress) -> str:
    if progress.attempt == 1:
        raise Retry(defer=0.01) from ConnectionResetError("upstream hung up")
    return "second time lucky"


@jobs.job("test.hangs", timeout_s=0.2, retry_on=(TimeoutError,))
async def hangs(progress: Progress) -> None:
    await asyncio.sleep(30)


@jobs.job("test.raises_own_timeout", retry_on=(TimeoutError,), max_tries=2)
async def raises_own_timeout(progress: Progress) -> None:
    raise TimeoutError("upstream took too long")


@jobs.job("test.returns_a_set")
async def returns_a_set(progress: Progress) -> set[int]:
    return {1, 2}


@jobs.job("test.hangs_on_first_attempt")
async def hangs_on_first_attempt(progress: Progress) -> int:
    await progress.update(current=progress.attempt)
    if progress.attempt == 1:
        await asyncio.sleep(30)
    return progress.attempt


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


async def test_returned_value_is_the_completed_result(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.echo", value={"answer": 42, "items": [1, "two", None]})

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "completed"]
    assert events[1]["data"]["attempt"] == 1
    assert events[1]["data"]["worker"]
    assert events[2]["data"] == {"result": {"answer": 42, "items": [1, "two", None]}}
    assert [event["attempt"] for event in events] == [0, 1, 1]


async def test_oversized_result_is_replaced_by_its_size(
    harness: JobHarness, settings: Settings
) -> None:
    await harness.start_worker(jobs, settings.replace(max_result_bytes=100))
    job_id = await harness.submit("test.echo", value="x" * 200)

    events = await harness.wait_until_ended(job_id)

    assert events[-1]["type"] == "completed"
    assert events[-1]["data"] == {"result": {"truncated": True, "bytes": 202}}


def test_result_for_event_keeps_what_fits_as_plain_json() -> None:
    assert result_for_event({"a": (1, 2)}, 100) == {"a": [1, 2]}
    assert result_for_event("x" * 10, 12) == "x" * 10
    assert result_for_event("x" * 11, 12) == {"truncated": True, "bytes": 13}


async def test_result_that_is_not_json_fails_the_job(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.returns_a_set")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "failed"]
    assert events[-1]["data"]["type"] == "ResultNotSerializable"


async def test_exception_fails_with_type_and_message_and_no_traceback(
    harness: JobHarness,
) -> None:
    await harness.start_worker()
    job_id = await harness.submit("demo.fail", message="disk on fire")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "failed"]
    assert events[-1]["data"] == {"type": "RuntimeError", "message": "disk on fire"}
    raw = await harness.raw_stream(job_id)
    assert b"Traceback" not in raw
    assert b'File \\"' not in raw
    assert b"demo.py" not in raw


async def test_retryable_errors_rerun_the_job_as_the_next_attempt(harness: JobHarness) -> None:
    await harness.start_worker()
    job_id = await harness.submit("demo.flaky", fail_times=2)

    events = await harness.wait_until_ended(job_id)

    assert types(events) == [
        "queued", "started", "retrying", "started", "retrying", "started", "completed",
    ]  # fmt: skip
    started = [event["data"]["attempt"] for event in events if event["type"] == "started"]
    retrying = [event["data"] for event in events if event["type"] == "retrying"]
    assert started == [1, 2, 3]
    assert [data["attempt"] for data in retrying] == [2, 3]
    assert retrying[0]["delay_s"] == 0.05
    assert retrying[0]["reason"] == "TransientError: attempt 1 of 2 planned failures"
    assert [event["attempt"] for event in events[1:]] == [1, 1, 2, 2, 3, 3]
    assert events[-1]["data"] == {"result": {"attempts": 3}}


async def test_retryable_error_on_the_last_attempt_fails_the_job(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.always_flaky")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "retrying", "started", "failed"]
    assert events[-1]["attempt"] == 2
    assert events[-1]["data"] == {
        "type": "Flake",
        "message": "attempt 2 flaked (gave up after 2 attempts)",
    }


async def test_max_tries_defaults_to_the_setting(harness: JobHarness, settings: Settings) -> None:
    await harness.start_worker(jobs, settings.replace(max_tries=3))
    job_id = await harness.submit("test.flaky_by_default")

    events = await harness.wait_until_ended(job_id)

    assert types(events).count("started") == 3
    assert events[-1]["type"] == "failed"


async def test_max_tries_of_the_job_wins_over_the_setting(
    harness: JobHarness, settings: Settings
) -> None:
    await harness.start_worker(settings=settings.replace(max_tries=2))
    job_id = await harness.submit("demo.flaky", fail_times=4)

    events = await harness.wait_until_ended(job_id)

    assert types(events).count("started") == 5
    assert events[-1]["type"] == "completed"


async def test_retry_raised_by_the_job_uses_its_delay_and_cause(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.asks_to_retry")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "retrying", "started", "completed"]
    assert events[2]["data"] == {
        "attempt": 2,
        "delay_s": 0.01,
        "reason": "ConnectionResetError: upstream hung up",
    }


async def test_timeout_fails_the_job_though_timeout_errors_are_retried(
    harness: JobHarness,
) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.hangs")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "failed"]
    assert events[-1]["data"] == {"type": "TimeoutError", "message": "job exceeded 0.2 s"}


async def test_a_jobs_own_timeout_error_follows_retry_on(harness: JobHarness) -> None:
    await harness.start_worker(jobs)
    job_id = await harness.submit("test.raises_own_timeout")

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "retrying", "started", "failed"]
    assert events[2]["data"]["reason"] == "TimeoutError: upstream took too long"
    assert events[-1]["data"] == {
        "type": "TimeoutError",
        "message": "upstream took too long (gave up after 2 attempts)",
    }


async def test_cancel_request_ends_a_running_job_with_cancelled(harness: JobHarness) -> None:
    await harness.start_worker()
    job_id = await harness.submit("demo.countdown", seconds=30, steps=30)
    await harness.wait_for(job_id, "progress")

    aborted = await harness.cancel_running(job_id)
    events = await harness.wait_until_ended(job_id)

    assert aborted
    assert types(events) == ["queued", "started", "progress", "cancelled"]
    assert events[-1]["data"] == {"reason": "cancelled by request"}
    assert events[-1]["attempt"] == 1


async def test_job_cancelled_while_queued_never_starts(harness: JobHarness) -> None:
    job_id = await harness.submit("test.echo", value=1)
    cancelled = make_event(EventType.CANCELLED, job_id, 0, {"reason": "cancelled before start"})
    assert (await harness.publisher.publish(cancelled)).accepted
    await harness.start_worker(jobs)

    arq_result = await harness.arq_job(job_id).result(timeout=scaled(10), poll_delay=0.02)

    assert arq_result is None
    assert types(await harness.events(job_id)) == ["queued", "cancelled"]


async def test_stopping_a_worker_mid_job_hands_it_to_the_next_attempt(
    harness: JobHarness,
) -> None:
    first = await harness.start_worker(jobs)
    job_id = await harness.submit("test.hangs_on_first_attempt")
    await harness.wait_for(job_id, "progress")

    await harness.stop_worker(first)
    interrupted = await harness.events(job_id)
    await harness.start_worker(jobs)
    events = await harness.wait_until_ended(job_id)

    assert types(interrupted) == ["queued", "started", "progress", "retrying"]
    assert interrupted[-1]["data"] == {
        "attempt": 2,
        "delay_s": 0,
        "reason": "worker shutting down",
    }
    assert types(events) == [
        "queued", "started", "progress", "retrying", "started", "progress", "completed",
    ]  # fmt: skip
    assert events[-1]["attempt"] == 2
    assert events[-1]["data"] == {"result": 2}


async def test_a_stopping_worker_hands_new_jobs_back_unstarted(
    harness: JobHarness, redis: Redis
) -> None:
    stopping = await harness.start_worker(jobs)
    await wait_until(lambda: WorkerRuntime.find(stopping.ctx), message="worker started")
    runtime = WorkerRuntime.find(stopping.ctx)
    assert runtime is not None
    runtime.stopping.set()
    job_id = await harness.submit("test.echo", value="later")

    async def handed_back() -> bool:
        return int(await redis.get(retry_key_prefix + job_id) or 0) >= 2

    await wait_until(handed_back, message="the job handed back twice")
    untouched = await harness.events(job_id)
    await harness.stop_worker(stopping)
    await harness.start_worker(jobs)
    events = await harness.wait_until_ended(job_id)

    assert types(untouched) == ["queued"]
    assert types(events) == ["queued", "started", "completed"]
    assert events[-1]["data"] == {"result": "later"}


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
