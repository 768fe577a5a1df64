"""The hub's pub/sub reader against what anyone with Redis access can publish on a job's live
channel: a bad message is skipped and counted, every subscriber of every job still gets every
event exactly once and in order, and a forged id ahead of Redis's clock cannot move a job's
feed past its real events. A reader that fails anyway is restarted and catches up, and
`/readyz` says so while it is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gateway.engine.entry import Entry
from gateway.engine.feed import Feed
from gateway.engine.reader import READY_WITHIN_S
from shared.events import EventType, encode_event, make_event, now_ms
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.conftest import Gateway, StartGateway
from tests.support import (
    RawResponse,
    SSEParser,
    publish_completed,
    publish_progress,
    publish_started,
    raw_get,
    scaled,
    stream_ids,
    wait_until,
)
from tests.watchers import Watch, watch_client, watch_job

pytestmark = pytest.mark.timeout(60)

JOBS = ("poisoned", "bystander")


def _event(event_type: EventType, **fields: object) -> bytes:
    event = {**make_event(event_type, JOBS[0], 1, {"current": 1}), **fields}
    return orjson.dumps(event)


def _ahead(ms: int) -> str:
    return f"{now_ms() + ms}-0"


# What job code could PUBLISH on a job's live channel, by what is wrong with it.
BAD_MESSAGES: dict[str, Callable[[], bytes]] = {
    "no-separator": lambda: b"x",
    "not-json": lambda: f"{now_ms()}-0 {{not json".encode(),
    "not-an-object": lambda: f"{now_ms()}-0 [1, 2]".encode(),
    "no-type": lambda: f"{now_ms()}-0 ".encode() + orjson.dumps({"v": 1, "ts": 1}),
    "no-ts": lambda: f"{now_ms()}-0 ".encode() + orjson.dumps({"v": 1, "type": "progress"}),
    "a-ts-that-is-text": lambda: f"{now_ms()}-0 ".encode() + _event(EventType.PROGRESS, ts="1"),
    "an-unknown-type": lambda: f"{now_ms()}-0 ".encode() + _event(EventType.PROGRESS, type="x"),
    "a-type-that-breaks-the-frame": lambda: (
        f"{now_ms()}-0 ".encode() + _event(EventType.PROGRESS, type="progress\n\nid: 1-1")
    ),
    "a-bad-id": lambda: b"17-x " + _event(EventType.PROGRESS),
    "an-id-past-64-bits": lambda: b"99999999999999999999999-0 " + _event(EventType.PROGRESS),
    "a-progress-seconds-ahead": lambda: f"{_ahead(5_000)} ".encode() + _event(EventType.PROGRESS),
    "a-completed-an-hour-ahead": lambda: (
        f"{_ahead(3_600_000)} ".encode() + _event(EventType.COMPLETED, data={"result": None})
    ),
    "the-largest-id": lambda: (
        f"{2**64 - 1}-{2**64 - 1} ".encode() + _event(EventType.COMPLETED, data={"result": None})
    ),
}


async def _both_jobs_watched(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> tuple[Gateway, Publisher, Keys, list[asyncio.Task[RawResponse]]]:
    """A gateway whose hub watches both jobs, started, through the streams of
    `_watch_both_jobs`."""
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    keys = Keys(settings.key_prefix)
    for job_id in JOBS:
        await publish_started(publisher, job_id)
    return gateway, publisher, keys, await _watch_both_jobs(gateway, redis, keys)


async def _watch_both_jobs(
    gateway: Gateway, redis: Redis, keys: Keys
) -> list[asyncio.Task[RawResponse]]:
    """Two streams of the first job, one of the second, one of both; returns once every one
    is subscribed (a message published from then on reaches the hub)."""
    port = gateway.port
    paths = [f"/jobs/{JOBS[0]}/events"] * 2 + [
        f"/jobs/{JOBS[1]}/events",
        "/events?job=poisoned&job=bystander",
    ]
    watchers = [asyncio.create_task(raw_get(port, path)) for path in paths]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == len(paths))
    channels = [keys.live(job_id) for job_id in JOBS]
    await wait_until(lambda: _subscribed(redis, channels), message="channels subscribed")
    return watchers


async def _subscribed(redis: Redis, channels: list[str]) -> bool:
    return all(count == 1 for _, count in await redis.pubsub_shardnumsub(*channels))


async def _assert_exact(
    watchers: list[asyncio.Task[RawResponse]], redis: Redis, settings: Settings
) -> None:
    """Each stream got its job's stored events, each once and in order, and nothing else."""
    async with asyncio.timeout(scaled(20)):
        first, again, other, both = await asyncio.gather(*watchers)
    stored = {job_id: await stream_ids(redis, settings, job_id) for job_id in JOBS}
    assert first.event_ids() == stored[JOBS[0]]
    assert again.event_ids() == stored[JOBS[0]]
    assert other.event_ids() == stored[JOBS[1]]
    assert _ids_by_job(both) == stored


def _ids_by_job(response: RawResponse) -> dict[str, list[str]]:
    """A multi-job stream's events, per job, as the ids of its own stream (each frame's `id:`
    is the cursor: the id of the event of its job)."""
    ids: dict[str, list[str]] = {job_id: [] for job_id in JOBS}
    for event in SSEParser().feed(response.body):
        job_id = event.json()["job"]
        assert event.id is not None
        cursor = dict(part.split(":") for part in event.id.split(","))
        ids[job_id].append(cursor[job_id])
    return ids


@pytest.mark.parametrize("bad", list(BAD_MESSAGES))
async def test_a_bad_message_on_a_live_channel_is_skipped_and_delivery_goes_on(
    start_gateway: StartGateway, redis: Redis, settings: Settings, bad: str
) -> None:
    gateway, publisher, keys, watchers = await _both_jobs_watched(start_gateway, redis, settings)
    for job_id in JOBS:
        await publish_progress(publisher, job_id, 3)
    await redis.spublish(keys.live(JOBS[0]), BAD_MESSAGES[bad]())
    for job_id in JOBS:
        await publish_progress(publisher, job_id, 3)
        await publish_completed(publisher, job_id)

    await _assert_exact(watchers, redis, settings)
    assert gateway.hub.bad_entries == 1
    async with gateway.client() as client:
        assert await _readiness(client, 200)


async def test_events_whose_ids_run_ahead_of_the_clock_are_delivered_once_held_by_the_stream(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway, publisher, keys, watchers = await _both_jobs_watched(start_gateway, redis, settings)
    # As after Redis's clock stepped back: the stream's ids stay ahead of it from then on.
    payload = encode_event(make_event(EventType.PROGRESS, JOBS[0], 1, {"current": 0}))
    ahead = _ahead(60_000)
    await redis.xadd(keys.events(JOBS[0]), {"e": payload}, id=ahead)
    await redis.spublish(keys.live(JOBS[0]), f"{ahead} ".encode() + payload)
    for job_id in JOBS:
        await publish_progress(publisher, job_id, 3)
        await publish_completed(publisher, job_id)

    await _assert_exact(watchers, redis, settings)
    assert gateway.hub.bad_entries == 0
    assert (await stream_ids(redis, settings, JOBS[0]))[-1].startswith(ahead.split("-")[0])


async def test_a_reader_that_fails_is_restarted_and_catches_up(
    start_gateway: StartGateway, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, publisher, _, watchers = await _both_jobs_watched(start_gateway, redis, settings)
    failing = asyncio.Event()
    record = Feed.record

    def record_unless_failing(feed: Feed, entry: Entry) -> bool:
        if failing.is_set():
            raise RuntimeError("a bug on the reader's path")
        return record(feed, entry)

    monkeypatch.setattr(Feed, "record", record_unless_failing)
    async with gateway.client() as client:
        failing.set()
        await publish_progress(publisher, JOBS[0], 3)  # the reader fails on the first of these
        down = await wait_until(lambda: _readiness(client, 503), message="/readyz 503")
        assert down == {"status": "unavailable", "redis": "pubsub unavailable", "workers": 0}
        await publish_progress(publisher, JOBS[1], 3)
        failing.clear()
        await wait_until(lambda: _readiness(client, 200), message="/readyz 200 again")
        for job_id in JOBS:
            await publish_progress(publisher, job_id, 3)
            await publish_completed(publisher, job_id)

        await _assert_exact(watchers, redis, settings)


async def _readiness(client: httpx.AsyncClient, status: int) -> dict[str, object] | None:
    """`/readyz`'s answer if its status is `status`."""
    response = await client.get("/readyz")
    body: dict[str, object] = response.json()
    return body if response.status_code == status else None


async def test_readyz_answers_503_once_pubsub_is_down_for_longer_than_its_bound(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway, publisher, _, watchers = await _both_jobs_watched(start_gateway, redis, settings)
    (_, allowed), *_ = (await redis.config_get("maxclients")).items()
    async with gateway.client() as client:
        assert await _readiness(client, 200)  # the gateway's command connections are open
        # Redis takes no new connection: the pub/sub one, dropped, cannot come back.
        await redis.config_set("maxclients", 1)  # those connected stay connected
        try:
            await redis.client_kill_filter(_type="pubsub")
            dropped_at = time.monotonic()
            down = await wait_until(lambda: _readiness(client, 503), timeout=READY_WITHIN_S + 5)
            down_after = time.monotonic() - dropped_at
            await publish_progress(publisher, JOBS[0], 3)
        finally:
            await redis.config_set("maxclients", allowed)
        await wait_until(lambda: _readiness(client, 200), message="/readyz 200 again")
    for job_id in JOBS:
        await publish_completed(publisher, job_id)

    assert down == {"status": "unavailable", "redis": "pubsub unavailable", "workers": 0}
    assert down_after >= READY_WITHIN_S, "a reconnect shorter than the bound is still ready"
    await _assert_exact(watchers, redis, settings)


async def test_a_stream_that_lost_what_the_hub_delivered_ends_its_streams_into_a_reset(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    """As after a failover that lost the master's last writes: the stream no longer holds the
    last events clients were shown. The reader's catch-up finds its feed's last id gone, ends
    the job's streams, and each client resuming from an id the stream never had again gets
    `reset` with the snapshot and the stream as it is — not silence, not a wrong sequence."""
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    keys = Keys(settings.key_prefix)
    job_id = JOBS[0]
    await publish_started(publisher, job_id)
    async with watch_client(gateway.url) as client:
        watches = [Watch(job_id) for _ in range(3)]
        watching = [
            asyncio.create_task(watch_job([client], job_id, timeout=20, into=watch))
            for watch in watches
        ]
        await wait_until(lambda: all(len(watch.events) == 2 for watch in watches))
        await publish_progress(publisher, job_id, 5)
        await wait_until(lambda: all(len(watch.events) == 7 for watch in watches))
        lost = [raw for raw, _ in await redis.xrevrange(keys.events(job_id), count=2)]
        await redis.xdel(keys.events(job_id), *lost)
        await redis.client_kill_filter(_type="pubsub")
        await wait_until(lambda: all(watch.made_up for watch in watches), message="resets")
        await publish_progress(publisher, job_id, 3)
        await publish_completed(publisher, job_id)
        await asyncio.gather(*watching)

    stored = [raw.decode() for raw, _ in await redis.xrange(keys.events(job_id))]
    for watch in watches:
        assert [event.event for event in watch.made_up] == ["reset"]
        assert orjson.loads(watch.made_up[0].data)["reason"] == "unknown_position"
        assert watch.ids[7:] == stored, "after the reset: the stream as it now is, exactly"
