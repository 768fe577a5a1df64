"""`GET /jobs` against a real gateway and Redis: each key's own jobs, newest first, page after
page with nothing twice and nothing missing; filters; refusals; expired jobs dropped from the
list; a bounded list that expires; and the fresh watch token `GET /jobs/{id}` hands a key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.endpoints.listing import MAX_STATES_READ, PENDING_GRACE_MS
from shared.catalog import JobSpec, advertise
from shared.events import now_ms
from shared.keys import Keys
from shared.settings import Settings
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    WAITING_JOB,
    advertise_waiting_job,
    bearer,
    start_keyed_gateway,
    submit_as,
)
from tests.conftest import Gateway, StartGateway
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)

OTHER_JOB = "test.other"


@pytest.fixture
async def gateway(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    other = JobSpec(name=OTHER_JOB, params=[], required=[], accepts_any=True, doc="never runs")
    await advertise(redis, Keys(settings.key_prefix), [other])
    return await start_keyed_gateway(start_gateway, redis, settings, submits_per_minute=0)


async def list_all(client: httpx.AsyncClient, key: str, **params: Any) -> list[list[str]]:
    """The job ids of every page, following `next` to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/jobs", params=query, headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["job_id"] for item in body["jobs"]])
        cursor = body["next"]
        if cursor is None:
            return pages


async def test_each_key_sees_only_its_own_jobs_newest_first_page_by_page(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        alice: list[str] = []
        bob: list[str] = []
        for index in range(7):
            alice.append((await submit_as(client, ALICE_KEY, n=index))["job_id"])
            if index % 2:
                bob.append((await submit_as(client, BOB_KEY, n=index))["job_id"])

        assert await list_all(client, ALICE_KEY, limit=3) == [
            alice[::-1][0:3],
            alice[::-1][3:6],
            alice[::-1][6:7],
        ]
        assert await list_all(client, BOB_KEY, limit=2) == [bob[::-1][0:2], bob[::-1][2:3]]
        # A page that ends exactly at the end of the list says so.
        assert await list_all(client, BOB_KEY, limit=3) == [bob[::-1]]

        # Jobs submitted between two pages come first on the next listing, and shift nothing.
        first = (await client.get("/jobs", params={"limit": 4}, headers=bearer(ALICE_KEY))).json()
        newer = (await submit_as(client, ALICE_KEY))["job_id"]
        rest = (
            await client.get(
                "/jobs", params={"limit": 4, "cursor": first["next"]}, headers=bearer(ALICE_KEY)
            )
        ).json()
        assert [item["job_id"] for item in first["jobs"] + rest["jobs"]] == alice[::-1]
        assert rest["next"] is None
        assert (await list_all(client, ALICE_KEY))[0][0] == newer


async def test_each_item_is_the_jobs_state_with_a_watch_token_that_opens_it(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY, size=3))["job_id"]
        listed = (await client.get("/jobs", headers=bearer(ALICE_KEY))).json()["jobs"]
        state = (await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY))).json()
        token = listed[0].pop("watch_token")
        state.pop("watch_token")

        assert listed == [state]
        described = {key: state[key] for key in ("name", "args", "status", "owner")}
        assert described == {
            "name": WAITING_JOB,
            "args": {"size": 3},
            "status": "queued",
            "owner": "alice",
        }
        by_token = await client.get(f"/jobs/{job_id}", params={"token": token})
        assert by_token.status_code == 200
        # A token holder reads the state, and is handed no token: a token cannot extend itself.
        assert by_token.json()["watch_token"] is None
        async with client.stream("GET", f"/jobs/{job_id}/events", params={"token": token}) as s:
            assert s.status_code == 200


async def test_filters_by_status_and_name(gateway: Gateway) -> None:
    async with gateway.client() as client:
        waiting = [(await submit_as(client, ALICE_KEY))["job_id"] for _ in range(3)]
        other = (await submit_as(client, ALICE_KEY, OTHER_JOB))["job_id"]
        cancelled = waiting[1]
        response = await client.delete(f"/jobs/{cancelled}", headers=bearer(ALICE_KEY))
        assert response.json()["status"] == "cancelled"
        await submit_as(client, BOB_KEY, OTHER_JOB)

        assert await list_all(client, ALICE_KEY, status="cancelled") == [[cancelled]]
        queued = [other, waiting[2], waiting[0]]
        assert await list_all(client, ALICE_KEY, status="queued", limit=2) == [
            queued[:2],
            queued[2:],
        ]
        everything = [other, *waiting[::-1]]
        assert await list_all(client, ALICE_KEY, status=["queued", "cancelled"]) == [everything]
        assert await list_all(client, ALICE_KEY, status="queued,cancelled") == [everything]
        assert await list_all(client, ALICE_KEY, name=OTHER_JOB) == [[other]]
        assert await list_all(client, ALICE_KEY, name=OTHER_JOB, status="cancelled") == [[]]
        assert await list_all(client, ALICE_KEY, name="nothing.like.it") == [[]]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"limit": "0"}, "limit: a whole number from 1 to 100, got '0'"),
        ({"limit": "abc"}, "limit: a whole number from 1 to 100, got 'abc'"),
        ({"limit": "101"}, "limit: a whole number from 1 to 100, got '101'"),
        (
            {"status": "queued,done"},
            "status: 'done' is not one of cancelled, completed, failed, queued, retrying, running",
        ),
        ({"name": ""}, "name: give one job name"),
        (
            {"cursor": "not a cursor"},
            "cursor: not a cursor this gateway gave (use `next` as it is)",
        ),
        ({"cursor": "MTIzLg"}, "cursor: not a cursor this gateway gave (use `next` as it is)"),
    ],
)
async def test_bad_parameters_are_refused(
    gateway: Gateway, query: dict[str, str], detail: str
) -> None:
    async with gateway.client() as client:
        response = await client.get("/jobs", params=query, headers=bearer(ALICE_KEY))

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_query", "detail": detail}


async def test_a_key_is_needed(gateway: Gateway) -> None:
    async with gateway.client() as client:
        assert (await client.get("/jobs")).status_code == 401
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        token = (await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY))).json()
        response = await client.get("/jobs", headers=bearer(token["watch_token"]))

    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "detail": "the API key is not valid"}


async def test_expired_jobs_are_dropped_from_the_list_when_read(
    gateway: Gateway, settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    index = keys.jobs_of("alice")
    async with gateway.client() as client:
        jobs = [(await submit_as(client, ALICE_KEY))["job_id"] for _ in range(3)]
        # Expired: submitted a while ago, its state gone.
        await redis.delete(keys.state(jobs[1]), keys.events(jobs[1]))
        await redis.zadd(index, {jobs[1]: now_ms() - 2 * PENDING_GRACE_MS})
        # Listed, but its job not created yet (or never: a create that failed long ago).
        await redis.zadd(index, {"being-created": now_ms(), "never-created": 1})

        assert await list_all(client, ALICE_KEY) == [[jobs[2], jobs[0]]]

    listed = await redis.zrange(index, 0, -1)
    assert [member.decode() for member in listed] == [jobs[0], jobs[2], "being-created"]


async def test_the_list_is_bounded_and_expires(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    bounded = {"jobs_listed_per_key": 3, "retention_s": 100}
    gateway = await start_keyed_gateway(start_gateway, redis, settings, **bounded)
    async with gateway.client() as client:
        jobs = [(await submit_as(client, ALICE_KEY))["job_id"] for _ in range(5)]

        assert await list_all(client, ALICE_KEY) == [jobs[:1:-1]]
    index = Keys(settings.key_prefix).jobs_of("alice")
    assert await redis.zcard(index) == 3
    # As long as a job's state may live (7 x the retention, renewed by its events).
    assert 690 < await redis.ttl(index) <= 700


async def test_one_request_reads_a_bounded_number_of_states_then_says_where_to_go_on(
    gateway: Gateway, settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    index = keys.jobs_of("alice")
    async with gateway.client() as client:
        wanted = (await submit_as(client, ALICE_KEY, OTHER_JOB))["job_id"]
        long_ago = now_ms() - 10 * PENDING_GRACE_MS
        await redis.zadd(index, {wanted: long_ago})
        # Newer entries of jobs long expired, more than one request reads.
        gone = {f"gone-{n}": long_ago + 1 + n for n in range(MAX_STATES_READ + 100)}
        await redis.zadd(index, gone)

        first = await client.get("/jobs", params={"name": OTHER_JOB}, headers=bearer(ALICE_KEY))
        assert first.json()["jobs"] == []
        assert first.json()["next"] is not None
        assert await redis.zcard(index) == 101
        second = await client.get(
            "/jobs",
            params={"name": OTHER_JOB, "cursor": first.json()["next"]},
            headers=bearer(ALICE_KEY),
        )

    assert [item["job_id"] for item in second.json()["jobs"]] == [wanted]
    assert second.json()["next"] is None
    assert await redis.zcard(index) == 1


async def test_a_fresh_token_from_the_key_opens_the_stream_after_the_first_expired(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    gateway = await start_keyed_gateway(start_gateway, redis, settings, token_ttl_s=2)
    async with gateway.client() as client:
        answer = await submit_as(client, ALICE_KEY)
        job_id, first = answer["job_id"], answer["watch_token"]

        async def expired() -> bool:
            response = await client.get(f"/jobs/{job_id}", params={"token": first})
            return response.status_code == 401

        await wait_until(expired, timeout=5, message="the first token expired")
        refused = await client.get(f"/jobs/{job_id}/events", params={"token": first})
        assert refused.json() == {"error": "unauthorized", "detail": "the watch token has expired"}
        fresh = (await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY))).json()
        async with client.stream(
            "GET", f"/jobs/{job_id}/events", params={"token": fresh["watch_token"]}
        ) as stream:
            assert stream.status_code == 200


async def test_with_access_control_off_every_job_is_listed(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    await advertise_waiting_job(redis, settings)
    gateway = await start_gateway(settings)
    async with gateway.client() as client:
        jobs = [
            (await client.post("/jobs", json={"name": WAITING_JOB})).json()["job_id"]
            for _ in range(2)
        ]
        body = (await client.get("/jobs")).json()

    assert [item["job_id"] for item in body["jobs"]] == jobs[::-1]
    assert [item["watch_token"] for item in body["jobs"]] == [None, None]
    assert body["next"] is None
