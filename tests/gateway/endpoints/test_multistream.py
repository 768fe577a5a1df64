"""`GET /events?job=…`: several jobs on one connection, resumable with a composite cursor."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from shared.settings import Settings
from tests.auth_support import (
    holding_alices_one_stream,
)
from tests.conftest import Gateway, StartGateway
from tests.redis_reads import state_reads
from tests.support import ServerSentEvent, collect_events, read_events, scaled, stream_ids, submit

pytestmark = pytest.mark.timeout(60)


async def _stream(
    client: httpx.AsyncClient,
    job_ids: list[str],
    *,
    last_event_id: str | None = None,
    limit: int | None = None,
) -> list[ServerSentEvent]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    params: list[tuple[str, str | int | float | bool | None]] = [("job", j) for j in job_ids]
    events: list[ServerSentEvent] = []
    async with (
        asyncio.timeout(scaled(20)),
        client.stream("GET", "/events", params=params, headers=headers) as response,
    ):
        if response.status_code == 204:
            return events
        assert response.status_code == 200, await response.aread()
        async for event in read_events(response, limit=limit):
            events.append(event)
    return events


def _per_job(events: list[ServerSentEvent]) -> dict[str, list[str]]:
    """Each job's stream ids, read back from the composite cursors."""
    seen: dict[str, list[str]] = {}
    for event in events:
        job_id = event.json()["job"]
        assert event.id is not None
        cursor = dict(entry.split(":") for entry in event.id.split(","))
        seen.setdefault(job_id, []).append(cursor[job_id])
    return seen


async def test_several_jobs_on_one_stream_resume_exactly(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        jobs = [await submit(client, "demo.countdown", seconds=0.4, steps=4) for _ in range(3)]
        received: list[ServerSentEvent] = []
        last_event_id: str | None = None
        # Cut the connection after every third event until the server has nothing left (204).
        while batch := await _stream(client, jobs, last_event_id=last_event_id, limit=3):
            received += batch
            last_event_id = batch[-1].id

    per_job = _per_job(received)
    for job_id in jobs:
        assert per_job[job_id] == await stream_ids(redis, settings, job_id)
    terminal = [event for event in received if event.event == "completed"]
    assert len(terminal) == 3


async def test_resume_with_every_job_finished_is_204(stack: Gateway) -> None:
    async with stack.client() as client:
        jobs = [await submit(client, "demo.countdown", seconds=0.1, steps=1) for _ in range(2)]
        for job_id in jobs:
            await collect_events(client, job_id)
        everything = await _stream(client, jobs)
        response = await client.get(
            "/events",
            params=[("job", job_id) for job_id in jobs],
            headers={"Last-Event-ID": str(everything[-1].id)},
        )

    assert response.status_code == 204


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ([], 400, "invalid_request"),
        ([("job", "../etc")], 400, "invalid_job_id"),
        ([("job", "missing-a"), ("job", "missing-b")], 404, "job_not_found"),
        ([("job", f"j{n}") for n in range(51)], 400, "invalid_request"),
        ([("job", "a"), ("last_event_id", "a:1-0,b")], 400, "invalid_last_event_id"),
        ([("job", "a"), ("last_event_id", "a:1-0,b:2-0")], 400, "invalid_last_event_id"),
        ([("job", "a"), ("last_event_id", "a:9-0-0")], 400, "invalid_last_event_id"),
    ],
)
async def test_bad_multi_stream_requests(
    stack: Gateway,
    params: list[tuple[str, str | int | float | bool | None]],
    status: int,
    code: str,
) -> None:
    async with stack.client() as client:
        response = await client.get("/events", params=httpx.QueryParams(params))

    assert response.status_code == status
    assert response.json()["error"] == code


async def test_fifty_made_up_jobs_are_refused_before_redis_is_read_once_the_slots_are_taken(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    # Naming 50 jobs costs one round trip on the gateway's few shared Redis connections: the
    # key's stream slot is taken first, so a key with none left cannot make it pay for them.
    made_up = httpx.QueryParams([("job", f"r{n}") for n in range(1, 51)])
    holding = holding_alices_one_stream(start_gateway, redis, settings, multi=True)
    async with holding as (_, client, _):
        before = await state_reads(redis)
        refused = await client.get("/events", params=made_up)
        reads = await state_reads(redis) - before

    assert refused.status_code == 429, refused.text
    assert (refused.json()["error"], refused.headers["retry-after"]) == ("too_many_streams", "5")
    assert reads == 0
