"""Watch tokens against a real gateway and Redis: bound to the key that submitted the job and to
this incarnation of it, never outliving a finished job's state, revocable, and counted apart
from the key's own streams."""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import orjson
import pytest
from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import Redis

from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import STREAM_RETRY_AFTER_S, Limits
from gateway.endpoints.tokens import Access
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from shared.streamid import StreamId
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    TOKEN_SECRET,
    WAITING_JOB,
    bearer,
    start_keyed_gateway,
    with_auth,
)
from tests.conftest import Gateway, StartGateway
from tests.support import ServerSentEvent, read_events, scaled, stream_ids, wait_until

pytestmark = pytest.mark.timeout(60)

# Feeds (and their rings) outlive their subscribers for the whole test.
LINGER_S = 600.0


@pytest.fixture
def lingering(settings: Settings) -> Settings:
    return with_auth(settings, hub_linger_s=LINGER_S)


@pytest.fixture
async def gateway(start_gateway: StartGateway, lingering: Settings, redis: Redis) -> Gateway:
    return await start_keyed_gateway(start_gateway, redis, lingering)


def _job_id() -> str:
    # arq's own keys are not prefixed per test: an id of this test alone.
    return f"invoice-{uuid.uuid4().hex[:12]}"


async def _post(client: httpx.AsyncClient, key: str, job_id: str, **args: object) -> httpx.Response:
    job = {"name": WAITING_JOB, "args": args, "job_id": job_id}
    return await client.post("/jobs", json=job, headers=bearer(key))


async def _publish(redis: Redis, settings: Settings, job_id: str, *types: EventType) -> None:
    """Write events of the job as its worker would."""
    publisher = Publisher(redis, settings)
    for event_type in types:
        data = {"result": f"{job_id} done"} if event_type is EventType.COMPLETED else {}
        assert (await publisher.publish(make_event(event_type, job_id, 1, data))).accepted


async def _expire(redis: Redis, settings: Settings, job_id: str) -> None:
    """Finish the job with a one-second retention and wait until Redis has let it go, and
    arq with it (its job and result keys would outlive the state otherwise)."""
    short = settings.replace(retention_s=1)
    await _publish(redis, short, job_id, EventType.STARTED, EventType.COMPLETED)
    keys = Keys(settings.key_prefix)

    async def gone() -> bool:
        return not await redis.exists(keys.state(job_id), keys.events(job_id))

    await wait_until(gone, timeout=10, message="the job's state expired")
    await redis.delete(f"{job_key_prefix}{job_id}", f"{result_key_prefix}{job_id}")
    await redis.zrem(settings.queue_name, job_id)


async def _get(client: httpx.AsyncClient, url: str, **kwargs: object) -> httpx.Response:
    """The answer to a GET; an event stream's body is left unread (the stream may not end)."""
    async with client.stream("GET", url, **kwargs) as response:  # type: ignore[arg-type]
        if response.status_code != 200 or "event-stream" not in response.headers["content-type"]:
            await response.aread()
        return response


async def _reads(client: httpx.AsyncClient, job_id: str, token: str) -> list[httpx.Response]:
    """The three ways a token reads a job: its state, its stream, and a multi-job stream."""
    return [
        await _get(client, f"/jobs/{job_id}", params={"token": token}),
        await _get(client, f"/jobs/{job_id}/events", params={"token": token}),
        await _get(client, "/events", params={"job": job_id, "token": token}),
    ]


@asynccontextmanager
async def _opened(
    client: httpx.AsyncClient, url: str, **kwargs: object
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """An open event stream whose first event has arrived; the rest, as they come."""
    async with client.stream("GET", url, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, await response.aread()
        events = read_events(response)
        async with asyncio.timeout(scaled(10)):
            await anext(events)
        yield events


async def _rest(events: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    """What else a stream sends until it ends (within a bound)."""
    async with asyncio.timeout(scaled(10)):
        return [event async for event in events]


def _token_expiry(token: str) -> int:
    """A token is signed, not encrypted: its body says when it expires."""
    body = token.split(".")[0]
    expires_at: int = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))[1]
    return expires_at


def _what(response: httpx.Response) -> str:
    """What a response was, for a failed assertion: an event stream's body is not read."""
    return f"{response.status_code} {response.headers.get('content-type')}"


def _assert_not_for_this_job(response: httpx.Response, job_id: str) -> None:
    """Refused exactly like a token for another job."""
    assert response.status_code == 403, _what(response)
    assert response.json() == {
        "error": "forbidden",
        "detail": {"message": "no watch token given is for these jobs", "jobs": [job_id]},
    }


def _assert_revoked(response: httpx.Response) -> None:
    assert response.status_code == 401, _what(response)
    assert response.json() == {"error": "unauthorized", "detail": "the watch token was revoked"}
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# --- bound to the job, not to its id ------------------------------------------------------------


async def test_a_token_of_an_expired_job_cannot_read_its_successor(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    job_id = _job_id()
    async with gateway.client() as client:
        first = await _post(client, ALICE_KEY, job_id)
        # Re-posted just before the finished job's state expires: a fresh token.
        reposted = await _post(client, ALICE_KEY, job_id)
        alices_tokens = [first.json()["watch_token"], reposted.json()["watch_token"]]
        await _expire(redis, lingering, job_id)
        bobs = await _post(client, BOB_KEY, job_id, card="bob's card")
        await _publish(redis, lingering, job_id, EventType.STARTED, EventType.COMPLETED)

        refused = [await _reads(client, job_id, token) for token in alices_tokens]
        bobs_reads = await _reads(client, job_id, bobs.json()["watch_token"])

    assert (first.status_code, reposted.status_code, bobs.status_code) == (202, 200, 202)
    for responses in refused:
        for response in responses:
            _assert_not_for_this_job(response, job_id)
    assert [response.status_code for response in bobs_reads] == [200, 200, 200]
    state = bobs_reads[0].json()
    assert (state["owner"], state["args"]) == ("bob", {"card": "bob's card"})
    assert "incarnation" not in state
    assert "token_generation" not in state


async def test_a_token_of_an_earlier_job_is_refused_where_the_ring_remembers_it(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    """The gateway's feed of the job outlives it (a long linger): the next job under the same
    id must not be read from what the ring kept, on the first job's token."""
    job_id = _job_id()
    async with gateway.client() as client:
        token = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        async with _opened(client, f"/jobs/{job_id}/events", params={"token": token}) as events:
            await _expire(redis, lingering, job_id)  # started and completed arrive live
            alices = await _rest(events)
        started = StreamId.parse(str(alices[0].id))
        assert gateway.hub.vouch(job_id, started) is not None, "the ring holds alice's events"
        await _post(client, BOB_KEY, job_id)
        bobs_queued = StreamId.parse((await stream_ids(redis, lingering, job_id))[0])
        await wait_until(
            lambda: gateway.hub.vouch(job_id, bobs_queued) is not None,
            message="bob's job reached the lingering feed",
        )

        resumed = await _get(
            client,
            f"/jobs/{job_id}/events",
            params={"token": token},
            headers={"Last-Event-ID": str(started)},
        )

    assert [event.event for event in alices] == ["started", "completed"]
    _assert_not_for_this_job(resumed, job_id)


async def test_a_reposted_finished_job_gets_a_token_that_expires_with_it(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    running, finished = _job_id(), _job_id()
    async with gateway.client() as client:
        for job_id in (running, finished):
            assert (await _post(client, ALICE_KEY, job_id)).status_code == 202
        await _publish(
            redis,
            lingering.replace(retention_s=30),
            finished,
            EventType.STARTED,
            EventType.COMPLETED,
        )
        before = time.time()
        again = {job_id: await _post(client, ALICE_KEY, job_id) for job_id in (running, finished)}
        state = await client.get(
            f"/jobs/{finished}", params={"token": again[finished].json()["watch_token"]}
        )

    assert [response.status_code for response in again.values()] == [200, 200]
    assert again[finished].json()["status"] == "completed"
    assert _token_expiry(again[finished].json()["watch_token"]) <= before + 30
    running_expiry = _token_expiry(again[running].json()["watch_token"])
    assert running_expiry >= before + lingering.token_ttl_s - 1
    assert state.status_code == 200


def test_a_token_of_the_format_without_an_incarnation_is_refused(settings: Settings) -> None:
    """Tokens signed before tokens named their job's incarnation opened any job of their id."""
    body = base64.urlsafe_b64encode(orjson.dumps(["job-1", int(time.time()) + 60, "alice"]))
    text = body.rstrip(b"=").decode()
    mac = hmac.digest(
        TOKEN_SECRET.encode(), b"jobwire watch token v1\x00" + text.encode(), "sha256"
    )
    old = f"{text}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    with pytest.raises(APIError) as refused:
        Access.from_settings(with_auth(settings)).verify(old)

    assert (refused.value.status_code, refused.value.detail) == (
        401,
        "the watch token is not valid",
    )


# --- revocation ---------------------------------------------------------------------------------


async def test_revoked_tokens_are_refused_and_the_streams_they_opened_end(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    job_id = _job_id()
    async with gateway.client() as client, AsyncExitStack() as streams:
        token = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        single, multi, by_key = [
            await streams.enter_async_context(_opened(client, url, **kwargs))
            for url, kwargs in (
                (f"/jobs/{job_id}/events", {"params": {"token": token}}),
                ("/events", {"params": {"job": job_id, "token": token}}),
                (f"/jobs/{job_id}/events", {"headers": bearer(ALICE_KEY)}),
            )
        ]

        revoked = await client.delete(f"/jobs/{job_id}/tokens", headers=bearer(ALICE_KEY))
        ended = [await _rest(single), await _rest(multi)]
        await _publish(redis, lingering, job_id, EventType.STARTED)
        async with asyncio.timeout(scaled(10)):
            after = await anext(by_key)
        refused = await _reads(client, job_id, token)
        fresh = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        fresh_reads = await _get(client, f"/jobs/{job_id}", params={"token": fresh})

    assert revoked.status_code == 204
    assert ended == [[], []], "the token streams ended"
    assert after.event == "started", "the key's own stream went on"
    for response in refused:
        _assert_revoked(response)
    assert fresh_reads.status_code == 200, "a token issued since works"
    state = Keys(lingering.key_prefix).state(job_id)
    assert await redis.hget(state, "token_generation") == b"1"  # type: ignore[misc]


async def test_only_the_key_that_submitted_a_job_revokes_its_tokens(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    job_id = _job_id()
    async with gateway.client() as client:
        token = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        bobs = await client.delete(f"/jobs/{job_id}/tokens", headers=bearer(BOB_KEY))
        by_token = await client.delete(f"/jobs/{job_id}/tokens", headers=bearer(token))
        unknown = await client.delete("/jobs/no-such-job/tokens", headers=bearer(ALICE_KEY))
        still = await client.get(f"/jobs/{job_id}", params={"token": token})

    for refused, job in ((bobs, job_id), (unknown, "no-such-job")):
        assert refused.status_code == 404
        assert refused.json() == {"error": "job_not_found", "detail": f"no job {job}"}
    assert by_token.status_code == 401
    assert still.status_code == 200, "nothing was revoked"
    keys = Keys(lingering.key_prefix)
    assert await redis.hget(keys.state(job_id), "token_generation") is None  # type: ignore[misc]
    assert not await redis.exists(keys.state("no-such-job")), "revoking made no job up"


async def test_a_revoked_token_cannot_resume_where_the_ring_vouches(
    gateway: Gateway, redis: Redis, lingering: Settings
) -> None:
    job_id = _job_id()
    async with gateway.client() as client:
        token = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        async with _opened(client, f"/jobs/{job_id}/events", params={"token": token}) as events:
            await _publish(redis, lingering, job_id, EventType.STARTED)
            async with asyncio.timeout(scaled(10)):
                started = await anext(events)
            await client.delete(f"/jobs/{job_id}/tokens", headers=bearer(ALICE_KEY))
            await _rest(events)  # the hub has heard of the revocation: the stream ended
        position = StreamId.parse(str(started.id))
        assert gateway.hub.vouch(job_id, position) is not None, "the ring holds the position"

        resumed = await _get(
            client,
            f"/jobs/{job_id}/events",
            params={"token": token},
            headers={"Last-Event-ID": str(position)},
        )

    _assert_revoked(resumed)


async def test_revoking_on_one_gateway_ends_token_streams_on_another(
    gateway: Gateway, start_gateway: StartGateway, lingering: Settings
) -> None:
    other = await start_gateway(lingering)
    job_id = _job_id()
    async with gateway.client() as client, other.client() as elsewhere:
        token = (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
        url = f"/jobs/{job_id}/events"
        async with _opened(elsewhere, url, params={"token": token}) as events:
            revoked = await client.delete(f"/jobs/{job_id}/tokens", headers=bearer(ALICE_KEY))
            ended = await _rest(events)
        again = await _get(elsewhere, url, params={"token": token})

    assert revoked.status_code == 204
    assert ended == []
    _assert_revoked(again)


# --- counted apart from the key's streams -------------------------------------------------------


async def test_a_token_holder_cannot_use_up_the_keys_streams(
    start_gateway: StartGateway, lingering: Settings, redis: Redis
) -> None:
    capped = {"max_streams_per_key": 2, "max_streams_per_token": 2}
    gateway = await start_keyed_gateway(start_gateway, redis, lingering, **capped)
    limits: Limits = gateway.server.config.app.state.limits  # type: ignore[union-attr]
    watched, other = _job_id(), _job_id()
    async with gateway.client() as client, AsyncExitStack() as streams:
        tokens = {
            job_id: (await _post(client, ALICE_KEY, job_id)).json()["watch_token"]
            for job_id in (watched, other)
        }
        for _ in range(2):
            await streams.enter_async_context(
                _opened(client, f"/jobs/{watched}/events", params={"token": tokens[watched]})
            )
        # A resume the ring vouches for is refused alike.
        await _publish(redis, lingering, watched, EventType.STARTED)
        last = StreamId.parse((await stream_ids(redis, lingering, watched))[-1])
        await wait_until(lambda: gateway.hub.vouch(watched, last) is not None)
        resume = {"params": {"token": tokens[watched]}, "headers": {"Last-Event-ID": str(last)}}
        over = [
            await _get(client, f"/jobs/{watched}/events", params={"token": tokens[watched]}),
            await _get(client, "/events", params={"job": watched, "token": tokens[watched]}),
            await _get(client, f"/jobs/{watched}/events", **resume),
        ]
        # Another job's tokens, and the key itself, still have all their streams.
        await streams.enter_async_context(
            _opened(client, f"/jobs/{other}/events", params={"token": tokens[other]})
        )
        for job_id in (watched, other):
            await streams.enter_async_context(
                _opened(client, f"/jobs/{job_id}/events", headers=bearer(ALICE_KEY))
            )
        counted = (
            limits.open_streams("alice"),
            limits.open_token_streams(watched, "alice"),
            limits.open_token_streams(other, "alice"),
        )
        keys_over = await _get(client, f"/jobs/{other}/events", headers=bearer(ALICE_KEY))

    for response in over:
        assert response.status_code == 429, response.text
        assert response.json() == {
            "error": "too_many_streams",
            "detail": "at most 2 open streams per job's watch tokens",
        }
        assert response.headers["retry-after"] == str(STREAM_RETRY_AFTER_S)
    assert counted == (2, 2, 1)
    assert keys_over.status_code == 429
    assert keys_over.json()["detail"] == "at most 2 open streams per API key"
    await wait_until(lambda: limits.open_token_streams(watched, "alice") == 0, message="slots back")
