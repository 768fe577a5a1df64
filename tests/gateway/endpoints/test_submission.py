"""Reading a `POST /jobs` body: only JSON sent as JSON, and no argument the queue would take as
its own. A refused submission leaves nothing in Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from arq.constants import job_key_prefix
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.auth_support import WAITING_JOB, advertise_waiting_job
from tests.conftest import Gateway, StartGateway

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def gateway(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    """A gateway as `jobwire up` runs it with auth disabled; `WAITING_JOB` takes `**kwargs`."""
    await advertise_waiting_job(redis, settings)
    return await start_gateway()


def _job_id() -> str:
    # arq's job keys are not under the test's key prefix: each test needs ids of its own.
    return f"job-{uuid.uuid4().hex}"


async def _nothing_written(redis: Redis, settings: Settings, job_id: str) -> bool:
    keys = Keys(settings.key_prefix)
    written: int = await redis.exists(
        keys.state(job_id), keys.events(job_id), job_key_prefix + job_id
    )
    return written == 0 and await redis.zcard(settings.queue_name) == 0


# What a page on another site can make a browser send without a CORS preflight: a form's
# encodings, text/plain, or a fetch() of a body with no type.
CROSS_SITE_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
    "text/plain; charset=utf-8",
    None,
]


@pytest.mark.parametrize("content_type", CROSS_SITE_TYPES)
async def test_a_cross_site_post_of_a_form_starts_no_job_with_auth_disabled(
    gateway: Gateway, redis: Redis, settings: Settings, content_type: str | None
) -> None:
    job_id = _job_id()
    body = orjson.dumps({"name": WAITING_JOB, "job_id": job_id})
    headers = {"Origin": "https://evil.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with gateway.client() as client:
        response = await client.post("/jobs", content=body, headers=headers)

    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert "application/json" in response.json()["detail"]
    assert await _nothing_written(redis, settings, job_id)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_is_taken_with_or_without_parameters(
    gateway: Gateway, content_type: str
) -> None:
    body = b'{"name": "%s"}' % WAITING_JOB.encode()
    async with gateway.client() as client:
        response = await client.post("/jobs", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 202, response.text


async def test_another_json_type_is_not_taken_for_json(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.post(
            "/jobs", json={"name": WAITING_JOB}, headers={"Content-Type": "application/ld+json"}
        )

    assert (response.status_code, response.json()["error"]) == (415, "unsupported_media_type")


def test_jobwire_ups_curl_submit_sends_json() -> None:
    source = (ROOT / "jobwire" / "up.py").read_text()
    posts = [line for line in source.splitlines() if "curl" in line and "-X POST" in line]

    assert posts
    assert all("-H 'Content-Type: application/json'" in line for line in posts), posts


# arq 0.28's `enqueue_job(function, *args, _job_id, _queue_name, _defer_until, _defer_by,
# _expires, _job_try, **kwargs)`, a bound method (`self`), and the `ctx` arq passes every job.
RESERVED = [
    "_defer_by",
    "_defer_until",
    "_expires",
    "_queue_name",
    "_job_try",
    "_job_id",
    "function",
    "self",
    "ctx",
    "_not_an_option_yet",
]


@pytest.mark.parametrize("name", RESERVED)
async def test_queue_options_passed_as_kwargs_are_refused_and_leave_no_orphan_job(
    gateway: Gateway, redis: Redis, settings: Settings, name: str
) -> None:
    job_id = _job_id()
    submission = {"name": WAITING_JOB, "job_id": job_id, "args": {name: 60, "fine": 1}}
    async with gateway.client() as client:
        response = await client.post("/jobs", json=submission)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_args"
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["args", name]
    assert problem["msg"]
    assert await _nothing_written(redis, settings, job_id)


async def test_every_reserved_name_is_named_once(gateway: Gateway) -> None:
    args = {"function": "x", "_expires": 1, "fine": 2, "_job_id": "y"}
    async with gateway.client() as client:
        response = await client.post("/jobs", json={"name": WAITING_JOB, "args": args})

    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [
        ["args", "_expires"],
        ["args", "_job_id"],
        ["args", "function"],
    ]


async def test_a_job_whose_args_are_all_ordinary_is_queued_with_them(
    gateway: Gateway, redis: Redis, settings: Settings
) -> None:
    args = {"defer_by": 1, "queue_name": "q", "functions": [], "x_": None}
    async with gateway.client() as client:
        response = await client.post("/jobs", json={"name": WAITING_JOB, "args": args})
        state = await client.get(response.json()["status_url"])

    assert response.status_code == 202, response.text
    assert state.json()["args"] == args
    assert await redis.zcard(settings.queue_name) == 1
