"""Where a stream resumes (`gateway.endpoints.resumption`), on both routes: the hub's ring and
Redis vouch alike, ownership is checked however a position is vouched, and the Redis reads of
any number of jobs take one round trip.

Redis's work is measured on the test's own redis-server with `INFO stats commandstats` around
one request while nothing else talks to it (no worker runs here, and the gateways keep their
feeds for the whole test, so no UNSUBSCRIBE runs behind a measurement): the calls of each
command, and `total_reads_processed` — one per request the server read, so a pipeline counts
once and sequential commands once each.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from redis.asyncio import Redis

from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from shared.streamid import StreamId
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    bearer,
    start_keyed_gateway,
    submit_as,
)
from tests.conftest import Gateway, StartGateway
from tests.support import (
    RawResponse,
    ServerSentEvent,
    SSEParser,
    raw_get,
    read_events,
    scaled,
    stream_ids,
)

pytestmark = pytest.mark.timeout(60)

# Feeds (and their rings) outlive their subscribers for the whole test.
LINGER_S = 600.0
BEYOND_ANY_STREAM = "99999999999999-0"

# --- measuring Redis ------------------------------------------------------------------------


@dataclass
class Activity:
    """What the redis-server did between two snapshots, the measuring INFO left out."""

    commands: Counter[str] = field(default_factory=Counter)
    reads: int = 0


async def _snapshot(redis: Redis) -> tuple[Counter[str], int]:
    # One INFO for both sections, so a snapshot is one read of the server's.
    info: dict[str, Any] = await redis.info("stats", "commandstats")  # type: ignore[arg-type]
    calls = Counter(
        {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if name.startswith("cmdstat_")
        }
    )
    return calls, int(info["total_reads_processed"])


@asynccontextmanager
async def redis_activity(redis: Redis) -> AsyncIterator[Activity]:
    activity = Activity()
    calls_before, reads_before = await _snapshot(redis)
    yield activity
    calls_after, reads_after = await _snapshot(redis)
    calls_after["info"] -= 1  # the INFO of the second snapshot
    activity.commands = +(calls_after - calls_before)  # unary + drops zero counts
    activity.reads = reads_after - reads_before - 1


# --- jobs and requests ----------------------------------------------------------------------


async def _create(publisher: Publisher, job_id: str) -> None:
    """A job as a worker leaves it once started: `queued`, `started`."""
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "test.wait", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    assert (await publisher.publish(make_event(EventType.STARTED, job_id, 1, {}))).accepted


async def _finish(publisher: Publisher, job_id: str, steps: int = 4) -> None:
    for current in range(steps):
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": current}))
    await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": job_id}))


def _multi_path(job_ids: Sequence[str], tokens: Sequence[str] = ()) -> str:
    query = [("job", job_id) for job_id in job_ids] + [("token", token) for token in tokens]
    return "/events?" + urlencode(query)


def _cursor(positions: dict[str, str]) -> str:
    return ",".join(f"{job_id}:{position}" for job_id, position in positions.items())


def _per_job(response: RawResponse) -> dict[str, list[str]]:
    """Each job's stream ids in a composite stream, read back from the cursors."""
    seen: dict[str, list[str]] = {}
    for event in SSEParser().feed(response.body):
        if event.id is None:
            continue
        job_id = event.json()["job"]
        cursor = dict(entry.split(":") for entry in event.id.split(","))
        seen.setdefault(job_id, []).append(cursor[job_id])
    return seen


def _resets(response: RawResponse) -> list[ServerSentEvent]:
    return [event for event in SSEParser().feed(response.body) if event.event == "reset"]


async def _watch_while_publishing(
    gateway: Gateway,
    path: str,
    history: int,
    publish: Callable[[], Awaitable[None]],
    headers: dict[str, str] | None = None,
) -> None:
    """One stream on `path`; once the `history` events already stored have arrived (so every
    job's feed is subscribed), `publish` runs and its events reach the hub live, into the
    ring; then read to the end of the stream."""
    async with (
        asyncio.timeout(scaled(20)),
        gateway.client() as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        events = read_events(response)
        for _ in range(history):
            await anext(events)
        await publish()
        async for _ in events:
            pass


@pytest.fixture
def lingering(settings: Settings) -> Settings:
    return settings.replace(hub_linger_s=LINGER_S)


# --- the ring and Redis vouch alike ---------------------------------------------------------


async def test_ring_and_redis_resumes_send_the_same_events(
    start_gateway: StartGateway, redis: Redis, lingering: Settings
) -> None:
    warm = await start_gateway(lingering)
    cold = await start_gateway(lingering)
    publisher = Publisher(redis, lingering)
    jobs = ["alike-a", "alike-b", "alike-c"]
    for job_id in jobs:
        await _create(publisher, job_id)

    async def finish_all() -> None:
        for job_id in jobs:
            await _finish(publisher, job_id)

    await _watch_while_publishing(warm, _multi_path(jobs), 2 * len(jobs), finish_all)
    ids = {job_id: await stream_ids(redis, lingering, job_id) for job_id in jobs}
    in_ring = {job_id: job_ids[2:] for job_id, job_ids in ids.items()}  # published live

    async def both(path: str, position: str, job_count: int) -> RawResponse:
        """The answers of the warm gateway (its ring vouches) and the cold one (Redis does),
        which must be the same bytes."""
        headers = {"Last-Event-ID": position}
        async with redis_activity(redis) as ring_reads:
            by_ring = await raw_get(warm.port, path, headers)
        async with redis_activity(redis) as redis_reads:
            by_redis = await raw_get(cold.port, path, headers)
        assert ring_reads.commands == Counter(), "the ring vouched: no Redis read at all"
        assert redis_reads.commands["hgetall"] == job_count, "Redis vouched"
        assert (by_ring.status, by_ring.body) == (by_redis.status, by_redis.body)
        return by_ring

    for job_id in jobs:
        for index, position in enumerate(in_ring[job_id]):
            assert warm.hub.vouch(job_id, StreamId.parse(position)) is not None
            by_ring = await both(f"/jobs/{job_id}/events", position, 1)
            assert by_ring.event_ids() == in_ring[job_id][index + 1 :]
            assert by_ring.status == (200 if index + 1 < len(in_ring[job_id]) else 204)

    for index in range(len(in_ring[jobs[0]])):
        cursor = {job_id: in_ring[job_id][index] for job_id in jobs}
        by_ring = await both(_multi_path(jobs), _cursor(cursor), len(jobs))
        rest = {job_id: in_ring[job_id][index + 1 :] for job_id in jobs}
        assert _per_job(by_ring) == {job_id: later for job_id, later in rest.items() if later}


# --- reset reasons --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["single", "multi"])
@pytest.mark.parametrize(
    ("job_id", "position", "reason"),
    [
        ("plain", BEYOND_ANY_STREAM, "unknown_position"),
        ("plain", "deleted", "unknown_position"),
        ("trimmed", "0-1", "unknown_position"),
        ("trimmed", None, "history_trimmed"),
        ("plain", None, None),
    ],
)
async def test_a_position_the_stream_cannot_vouch_for_gets_a_reset(
    start_gateway: StartGateway,
    redis: Redis,
    settings: Settings,
    route: str,
    job_id: str,
    position: str | None,
    reason: str | None,
) -> None:
    trimming = settings.replace(stream_maxlen=10)
    gateway = await start_gateway(trimming)
    publisher = Publisher(redis, trimming)
    for name, steps in (("plain", 4), ("companion", 4), ("trimmed", 300)):
        await _create(publisher, name)
        await _finish(publisher, name, steps)
    if position == "deleted":
        # An id below the stream's last one that the stream does not hold (any more).
        position = (await stream_ids(redis, trimming, "plain"))[2]
        assert await redis.xdel(Keys(trimming.key_prefix).events("plain"), position) == 1
    ids = {name: await stream_ids(redis, trimming, name) for name in ("plain", "trimmed")}
    assert len(ids["trimmed"]) < 300, "the stream was trimmed"
    companion = await stream_ids(redis, trimming, "companion")

    if route == "single":
        headers = {} if position is None else {"Last-Event-ID": position}
        response = await raw_get(gateway.port, f"/jobs/{job_id}/events", headers)
        received = {job_id: response.event_ids()}
    else:
        cursor = {"companion": companion[1]} | ({} if position is None else {job_id: position})
        path = _multi_path(["companion", job_id])
        response = await raw_get(gateway.port, path, {"Last-Event-ID": _cursor(cursor)})
        received = _per_job(response)
        assert received["companion"] == companion[2:], "the other job resumes exactly"

    assert response.status == 200
    assert received[job_id] == ids[job_id], "then everything the stream holds"
    resets = _resets(response)
    if reason is None:
        assert resets == []
        return
    assert [reset.id for reset in resets] == [None], "a reset never moves the position"
    data = resets[0].json()
    assert (data["job"], data["reason"]) == (job_id, reason)
    assert data["state"]["status"] == "completed"
    assert data["state"]["last_event_id"] == ids[job_id][-1]


async def test_a_job_whose_stream_is_gone_is_unknown(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    await _create(Publisher(redis, settings), "expiring")
    await redis.delete(Keys(settings.key_prefix).events("expiring"))

    single = await raw_get(gateway.port, "/jobs/expiring/events")
    multi = await raw_get(gateway.port, _multi_path(["expiring"]))

    assert single.status == multi.status == 404
    assert orjson.loads(single.body) == {"error": "job_not_found", "detail": "no job expiring"}
    assert orjson.loads(multi.body) == {
        "error": "job_not_found",
        "detail": {"unknown": ["expiring"]},
    }


# --- ownership, however the position is vouched ---------------------------------------------


@pytest.fixture
async def auth_gateway(start_gateway: StartGateway, redis: Redis, lingering: Settings) -> Gateway:
    return await start_keyed_gateway(start_gateway, redis, lingering)


async def _submitted_and_watched(
    gateway: Gateway, publisher: Publisher, count: int, watch_with: str = "key"
) -> list[dict[str, str]]:
    """`count` jobs of alice's, run to completion while one stream of hers watched them, so
    the gateway's ring holds their events after `queued`."""
    async with gateway.client() as client:
        answers = [await submit_as(client, ALICE_KEY) for _ in range(count)]
    jobs = [answer["job_id"] for answer in answers]

    async def run_all() -> None:
        for job_id in jobs:
            assert (await publisher.publish(make_event(EventType.STARTED, job_id, 1, {}))).accepted
            await _finish(publisher, job_id)

    if watch_with == "key":
        path, headers = _multi_path(jobs), bearer(ALICE_KEY)
    else:
        path, headers = _multi_path(jobs, [a["watch_token"] for a in answers]), None
    await _watch_while_publishing(gateway, path, len(jobs), run_all, headers)
    return answers


async def test_another_keys_job_is_unknown_even_when_the_ring_vouches(
    auth_gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    publisher = Publisher(redis, lingering)
    (answer,) = await _submitted_and_watched(auth_gateway, publisher, 1)
    job_id = answer["job_id"]
    ids = await stream_ids(redis, lingering, job_id)
    position = ids[2]
    assert auth_gateway.hub.vouch(job_id, StreamId.parse(position)) is not None
    port = auth_gateway.port
    single, multi = f"/jobs/{job_id}/events", _multi_path([job_id])

    bobs_single = await raw_get(port, single, bearer(BOB_KEY) | {"Last-Event-ID": position})
    bobs_multi = await raw_get(
        port, multi, bearer(BOB_KEY) | {"Last-Event-ID": _cursor({job_id: position})}
    )
    async with redis_activity(redis) as alices_reads:
        alices = await raw_get(port, single, bearer(ALICE_KEY) | {"Last-Event-ID": position})

    assert bobs_single.status == bobs_multi.status == 404
    assert orjson.loads(bobs_single.body) == {
        "error": "job_not_found",
        "detail": f"no job {job_id}",
    }
    assert orjson.loads(bobs_multi.body) == {
        "error": "job_not_found",
        "detail": {"unknown": [job_id]},
    }
    assert alices.event_ids() == ids[3:]
    # The ring vouched; only the owner was read, in one round trip.
    assert alices_reads.commands == Counter({"hget": 1})
    assert alices_reads.reads == 1


async def test_a_token_resume_from_the_ring_reads_nothing_from_redis(
    auth_gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    publisher = Publisher(redis, lingering)
    answers = await _submitted_and_watched(auth_gateway, publisher, 2, watch_with="token")
    jobs = [answer["job_id"] for answer in answers]
    tokens = [answer["watch_token"] for answer in answers]
    ids = {job_id: await stream_ids(redis, lingering, job_id) for job_id in jobs}
    middle = {job_id: job_ids[3] for job_id, job_ids in ids.items()}
    last = {job_id: job_ids[-1] for job_id, job_ids in ids.items()}
    port = auth_gateway.port
    first = jobs[0]

    async with redis_activity(redis) as token_reads:
        single = await raw_get(
            port, f"/jobs/{first}/events?token={tokens[0]}", {"Last-Event-ID": middle[first]}
        )
        multi = await raw_get(port, _multi_path(jobs, tokens), {"Last-Event-ID": _cursor(middle)})
        finished = await raw_get(port, _multi_path(jobs, tokens), {"Last-Event-ID": _cursor(last)})
    async with redis_activity(redis) as key_reads:
        by_key = await raw_get(
            port, _multi_path(jobs), bearer(ALICE_KEY) | {"Last-Event-ID": _cursor(middle)}
        )

    assert single.event_ids() == ids[first][4:]
    assert _per_job(multi) == {job_id: job_ids[4:] for job_id, job_ids in ids.items()}
    assert finished.status == 204
    assert (token_reads.commands, token_reads.reads) == (Counter(), 0)
    assert by_key.body == multi.body
    assert (key_reads.commands, key_reads.reads) == (Counter({"hget": 2}), 1)


# --- one round trip for N jobs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "count"), [("single", 1), ("multi", 1), ("multi", 3), ("multi", 10)]
)
async def test_the_reads_of_n_jobs_take_one_round_trip(
    start_gateway: StartGateway, redis: Redis, lingering: Settings, route: str, count: int
) -> None:
    gateway = await start_gateway(lingering)  # no stream ever opened: its rings are empty
    publisher = Publisher(redis, lingering)
    jobs = [f"trip-{index}" for index in range(count)]
    for job_id in jobs:
        await _create(publisher, job_id)
        await _finish(publisher, job_id)
    last = {job_id: (await stream_ids(redis, lingering, job_id))[-1] for job_id in jobs}
    if route == "single":
        path, position = f"/jobs/{jobs[0]}/events", last[jobs[0]]
    else:
        path, position = _multi_path(jobs), _cursor(last)

    # The first request opens the gateway's pooled connection (CLIENT SETNAME and the like).
    assert (await raw_get(gateway.port, path, {"Last-Event-ID": position})).status == 204
    async with redis_activity(redis) as activity:
        response = await raw_get(gateway.port, path, {"Last-Event-ID": position})

    assert response.status == 204
    assert activity.commands == Counter({"hgetall": count, "xrange": count})
    assert activity.reads == 1


async def test_a_mixed_resume_reads_owners_and_the_rest_in_one_round_trip(
    auth_gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    publisher = Publisher(redis, lingering)
    watched = [
        answer["job_id"] for answer in await _submitted_and_watched(auth_gateway, publisher, 2)
    ]
    async with auth_gateway.client() as client:
        unwatched = (await submit_as(client, ALICE_KEY))["job_id"]
    assert (await publisher.publish(make_event(EventType.STARTED, unwatched, 1, {}))).accepted
    await _finish(publisher, unwatched)
    jobs = [*watched, unwatched]
    last = {job_id: (await stream_ids(redis, lingering, job_id))[-1] for job_id in jobs}
    headers = bearer(ALICE_KEY) | {"Last-Event-ID": _cursor(last)}
    port = auth_gateway.port

    async with redis_activity(redis) as activity:
        alices = await raw_get(port, _multi_path(jobs), headers)
    bobs = await raw_get(
        port, _multi_path(jobs), bearer(BOB_KEY) | {"Last-Event-ID": _cursor(last)}
    )

    assert alices.status == 204
    assert activity.commands == Counter({"hget": 2, "hgetall": 1, "xrange": 1})
    assert activity.reads == 1
    assert bobs.status == 404
    assert orjson.loads(bobs.body) == {"error": "job_not_found", "detail": {"unknown": jobs}}
