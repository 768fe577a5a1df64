"""The client's resume loop through a proxy that drops the network on cue: the events a
consumer sees are exactly the stream's, however often the connection is cut."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from redis.asyncio import Redis

from jobwire.client import Backoff, Client, ConnectionState, GatewayUnreachable, JobEvent
from jobwire.client.stream import StreamOptions
from shared.settings import Settings
from tests.client_support import CutsOnCue, running_proxy
from tests.conftest import Gateway, StartGateway
from tests.support import free_port, scaled, stream_ids

FAST = Backoff(initial_s=0.02, maximum_s=0.2)
TEXT = " ".join(f"w{i}" for i in range(40))


async def test_cut_connections_are_invisible_to_the_consumer(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with running_proxy(stack.url) as proxy, Client(proxy.url, backoff=FAST) as client:
        cuts = CutsOnCue(proxy, cut_after=[3, 10, 20, 30])
        job = await client.submit("demo.tokens", text=TEXT, delay_ms=10)
        async with asyncio.timeout(scaled(20)):
            async for event in job.events(on_connection=cuts.on_connection):
                cuts.saw(event)

    assert proxy.cuts == 4
    assert [e.id for e in cuts.seen] == await stream_ids(redis, settings, job.job_id)
    assert "".join(e.data["token"] for e in cuts.seen if e.type == "data") == TEXT
    lost = [s for s in cuts.states if not s.connected]
    assert len(lost) == 4
    assert all(s.retry_in_s is not None and s.retry_in_s <= 0.2 for s in lost)
    resumes = [head.lower() for head in proxy.requests if head.startswith(b"GET /jobs/")]
    assert len(resumes) == 5
    assert b"last-event-id" not in resumes[0]
    for head, position in zip(resumes[1:], cuts.resumed_from, strict=True):
        assert f"last-event-id: {position}\r\n".encode() in head


async def test_a_gateway_replaced_mid_job_is_invisible_to_the_consumer(
    stack: Gateway, start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    """A deploy: the first gateway shuts down (ending its streams), another one takes over."""
    replacement = await start_gateway()
    async with running_proxy(stack.url) as proxy, Client(proxy.url, backoff=FAST) as client:
        job = await client.submit("demo.tokens", text=TEXT, delay_ms=10)
        seen: list[JobEvent] = []
        async with asyncio.timeout(scaled(20)):
            async for event in job.events():
                seen.append(event)
                if len(seen) == 8:
                    proxy.target_url = replacement.url
                    stack.server.should_exit = True

    assert [e.id for e in seen] == await stream_ids(redis, settings, job.job_id)
    assert seen[-1].type == "completed"
    resumes = [h for h in proxy.requests if b"\r\nLast-Event-ID: " in h]
    assert len(resumes) >= 1
    await asyncio.wait_for(stack.task, timeout=scaled(10))


async def test_non_200_answers_are_retried_until_the_gateway_is_back(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    states: list[ConnectionState] = []
    bad_gateway = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    async with running_proxy(stack.url) as proxy, Client(proxy.url, backoff=FAST) as client:
        job = await client.submit("demo.tokens", text=TEXT, delay_ms=10)
        seen: list[JobEvent] = []

        def on_connection(state: ConnectionState) -> None:
            states.append(state)
            if sum(not s.connected for s in states) == 3:
                proxy.answer_with = None  # the deploy is over

        async with asyncio.timeout(scaled(20)):
            async for event in job.events(on_connection=on_connection):
                seen.append(event)
                if len(seen) == 5:
                    proxy.answer_with = bad_gateway
                    proxy.cut()

    assert [e.id for e in seen] == await stream_ids(redis, settings, job.job_id)
    reasons = [s.reason for s in states if not s.connected]
    assert reasons[1:] == ["HTTP 502", "HTTP 502"]
    failures = [s.failures for s in states if not s.connected]
    assert failures == [1, 2, 3]


async def test_giving_up_is_an_option() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with Client(nowhere, backoff=FAST, give_up_after_s=0.3) as client:
        with pytest.raises(GatewayUnreachable) as unreachable:
            await asyncio.wait_for(client.job("some-job").wait(), timeout=scaled(10))

    assert "ConnectError" in str(unreachable.value)
    assert isinstance(unreachable.value, ConnectionError)


async def test_credentials_go_in_the_authorization_header(stack: Gateway) -> None:
    async with running_proxy(stack.url) as proxy:
        async with Client(proxy.url, api_key="key-1", backoff=FAST) as client:
            job = await client.submit("demo.countdown", seconds=0.05, steps=1)
            await client.job(job.job_id, watch_token="token-1").wait()
        async with Client(proxy.url, backoff=FAST) as keyless:
            await keyless.job(job.job_id, watch_token="token-1").wait()

    heads = [head.lower() for head in proxy.requests]
    assert heads[0].startswith(b"post /jobs ")
    assert b"authorization: bearer key-1\r\n" in heads[0]
    watches = [
        head for head in heads if head.startswith(f"get /jobs/{job.job_id}/events ".encode())
    ]
    assert len(watches) == 2
    assert b"authorization: bearer key-1\r\n" in watches[0]  # the key outlives any token
    assert b"authorization: bearer token-1\r\n" in watches[1]


def test_a_quiet_stream_is_given_up_only_after_missing_several_default_pings() -> None:
    pings_missed = StreamOptions().read_timeout_s / Settings().ping_s

    assert pings_missed >= 2
    default = inspect.signature(Client).parameters["read_timeout_s"].default
    assert default == StreamOptions().read_timeout_s


async def test_several_jobs_on_one_connection_survive_cuts_exactly(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with running_proxy(stack.url) as proxy, Client(proxy.url, backoff=FAST) as client:
        cuts = CutsOnCue(proxy, cut_after=[6, 20, 45])
        jobs = [await client.submit("demo.tokens", text=TEXT, delay_ms=10) for _ in range(3)]
        async with asyncio.timeout(scaled(30)):
            async for event in client.follow(jobs, on_connection=cuts.on_connection):
                cuts.saw(event)
        requests_before_wait = len(proxy.requests)
        results = [await job.wait() for job in jobs]

    def cursor_of(seen: list[JobEvent]) -> str:
        last = {event.job: event.id for event in seen if event.id is not None}
        return ",".join(f"{job.job_id}:{last[job.job_id]}" for job in jobs)

    # What each reconnect must send: the cursor when it was lost.
    cursors = [cursor_of(cuts.seen[:count]) for count in cuts.lost_after]
    assert proxy.cuts == 3
    for job in jobs:
        got = [event.id for event in cuts.seen if event.job == job.job_id]
        assert got == await stream_ids(redis, settings, job.job_id)
    # Each job recorded what the stream delivered: waiting asks the gateway nothing more.
    assert len(proxy.requests) == requests_before_wait
    terminals = [job.terminal_event for job in jobs]
    assert [event.type if event else None for event in terminals] == ["completed"] * 3
    assert results == [event.data["result"] for event in terminals if event]
    streams = [head for head in proxy.requests if head.startswith(b"GET /events?")]
    assert len(streams) == 4
    query = "&".join(f"job={job.job_id}" for job in jobs)
    assert all(head.startswith(f"GET /events?{query} ".encode()) for head in streams)
    assert b"last-event-id" not in streams[0].lower()
    for head, cursor in zip(streams[1:], cursors, strict=True):
        assert f"\r\nlast-event-id: {cursor}\r\n".encode() in head.lower()


async def test_a_run_survives_cuts_as_one_job_submitted_once(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with running_proxy(stack.url) as proxy, Client(proxy.url, backoff=FAST) as client:
        cuts = CutsOnCue(proxy, cut_after=[1, 10, 25])
        async with asyncio.timeout(scaled(30)):
            events = client.run_job(
                "demo.tokens", {"text": TEXT, "delay_ms": 10}, on_connection=cuts.on_connection
            )
            async for event in events:
                cuts.saw(event)

    seen = cuts.seen
    job_id = seen[0].job
    assert [event.id for event in seen] == await stream_ids(redis, settings, job_id)
    assert [event.type for event in seen].count("started") == 1
    assert "".join(e.data["token"] for e in seen if e.type == "data") == TEXT
    posts = [head.lower() for head in proxy.requests if head.startswith(b"POST /jobs ")]
    assert len(posts) == 4
    keys = {line for head in posts for line in head.split(b"\r\n") if b"idempotency-key" in line}
    assert len(keys) == 1
    assert b"last-event-id" not in posts[0]
    for head, position in zip(posts[1:], cuts.resumed_from, strict=True):
        assert f"\r\nlast-event-id: {position}\r\n".encode() in head
