"""Redis restarted under a running job: a private redis-server with an append-only file is
stopped and started again on the same port while a worker process publishes and clients stream
through a gateway process. Subscribers see a pause, then every event exactly once; the worker
carries on publishing and taking jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from shared.clients import create_redis
from shared.events import decode_event
from shared.keys import Keys
from shared.settings import Settings
from shared.streamid import StreamId
from tests.processes import ProcessGroup
from tests.support import submit, wait_until
from tests.watchers import Watch, verify, watch_client, watch_job

pytestmark = pytest.mark.timeout(60)

WATCHERS = 10
TOKENS = 60
DOWNTIME_S = 2.0


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


async def test_streams_resume_exactly_and_the_worker_carries_on_across_a_redis_restart(
    processes: ProcessGroup, settings: Settings
) -> None:
    server = processes.redis()
    settings = settings.replace(redis_url=server.url)
    worker, gateway = await asyncio.gather(processes.worker(settings), processes.gateway(settings))
    redis = create_redis(server.url)
    keys = Keys(settings.key_prefix)
    text = " ".join(f"word{index}" for index in range(TOKENS))
    try:
        async with gateway.client() as api:
            job_id = await submit(api, "demo.tokens", text=text, delay_ms=50)
        clients = [watch_client(gateway.url) for _ in range(WATCHERS)]
        watches = [Watch(job_id) for _ in range(WATCHERS)]
        tasks = [
            asyncio.create_task(watch_job([client], job_id, into=watch, timeout=40))
            for client, watch in zip(clients, watches, strict=True)
        ]

        await wait_until(
            lambda: all(len(watch.events) >= 10 for watch in watches),
            message="every watcher streaming",
        )
        restarted_at_ms = int(time.time() * 1000)
        await server.restart(DOWNTIME_S)
        back_at_ms = int(time.time() * 1000)
        results = await asyncio.gather(*tasks)
        for client in clients:
            await client.aclose()

        entries = await redis.xrange(keys.events(job_id))
        events = [decode_event(fields[b"e"]) for _, fields in entries]
        verdicts = [await verify(watch, redis, keys) for watch in results]
        async with gateway.client() as api:
            later = await submit(api, "demo.tokens", text="after the restart", delay_ms=1)
        await wait_until(
            lambda: _ended(redis, keys, later), timeout=15, message="a job taken after restart"
        )
    finally:
        await redis.aclose()

    assert all(verdict.exact for verdict in verdicts), verdicts
    # While Redis is away a new watcher may be told 503, never a 500.
    assert all(set(watch.statuses) <= {200, 204, 503} for watch in results)
    assert [event["type"] for event in events] == [
        "queued",
        "started",
        *["data"] * TOKENS,
        "completed",
    ]
    assert [event["data"]["index"] for event in events if event["type"] == "data"] == list(
        range(TOKENS)
    )
    assert {event["attempt"] for event in events[1:]} == {1}
    ids = [StreamId.parse(raw.decode()) for raw, _ in entries]
    # The restart happened mid-job: events were written before it and after it.
    assert any(stream_id.ms < restarted_at_ms for stream_id in ids)
    assert any(stream_id.ms > back_at_ms for stream_id in ids)
    assert worker.running
    assert gateway.running


async def _ended(redis: Redis, keys: Keys, job_id: str) -> bool:
    entries = await redis.xrevrange(keys.events(job_id), count=1)
    return bool(entries) and decode_event(entries[0][1][b"e"])["type"] == "completed"


async def test_requests_while_redis_is_down_get_503_not_500(
    processes: ProcessGroup, settings: Settings
) -> None:
    server = processes.redis()
    settings = settings.replace(redis_url=server.url)
    gateway = await processes.gateway(settings)
    requests = [
        ("GET", "/jobs/some-job", None),
        ("GET", "/jobs/some-job/events", None),
        ("DELETE", "/jobs/some-job", None),
        ("POST", "/jobs", {"name": "demo.countdown"}),
    ]
    async with gateway.client() as api:
        server.stop()
        try:
            answers = [await _answer(api, method, path, body) for method, path, body in requests]
        finally:
            server.start()

    assert answers == [(503, "unavailable", True)] * len(requests), answers


async def _answer(
    api: httpx.AsyncClient, method: str, path: str, body: object
) -> tuple[int, str, bool] | str:
    """(status, error code, has Retry-After), or how the request failed."""
    try:
        reply = await api.request(method, path, json=body)
    except httpx.TransportError as exc:
        return f"{method} {path}: {type(exc).__name__}"
    code = reply.json().get("error", "") if reply.content else ""
    return reply.status_code, code, "retry-after" in reply.headers
