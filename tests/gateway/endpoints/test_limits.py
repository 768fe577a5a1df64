"""Per-key limits: open streams, stream requests and submit rate, counted per gateway process;
429 with Retry-After above them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from typing import cast

import httpx
import pytest
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import STREAM_RETRY_AFTER_S, Limits, TokenHolder
from shared.settings import Settings
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    WAITING_JOB,
    bearer,
    start_keyed_gateway,
    submit_as,
    with_auth,
)
from tests.conftest import Gateway, StartGateway
from tests.redis_reads import state_reads
from tests.support import (
    ServerSentEvent,
    collect_events,
    event_types,
    read_events,
    scaled,
    stream_ids,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _refused(call: object) -> APIError:
    assert callable(call)
    with pytest.raises(APIError) as refused:
        call()
    assert refused.value.status_code == 429
    return refused.value


# --- the counting ---------------------------------------------------------------------------


def test_submits_burst_up_to_the_rate_then_wait_for_a_refill() -> None:
    clock = Clock()
    limits = Limits(Settings(submits_per_minute=3), clock)

    for _ in range(3):
        limits.take_submit("alice")
    refused = _refused(lambda: limits.take_submit("alice"))
    limits.take_submit("bob")  # keys do not share a bucket
    clock.now += 19.9
    still = _refused(lambda: limits.take_submit("alice"))
    clock.now += 0.1  # 20 s: one submit's worth at 3 per minute
    limits.take_submit("alice")

    assert refused.code == "too_many_submits"
    assert refused.headers == {"Retry-After": "20"}
    assert still.headers == {"Retry-After": "1"}
    _refused(lambda: limits.take_submit("alice"))


def test_a_quiet_key_refills_to_one_minute_of_submits_no_more() -> None:
    clock = Clock()
    limits = Limits(Settings(submits_per_minute=2), clock)
    limits.take_submit("alice")
    clock.now += 3_600

    limits.take_submit("alice")
    limits.take_submit("alice")
    _refused(lambda: limits.take_submit("alice"))


def test_stream_slots_are_counted_per_key_and_given_back() -> None:
    limits = Limits(Settings(max_streams_per_key=2))

    first = limits.stream_slot({"alice"})
    second = limits.stream_slot({"alice", "bob"})
    refused = _refused(lambda: limits.stream_slot({"bob", "alice"}))
    bobs = limits.stream_slot({"bob"})

    assert refused.code == "too_many_streams"
    assert refused.headers == {"Retry-After": str(STREAM_RETRY_AFTER_S)}
    assert (limits.open_streams("alice"), limits.open_streams("bob")) == (2, 2)
    first.release()
    first.release()  # giving back twice counts once
    assert limits.open_streams("alice") == 1
    second.release()
    bobs.release()
    assert (limits.open_streams("alice"), limits.open_streams("bob")) == (0, 0)


def test_a_slot_not_handed_to_a_response_is_given_back_on_leaving_the_block() -> None:
    limits = Limits(Settings(max_streams_per_key=1))

    with limits.stream_slot({"alice"}):
        assert limits.open_streams("alice") == 1
    assert limits.open_streams("alice") == 0
    with pytest.raises(RuntimeError, match="not queued"):
        _guard_then_fail(limits)
    assert limits.open_streams("alice") == 0


def _guard_then_fail(limits: Limits) -> None:
    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    with limits.stream_slot({"alice"}) as slot:
        slot.guard(response)
        raise RuntimeError("the job was not queued")


def test_stream_requests_spend_a_budget_per_key_and_a_refused_one_takes_nothing() -> None:
    clock = Clock()
    limits = Limits(Settings(max_streams_per_key=10, stream_opens_per_minute=2), clock)

    limits.open_stream({"alice"}).release()
    limits.ask_stream({"alice"})  # a HEAD spends one too, and holds no slot
    refused = _refused(lambda: limits.open_stream({"alice"}))
    with_bob = _refused(lambda: limits.open_stream({"alice", "bob"}))
    assert limits.open_streams("alice") == 0
    limits.open_stream({"bob"}).release()
    limits.open_stream({"bob"}).release()  # refused with alice, bob spent nothing
    _refused(lambda: limits.ask_stream({"bob"}))
    clock.now += 30  # one request's worth at 2 per minute
    limits.open_stream({"alice"}).release()

    assert refused.code == with_bob.code == "too_many_stream_requests"
    assert refused.headers == {"Retry-After": "30"}
    _refused(lambda: limits.open_stream({"alice"}))


def test_a_stream_request_refused_for_want_of_a_slot_spends_no_budget() -> None:
    limits = Limits(Settings(max_streams_per_key=1, stream_opens_per_minute=2))
    held = limits.open_stream({"alice"})

    for _ in range(5):
        assert _refused(lambda: limits.open_stream({"alice"})).code == "too_many_streams"
        assert _refused(lambda: limits.ask_stream({"alice"})).code == "too_many_streams"
    held.release()
    limits.open_stream({"alice"}).release()  # the second of two: the refusals spent none

    assert _refused(lambda: limits.open_stream({"alice"})).code == "too_many_stream_requests"


def test_the_budgets_of_jobs_tokens_are_forgotten_once_refilled() -> None:
    """Each job's tokens spend a budget of their own: it must not outlast the job."""
    clock = Clock()
    limits = Limits(Settings(stream_opens_per_minute=2), clock)
    for job in range(1_000):
        limits.ask_stream({TokenHolder(f"job-{job}", "alice")})
    limits.ask_stream({TokenHolder("job-0", "alice")})
    refused = _refused(lambda: limits.ask_stream({TokenHolder("job-0", "alice")}))
    clock.now += 59.9
    limits.ask_stream({"alice"})
    held = limits.stream_budgets()
    clock.now += 0.1  # a minute: every token's budget has refilled

    limits.ask_stream({"alice"})
    assert refused.code == "too_many_stream_requests"
    assert held == 1_001
    assert limits.stream_budgets() == 1
    limits.ask_stream({TokenHolder("job-0", "alice")})


def test_zero_means_no_limit_and_no_key_is_never_limited() -> None:
    unlimited = Limits(
        Settings(max_streams_per_key=0, submits_per_minute=0, stream_opens_per_minute=0)
    )
    limited = Limits(
        Settings(max_streams_per_key=1, submits_per_minute=1, stream_opens_per_minute=1)
    )

    for _ in range(1_000):
        unlimited.take_submit("alice")
        unlimited.stream_slot({"alice"})
        unlimited.open_stream({"alice"})
        limited.take_submit("")  # auth disabled: no key to count against
        limited.stream_slot(set())
        limited.open_stream(set())
    assert unlimited.open_streams("alice") == 0


# --- against a gateway ----------------------------------------------------------------------


@pytest.fixture
async def limited(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    return await start_keyed_gateway(
        start_gateway, redis, settings, max_streams_per_key=2, submits_per_minute=3
    )


def _limits(gateway: Gateway) -> Limits:
    app = gateway.server.config.app
    limits: Limits = app.state.limits  # type: ignore[union-attr]
    return limits


async def _open(
    stack: AsyncExitStack, client: httpx.AsyncClient, url: str, **kwargs: object
) -> None:
    """Opens a stream and reads its first event; it stays open until `stack` closes."""
    response = await stack.enter_async_context(client.stream("GET", url, **kwargs))  # type: ignore[arg-type]
    assert response.status_code == 200, await response.aread()
    # Held open: closing the reader would close the connection.
    events = await stack.enter_async_context(aclosing(_reader(response)))
    async with asyncio.timeout(scaled(10)):
        await anext(events)


def _reader(response: httpx.Response) -> AsyncGenerator[ServerSentEvent, None]:
    # An async generator, annotated as an iterator where it is defined.
    return cast(AsyncGenerator[ServerSentEvent, None], read_events(response))


def _assert_too_many(response: httpx.Response, code: str, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == code
    assert response.headers["retry-after"] == str(retry_after)


async def test_submits_over_the_rate_get_429_with_retry_after(limited: Gateway) -> None:
    job = {"name": WAITING_JOB}
    async with limited.client() as client:
        accepted = [
            await client.post("/jobs", json=job, headers=bearer(ALICE_KEY)) for _ in range(3)
        ]
        refused = await client.post("/jobs", json=job, headers=bearer(ALICE_KEY))
        streamed = await client.post(
            "/jobs", json=job, headers=bearer(ALICE_KEY) | {"Accept": "text/event-stream"}
        )
        bobs = await client.post("/jobs", json=job, headers=bearer(BOB_KEY))

    assert [response.status_code for response in accepted] == [202, 202, 202]
    # 3 per minute: the next one is 20 s away.
    _assert_too_many(refused, "too_many_submits", 20)
    _assert_too_many(streamed, "too_many_submits", 20)
    assert _limits(limited).open_streams("alice") == 0, "the refused stream holds no slot"
    assert bobs.status_code == 202


async def test_streams_over_the_limit_get_429_until_one_closes(limited: Gateway) -> None:
    async with limited.client() as client:
        jobs = [await submit_as(client, ALICE_KEY) for _ in range(3)]
        bobs = await submit_as(client, BOB_KEY)
        ids = [job["job_id"] for job in jobs]
        limits = _limits(limited)

        async with AsyncExitStack() as first:
            # Streams opened with watch tokens count apart (test_tokens.py), not against alice.
            await _open(first, client, f"/jobs/{ids[0]}/events", headers=bearer(ALICE_KEY))
            async with AsyncExitStack() as second:
                await _open(first, client, f"/jobs/{ids[1]}/events", headers=bearer(ALICE_KEY))
                await _open(
                    second, client, f"/jobs/{bobs['job_id']}/events", headers=bearer(BOB_KEY)
                )
                assert (limits.open_streams("alice"), limits.open_streams("bob")) == (2, 1)

                refusals = [
                    await client.get(f"/jobs/{ids[2]}/events", headers=bearer(ALICE_KEY)),
                    await client.get(f"/events?job={ids[2]}", headers=bearer(ALICE_KEY)),
                    await client.post(
                        "/jobs",
                        json={"name": WAITING_JOB},
                        headers=bearer(ALICE_KEY) | {"Accept": "text/event-stream"},
                    ),
                ]
                for refused in refusals:
                    _assert_too_many(refused, "too_many_streams", STREAM_RETRY_AFTER_S)
                # The slot comes before the job is looked up: a made-up one is refused alike.
                unknown = await client.get("/jobs/nope/events", headers=bearer(ALICE_KEY))
                _assert_too_many(unknown, "too_many_streams", STREAM_RETRY_AFTER_S)
                assert limits.open_streams("alice") == 2
            # Closing bob's stream frees nothing of alice's.
            await wait_until(lambda: limits.open_streams("bob") == 0, message="bob's slot back")
            assert limits.open_streams("alice") == 2
        await wait_until(lambda: limits.open_streams("alice") == 0, message="alice's slots back")

        async with AsyncExitStack() as again:
            await _open(
                again, client, f"/events?job={ids[0]}&job={ids[2]}", headers=bearer(ALICE_KEY)
            )
            assert limits.open_streams("alice") == 1, "a multi-job stream counts once"


async def test_a_stream_opened_at_submit_counts_until_it_ends(limited: Gateway) -> None:
    limits = _limits(limited)
    submit_and_stream = bearer(ALICE_KEY) | {"Accept": "text/event-stream"}
    async with (
        limited.client() as client,
        client.stream(
            "POST", "/jobs", json={"name": WAITING_JOB}, headers=submit_and_stream
        ) as response,
        aclosing(_reader(response)) as events,
    ):
        assert response.status_code == 200
        first = await anext(events)
        assert limits.open_streams("alice") == 1
    await wait_until(lambda: limits.open_streams("alice") == 0, message="the slot back")

    assert first.event == "queued"


async def test_limits_are_per_gateway_process(
    start_gateway: StartGateway, limited: Gateway, settings: Settings
) -> None:
    other = await start_gateway(with_auth(settings, max_streams_per_key=2, submits_per_minute=3))
    job = {"name": WAITING_JOB}
    async with limited.client() as one, other.client() as two:
        for _ in range(3):
            assert (await one.post("/jobs", json=job, headers=bearer(ALICE_KEY))).status_code == 202
        assert (await one.post("/jobs", json=job, headers=bearer(ALICE_KEY))).status_code == 429
        assert (await two.post("/jobs", json=job, headers=bearer(ALICE_KEY))).status_code == 202


async def test_stream_requests_over_the_budget_get_429_before_redis_is_read(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    gateway = await start_keyed_gateway(start_gateway, redis, settings, stream_opens_per_minute=3)
    made_up = httpx.QueryParams([("job", f"r{n}") for n in range(1, 51)])
    alice = bearer(ALICE_KEY)
    async with gateway.client() as client:
        job = await submit_as(client, ALICE_KEY)  # a submit spends none of it
        spent = [
            await client.get("/events", params=made_up, headers=alice),
            await client.get("/jobs/r1/events", headers=alice),
            await client.head("/jobs/r1/events", headers=alice),
        ]
        before = await state_reads(redis)
        refused = [
            await client.get("/events", params=made_up, headers=alice),
            await client.get("/jobs/r1/events", headers=alice),
        ]
        head = await client.head("/jobs/r1/events", headers=alice)
        reads = await state_reads(redis) - before
        bobs = await client.get("/jobs/r1/events", headers=bearer(BOB_KEY))
        # A watch token's requests spend the budget of its job's tokens, not the key's.
        by_token = await client.head(
            f"/jobs/{job['job_id']}/events", params={"token": job["watch_token"]}
        )

    assert [response.status_code for response in spent] == [404, 404, 404]
    for response in refused:
        # 3 per minute: the next one is 20 s away.
        _assert_too_many(response, "too_many_stream_requests", 20)
    assert (head.status_code, head.headers["retry-after"]) == (429, "20")
    assert reads == 0, "a refused request read the jobs' state"
    assert bobs.status_code == 404, "keys do not share a budget"
    assert by_token.status_code == 200
    assert _limits(gateway).open_streams("alice") == 0


async def test_a_404_or_a_204_gives_its_slot_back_at_once(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    gateway = await start_keyed_gateway(start_gateway, redis, settings, max_streams_per_key=1)
    async with gateway.client(headers=bearer(ALICE_KEY)) as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        assert (await client.delete(f"/jobs/{job_id}")).status_code == 202
        last = (await stream_ids(redis, settings, job_id))[-1]
        # The key has one slot: each answer would be 429 had the one before kept it.
        answers = [
            await client.get("/jobs/nope/events"),
            await client.get("/events?job=nope"),
            await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": last}),
            await client.get(
                f"/events?job={job_id}", headers={"Last-Event-ID": f"{job_id}:{last}"}
            ),
        ]
        assert _limits(gateway).open_streams("alice") == 0
        events = await collect_events(client, job_id)

    assert [response.status_code for response in answers] == [404, 404, 204, 204]
    assert event_types(events) == ["queued", "cancelled"]
