"""`client.Client` against a real gateway and worker: submit, events, wait, cancel, attach."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jobwire.client import Backoff, Client, JobCancelled, JobEvent, JobFailed, RequestRejected
from jobwire.client.sync import SyncClient
from shared.settings import Settings
from tests.conftest import Gateway
from tests.support import scaled, stream_ids

FAST = Backoff(initial_s=0.02, maximum_s=0.2)


@pytest.fixture
async def client(stack: Gateway) -> AsyncIterator[Client]:
    async with Client(stack.url, backoff=FAST) as client:
        yield client


async def all_events(events: AsyncIterator[JobEvent]) -> list[JobEvent]:
    async with asyncio.timeout(scaled(15)):
        return [event async for event in events]


async def test_submit_follow_and_wait_for_a_countdown(
    client: Client, redis: Redis, settings: Settings
) -> None:
    job = await client.submit("demo.countdown", seconds=0.2, steps=4)

    events = await all_events(job.events())
    result = await job.wait()

    assert result == {"counted": 4}
    assert [e.type for e in events[:2]] == ["queued", "started"]
    assert events[-1].type == "completed"
    progress = [e.data["current"] for e in events if e.type == "progress"]
    assert progress[0] == 0
    assert progress[-1] == 4
    assert progress == sorted(progress)
    assert [e.id for e in events] == await stream_ids(redis, settings, job.job_id)
    assert {e.job for e in events} == {job.job_id}
    assert events[1].attempt == 1
    assert job.urls["status"].endswith(f"/jobs/{job.job_id}")
    assert job.urls["events"].endswith(f"/jobs/{job.job_id}/events")


async def test_wait_alone_returns_the_result(client: Client) -> None:
    job = await client.submit("demo.countdown", seconds=0.1, steps=2)

    async with asyncio.timeout(scaled(15)):
        assert await job.wait() == {"counted": 2}


async def test_wait_raises_job_failed_with_the_error(client: Client) -> None:
    job = await client.submit("demo.fail", message="disk full")

    with pytest.raises(JobFailed) as failed:
        async with asyncio.timeout(scaled(15)):
            await job.wait()

    assert failed.value.type == "RuntimeError"
    assert failed.value.message == "disk full"
    assert failed.value.attempt == 1
    assert failed.value.event.type == "failed"
    assert "disk full" in str(failed.value)


async def test_cancel_makes_wait_raise_job_cancelled(client: Client) -> None:
    job = await client.submit("demo.countdown", seconds=10, steps=100)
    async with asyncio.timeout(scaled(15)):
        async for event in job.events():
            if event.type == "progress":
                break

    assert await job.cancel() == "cancelling"
    with pytest.raises(JobCancelled) as cancelled:
        async with asyncio.timeout(scaled(15)):
            await job.wait()

    assert cancelled.value.reason == "cancelled by request"
    with pytest.raises(RequestRejected) as finished:
        await job.cancel()
    assert (finished.value.status_code, finished.value.code) == (409, "job_finished")


async def test_every_token_arrives_exactly_once_in_order(client: Client) -> None:
    text = "one two three four five six seven eight nine ten"
    job = await client.submit("demo.tokens", text=text, delay_ms=5)

    events = await all_events(job.events())

    tokens = [e.data["token"] for e in events if e.type == "data"]
    assert "".join(tokens) == text
    assert [e.data["index"] for e in events if e.type == "data"] == list(range(10))


async def test_attach_to_an_existing_job_and_resume_after_an_id(
    client: Client, redis: Redis, settings: Settings
) -> None:
    submitted = await client.submit("demo.countdown", seconds=0.1, steps=2)
    await submitted.wait()
    ids = await stream_ids(redis, settings, submitted.job_id)

    attached = client.job(submitted.job_id)
    later = await all_events(attached.events(after=ids[1]))
    assert [e.id for e in later] == ids[2:]

    at_the_end = client.job(submitted.job_id)
    assert await all_events(at_the_end.events(after=ids[-1])) == []  # the gateway's 204
    assert await at_the_end.wait() == {"counted": 2}  # read from the job's state instead


async def test_an_unvouched_position_passes_reset_through_then_everything(
    client: Client, redis: Redis, settings: Settings
) -> None:
    job = await client.submit("demo.countdown", seconds=0.1, steps=2)
    await job.wait()

    events = await all_events(job.events(after="1-0"))

    assert events[0].type == "reset"
    assert events[0].is_reset
    assert events[0].id is None
    assert events[0].data["reason"] == "unknown_position"
    assert events[0].data["state"]["status"] == "completed"
    assert [e.id for e in events[1:]] == await stream_ids(redis, settings, job.job_id)


async def test_an_idempotency_key_makes_a_retried_submit_the_same_job(client: Client) -> None:
    # Keys of this test alone: arq keeps its jobs under ids of their own in the whole Redis,
    # whatever queue and prefix each test uses, and another test's "k-1" names the same id.
    key, other_key = f"k-{uuid.uuid4().hex}", f"k-{uuid.uuid4().hex}"
    first = await client.submit_job("demo.countdown", {"seconds": 0.1}, idempotency_key=key)
    again = await client.submit_job("demo.countdown", {"seconds": 0.1}, idempotency_key=key)
    other = await client.submit_job("demo.countdown", {"seconds": 0.1}, idempotency_key=other_key)

    assert again.job_id == first.job_id
    assert other.job_id != first.job_id
    assert await first.wait() == {"counted": 10}


async def test_refusals_raise_instead_of_retrying(client: Client) -> None:
    with pytest.raises(RequestRejected) as unknown_name:
        await client.submit("demo.nope")
    assert (unknown_name.value.status_code, unknown_name.value.code) == (422, "unknown_job")
    assert "demo.countdown" in unknown_name.value.detail["known"]

    with pytest.raises(RequestRejected) as unknown_job:
        async with asyncio.timeout(scaled(5)):
            await all_events(client.job("no-such-job").events())
    assert (unknown_job.value.status_code, unknown_job.value.code) == (404, "job_not_found")

    with pytest.raises(RequestRejected) as bad_position:
        async with asyncio.timeout(scaled(5)):
            await all_events(client.job("no-such-job").events(after="1-0"))
    assert bad_position.value.status_code == 404

    with pytest.raises(RequestRejected) as bad_id:
        await client.job("bad id!").status()
    assert bad_id.value.status_code in (400, 404)


async def test_the_sync_client_for_scripts(stack: Gateway) -> None:
    def script() -> tuple[list[str], object, str]:
        with SyncClient(stack.url, backoff=FAST) as client:
            job = client.submit("demo.countdown", seconds=0.1, steps=2)
            types = [event.type for event in job.events()]
            failing = client.submit("demo.fail", message="nope")
            try:
                failing.wait(timeout_s=15)
            except JobFailed as exc:
                failure = exc.message
            return types, job.wait(timeout_s=15), failure

    types, result, failure = await asyncio.to_thread(script)

    assert types[0] == "queued"
    assert types[-1] == "completed"
    assert result == {"counted": 2}
    assert failure == "nope"
