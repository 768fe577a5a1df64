"""The client over a WebSocket (`transport="ws"`, `--transport ws`): the same resume loop, so
cut connections are just as invisible, for one job and for several."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from jobwire.client import Backoff, Client
from shared.settings import Settings
from tests.client_support import CutsOnCue, running_proxy
from tests.conftest import Gateway
from tests.support import scaled, stream_ids

FAST = Backoff(initial_s=0.02, maximum_s=0.2)
TEXT = " ".join(f"w{i}" for i in range(40))


async def test_cut_websockets_are_invisible_to_the_consumer(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with (
        running_proxy(stack.url) as proxy,
        Client(proxy.url, backoff=FAST, transport="ws") as client,
    ):
        cuts = CutsOnCue(proxy, cut_after=[3, 10, 20])
        job = await client.submit("demo.tokens", text=TEXT, delay_ms=10)
        async with asyncio.timeout(scaled(20)):
            async for event in job.events(on_connection=cuts.on_connection):
                cuts.saw(event)

    assert proxy.cuts == 3
    assert [e.id for e in cuts.seen] == await stream_ids(redis, settings, job.job_id)
    assert "".join(e.data["token"] for e in cuts.seen if e.type == "data") == TEXT
    opened = [head for head in proxy.requests if head.startswith(b"GET /jobs/")]
    assert len(opened) == 4
    assert all(b"/ws" in head and b"upgrade: websocket" in head.lower() for head in opened)
    for head, position in zip(opened[1:], cuts.resumed_from, strict=True):
        assert f"?last_event_id={position} ".encode() in head


async def test_several_jobs_follow_on_one_websocket(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with Client(stack.url, transport="ws") as client:
        jobs = [await client.submit("demo.countdown", seconds=0.2, steps=2) for _ in range(3)]
        seen: dict[str, list[str | None]] = {job.job_id: [] for job in jobs}
        async with asyncio.timeout(scaled(20)):
            async for event in client.follow(jobs):
                seen[event.job].append(event.id)
        results = [await job.wait() for job in jobs]

    for job in jobs:
        assert seen[job.job_id] == await stream_ids(redis, settings, job.job_id)
    assert results == [{"counted": 2}] * 3
