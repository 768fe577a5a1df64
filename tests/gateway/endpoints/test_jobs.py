"""Submitting, reading and cancelling jobs over HTTP, and what bad input gets back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import (
    ServerSentEvent,
    collect_events,
    event_types,
    read_events,
    scaled,
    stream_ids,
    submit,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


async def test_submit_answers_202_with_urls_and_writes_queued(
    start_gateway: StartGateway, start_worker: RunWorker, redis: Redis, settings: Settings
) -> None:
    await start_worker()
    gateway = await start_gateway()
    async with gateway.client() as client:
        response = await client.post(
            "/jobs",
            content=b'{"name":"demo.countdown","args":{"seconds":0.1,"steps":1}}',
            headers={"content-type": "application/json; charset=utf-8"},
        )
        body = response.json()
        job_id = body["job_id"]

        assert response.status_code == 202
        assert body == {
            "job_id": job_id,
            "status": "queued",
            "status_url": f"{gateway.url}/jobs/{job_id}",
            "events_url": f"{gateway.url}/jobs/{job_id}/events",
            "watch_token": None,  # auth is disabled in these tests
        }
        assert response.headers["location"] == body["status_url"]
        first = await redis.xrange(Keys(settings.key_prefix).events(job_id), count=1)
        assert b'"type":"queued"' in first[0][1][b"e"]
        await collect_events(client, job_id)
        state = (await client.get(body["status_url"])).json()

    assert state["status"] == "completed"
    assert state["name"] == "demo.countdown"
    assert state["args"] == {"seconds": 0.1, "steps": 1}
    assert state["result"] == {"counted": 1}
    assert state["attempt"] == 1
    assert state["progress"]["current"] == 1
    assert state["created_at"] <= state["started_at"] <= state["finished_at"]
    assert state["last_event_type"] == "completed"


async def test_same_job_id_twice_is_idempotent_or_conflicts(stack: Gateway) -> None:
    job = {"name": "demo.countdown", "args": {"seconds": 0.1, "steps": 1}, "job_id": "report-7"}
    async with stack.client() as client:
        first = await client.post("/jobs", json=job)
        again = await client.post("/jobs", json=job)
        different = await client.post("/jobs", json={**job, "args": {"seconds": 2}})
        events = await collect_events(client, "report-7")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["job_id"] == "report-7"
    assert different.status_code == 409
    assert different.json()["error"] == "job_id_taken"
    assert event_types(events).count("queued") == 1
    assert event_types(events).count("started") == 1


async def test_submit_without_a_live_worker_is_queued_and_readyz_says_so(
    start_gateway: StartGateway, start_worker: RunWorker
) -> None:
    # A worker advertises the job names once, then the queue has no worker.
    worker = await start_worker()
    gateway = await start_gateway()
    async with gateway.client() as client:
        await wait_until(lambda: _workers(client, 1))
        await worker.close()
        response = await client.post("/jobs", json={"name": "demo.countdown", "args": {}})
        assert response.status_code == 202
        state = (await client.get(response.json()["status_url"])).json()
        assert state["status"] == "queued"


async def _workers(client: httpx.AsyncClient, count: int) -> bool:
    body = (await client.get("/readyz")).json()
    return bool(body["workers"] == count)


async def test_status_of_unknown_job_is_404(stack: Gateway) -> None:
    async with stack.client() as client:
        response = await client.get("/jobs/no-such-job")

    assert response.status_code == 404
    assert response.json() == {"error": "job_not_found", "detail": "no job no-such-job"}


async def test_cancel_a_running_job(stack: Gateway) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=30, steps=300)
        await wait_until(lambda: _status_is(client, job_id, "running"))
        response = await client.delete(f"/jobs/{job_id}")
        events = await collect_events(client, job_id)
        again = await client.delete(f"/jobs/{job_id}")

    assert response.status_code == 202
    assert response.json() == {"job_id": job_id, "status": "cancelling"}
    assert events[-1].event == "cancelled"
    assert events[-1].json()["data"]["reason"] == "cancelled by request"
    assert again.status_code == 409
    assert again.json()["error"] == "job_finished"


async def test_cancel_a_queued_job_never_runs_it(
    start_gateway: StartGateway, start_worker: RunWorker
) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        # The catalog comes from a worker that then stops; the job waits in the queue.
        worker = await start_worker()
        await wait_until(lambda: _workers(client, 1))
        await worker.close()
        job_id = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        response = await client.delete(f"/jobs/{job_id}")
        await start_worker()
        events = await collect_events(client, job_id)

    assert response.json() == {"job_id": job_id, "status": "cancelled"}
    assert event_types(events) == ["queued", "cancelled"]


async def _status_is(client: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await client.get(f"/jobs/{job_id}")).json()["status"] == status)


async def test_failed_and_retried_jobs_over_sse(stack: Gateway) -> None:
    async with stack.client() as client:
        failing = await submit(client, "demo.fail", message="disk full")
        flaky = await submit(client, "demo.flaky", fail_times=1)
        failed_events = await collect_events(client, failing)
        flaky_events = await collect_events(client, flaky)

    assert event_types(failed_events) == ["queued", "started", "failed"]
    failure = failed_events[-1].json()["data"]
    assert failure["message"] == "disk full"
    assert failure["type"]
    raw = "".join(event.data for event in failed_events)
    assert "Traceback" not in raw
    assert 'File "' not in raw
    assert event_types(flaky_events) == ["queued", "started", "retrying", "started", "completed"]
    attempts = [event.json()["attempt"] for event in flaky_events]
    assert attempts == [0, 1, 1, 2, 2]


JSON = {"content-type": "application/json"}
BAD_REQUESTS: list[tuple[str, str, dict[str, object], int, str]] = [
    ("POST", "/jobs", {"content": b"{not json", "headers": JSON}, 400, "invalid_json"),
    ("POST", "/jobs", {"content": b"\xff\xfe\x00garbage", "headers": JSON}, 400, "invalid_json"),
    ("POST", "/jobs", {"json": ["a", "list"]}, 400, "invalid_request"),
    ("POST", "/jobs", {"json": {"args": {}}}, 400, "invalid_request"),
    ("POST", "/jobs", {"json": {"name": "demo.countdown", "extra": 1}}, 400, "invalid_request"),
    ("POST", "/jobs", {"json": {"name": "demo.countdown", "args": [1]}}, 400, "invalid_request"),
    ("POST", "/jobs", {"json": {"name": "demo.fail", "job_id": "../x"}}, 400, "invalid_job_id"),
    ("POST", "/jobs", {"json": {"name": "demo.countdown", "job_id": 7}}, 400, "invalid_request"),
    ("POST", "/jobs", {"json": {"name": "no.such.job"}}, 422, "unknown_job"),
    ("POST", "/jobs", {"json": {"name": "demo.countdown", "args": {"x": 1}}}, 422, "invalid_args"),
    ("POST", "/jobs", {"content": b"x" * 70_000, "headers": JSON}, 413, "payload_too_large"),
    (
        "POST",
        "/jobs",
        {"content": b"<job/>", "headers": {"content-type": "application/xml"}},
        415,
        "unsupported_media_type",
    ),
    ("GET", "/jobs/%E2%98%83", {}, 400, "invalid_job_id"),
    ("GET", "/jobs/a%20b/events", {}, 400, "invalid_job_id"),
    ("GET", "/jobs/{x}/events", {}, 400, "invalid_job_id"),
    ("GET", "/jobs/..%2F..%2Fetc/events", {}, 404, "not_found"),
    ("GET", "/jobs/" + "a" * 300, {}, 400, "invalid_job_id"),
    ("DELETE", "/jobs/missing", {}, 404, "job_not_found"),
    ("GET", "/jobs/missing/events", {}, 404, "job_not_found"),
    ("PUT", "/jobs", {}, 405, "method_not_allowed"),
]


async def test_bad_input_gets_a_json_4xx_and_harms_no_other_stream(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.5, steps=5)
        watching = asyncio.create_task(collect_events(client, job_id))
        answers = [
            await client.request(method, url, **kwargs)  # type: ignore[arg-type]
            for method, url, kwargs, _, _ in BAD_REQUESTS
        ]
        events = await watching

    for (method, url, _, status, code), response in zip(BAD_REQUESTS, answers, strict=True):
        assert (method, url, response.status_code) == (method, url, status)
        body = response.json()
        assert body["error"] == code, (url, body)
        assert body["detail"]
    known = answers[8].json()["detail"]["known"]
    assert {"demo.countdown", "demo.tokens", "demo.flaky", "demo.fail"} <= set(known)
    stored = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    assert [event.id for event in events] == [entry_id.decode() for entry_id, _ in stored]
    assert events[-1].event == "completed"


@pytest.mark.parametrize(
    "last_event_id",
    [
        "garbage",
        "1-2-3",
        "-1-0",
        "1.5-0",
        "99999999999999999999999-0",
        "1" * 5000 + "-0",
        "１-0",  # noqa: RUF001 (a full-width digit: not ASCII)
        b"\xc3\xa9-0",
        b"\xff\xfe-0",
    ],
)
async def test_malformed_last_event_id_is_400(stack: Gateway, last_event_id: str | bytes) -> None:
    raw = last_event_id if isinstance(last_event_id, bytes) else last_event_id.encode()
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        response = await client.get(f"/jobs/{job_id}/events", headers={b"Last-Event-ID": raw})
        if isinstance(last_event_id, str) and last_event_id.isascii():
            by_query = await client.get(
                f"/jobs/{job_id}/events", params={"last_event_id": last_event_id}
            )
            assert by_query.status_code == 400

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_last_event_id"


async def test_submit_and_stream_returns_the_events_in_the_answer(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    job = {"name": "demo.tokens", "args": {"text": "one two three", "delay_ms": 1}}
    async with stack.client() as client:
        async with client.stream(
            "POST", "/jobs", json=job, headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            events = [event async for event in read_events(response)]
        job_id = events[0].json()["job"]
        stored = await redis.xrange(Keys(settings.key_prefix).events(job_id))

    assert events[0].event == "queued"
    assert [event.id for event in events] == [entry_id.decode() for entry_id, _ in stored]
    tokens = [event.json()["data"]["token"] for event in events if event.event == "data"]
    assert tokens == ["one ", "two ", "three"]
    assert events[-1].event == "completed"


async def test_idempotency_key_makes_a_retried_post_the_same_job(stack: Gateway) -> None:
    job = {"name": "demo.countdown", "args": {"seconds": 0.1, "steps": 1}}
    async with stack.client() as client:
        first = await client.post("/jobs", json=job, headers={"Idempotency-Key": "order-42"})
        retried = await client.post("/jobs", json=job, headers={"Idempotency-Key": "order-42"})
        other = await client.post("/jobs", json=job, headers={"Idempotency-Key": "order-43"})
        changed = await client.post(
            "/jobs", json={**job, "args": {"seconds": 5}}, headers={"Idempotency-Key": "order-42"}
        )
        both = await client.post(
            "/jobs", json={**job, "job_id": "x"}, headers={"Idempotency-Key": "order-44"}
        )
        events = await collect_events(client, first.json()["job_id"])

    assert (first.status_code, retried.status_code, other.status_code) == (202, 200, 202)
    assert retried.json()["job_id"] == first.json()["job_id"] != other.json()["job_id"]
    assert changed.status_code == 409
    assert both.status_code == 400
    assert event_types(events).count("started") == 1


async def _post_stream(
    client: httpx.AsyncClient, job: Mapping[str, object], headers: dict[str, str], limit: int | None
) -> list[ServerSentEvent]:
    """The events of one submit-and-stream POST: the first `limit`, or all of them."""
    async with asyncio.timeout(scaled(20)):
        async with client.stream("POST", "/jobs", json=job, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            return [event async for event in read_events(response, limit=limit)]


async def test_a_retried_submit_and_stream_resumes_after_its_last_event_id(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    """What `fetch-event-source` does after a lost connection: the same POST, the same
    Idempotency-Key, and the last id it had."""
    text = " ".join(f"w{i}" for i in range(30))
    job = {"name": "demo.tokens", "args": {"text": text, "delay_ms": 10}}
    headers = {"Accept": "text/event-stream", "Idempotency-Key": "chat-7"}
    async with stack.client() as client:
        first = await _post_stream(client, job, headers, limit=5)
        resumed = {**headers, "Last-Event-ID": str(first[-1].id)}
        rest = await _post_stream(client, job, resumed, limit=None)
        at_the_end = await client.post(
            "/jobs", json=job, headers={**headers, "Last-Event-ID": str(rest[-1].id)}
        )
        job_id = first[0].json()["job"]

    assert [event.id for event in first + rest] == await stream_ids(redis, settings, job_id)
    assert rest[-1].event == "completed"
    assert event_types(first + rest).count("started") == 1
    # As on a GET stream: nothing is left after the terminal event.
    assert (at_the_end.status_code, at_the_end.content) == (204, b"")


async def test_submit_and_stream_takes_last_event_id_as_a_get_stream_does(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    job = {"name": "demo.countdown", "args": {"seconds": 0.05, "steps": 1}}
    stream = {"Accept": "text/event-stream"}
    async with stack.client() as client:
        malformed = await client.post(
            "/jobs", json=job, headers={**stream, "Idempotency-Key": "k-1", "Last-Event-ID": "x"}
        )
        # The malformed position queued nothing: the key's first job is created now.
        created = await client.post("/jobs", json=job, headers={"Idempotency-Key": "k-1"})
        # A position sent with the POST that creates the job: no stream can vouch for it.
        fresh = await _post_stream(
            client, job, {**stream, "Idempotency-Key": "k-2", "Last-Event-ID": "1-0"}, None
        )

    assert malformed.status_code == 400
    assert malformed.json()["error"] == "invalid_last_event_id"
    assert created.status_code == 202
    reset, *stored = fresh
    assert (reset.event, reset.id) == ("reset", None)
    assert reset.json()["reason"] == "unknown_position"
    assert reset.json()["state"]["status"] == "queued"
    job_id = stored[0].json()["job"]
    assert [event.id for event in stored] == await stream_ids(redis, settings, job_id)
    assert stored[0].event == "queued"
