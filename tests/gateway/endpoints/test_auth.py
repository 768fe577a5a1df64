"""Access control against a real gateway: API keys, watch tokens, job ownership, CORS, what
reaches the logs, and refusing to start without keys."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from hashlib import sha256

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.endpoints.errors import APIError
from gateway.endpoints.redaction import redact_target
from gateway.endpoints.submission import IDEMPOTENT_PREFIX
from gateway.endpoints.tokens import Access, WatchGrant
from shared.apikeys import unnamed_key_id
from shared.keys import Keys
from shared.logs import JsonLineFormatter
from shared.settings import Settings, SettingsError, parse_api_keys
from shared.state import TokenBinding, binding_of
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    TOKEN_SECRET,
    advertise_waiting_job,
    bearer,
    start_keyed_gateway,
    submit_as,
    with_auth,
)
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import collect_events, event_types, raw_get, read_events, scaled
from tests.up_support import clean_env

pytestmark = pytest.mark.timeout(60)

COUNTDOWN = {"name": "demo.countdown", "args": {"seconds": 0.1, "steps": 1}}


@pytest.fixture
async def gateway(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    """A gateway with keys `alice` and `bob`, and a job name that is never run."""
    return await start_keyed_gateway(start_gateway, redis, settings)


@pytest.fixture
async def stack(gateway: Gateway, start_worker: RunWorker) -> Gateway:
    await start_worker()
    return gateway


def _access(settings: Settings) -> Access:
    return Access.from_settings(with_auth(settings))


async def _binding(redis: Redis, settings: Settings, job_id: str) -> TokenBinding:
    """What the job's state binds its watch tokens to."""
    return binding_of(await redis.hgetall(Keys(settings.key_prefix).state(job_id)))  # type: ignore[misc]


def _assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith('Bearer realm="jobwire"')


# --- API keys -------------------------------------------------------------------------------

_REST_CALLS = [
    ("POST", "/jobs"),
    ("GET", "/jobs/{job}"),
    ("DELETE", "/jobs/{job}"),
    ("GET", "/catalog"),
]
_BAD_CREDENTIALS = {
    "missing": {},
    "wrong key": bearer("not-a-key-of-this-gateway"),
    "a key of another scheme": {"Authorization": f"Basic {ALICE_KEY}"},
    "no credential": {"Authorization": "Bearer"},
    "two credentials": {"Authorization": f"Bearer {ALICE_KEY} {ALICE_KEY}"},
    "the key with a character more": bearer(ALICE_KEY + "x"),
    "the key less its last character": bearer(ALICE_KEY[:-1]),
}


@pytest.mark.parametrize("credentials", list(_BAD_CREDENTIALS), ids=str)
async def test_rest_calls_without_a_valid_api_key_get_401(
    gateway: Gateway, credentials: str
) -> None:
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        for method, path in _REST_CALLS:
            for job in (job_id, "no-such-job"):
                response = await client.request(
                    method,
                    path.format(job=job),
                    json=COUNTDOWN if method == "POST" else None,
                    headers=_BAD_CREDENTIALS[credentials],
                )
                _assert_unauthorized(response)
        missing = _BAD_CREDENTIALS[credentials] == {}
        # RFC 6750: the bare challenge for no credentials, `invalid_token` for bad ones.
        assert ('error="invalid_token"' in response.headers["www-authenticate"]) is not missing


async def test_a_401_says_nothing_about_whether_the_job_exists(gateway: Gateway) -> None:
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        for headers in ({}, bearer("not-a-key-of-this-gateway")):
            for method in ("GET", "DELETE"):
                real = await client.request(method, f"/jobs/{job_id}", headers=headers)
                unknown = await client.request(method, "/jobs/no-such-job", headers=headers)

                assert (real.status_code, real.content) == (unknown.status_code, unknown.content)
                assert real.headers["www-authenticate"] == unknown.headers["www-authenticate"]


async def test_an_api_key_acts_on_its_own_jobs_only(gateway: Gateway) -> None:
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        unknown = await client.get("/jobs/no-such-job", headers=bearer(BOB_KEY))

        mine = await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY))
        theirs = await client.get(f"/jobs/{job_id}", headers=bearer(BOB_KEY))
        cancel = await client.delete(f"/jobs/{job_id}", headers=bearer(BOB_KEY))
        stream = await client.get(f"/jobs/{job_id}/events", headers=bearer(BOB_KEY))
        multi = await client.get(
            "/events", params={"job": [job_id, "no-such-job"]}, headers=bearer(BOB_KEY)
        )
        still = await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY))

    assert mine.status_code == 200
    assert mine.json()["owner"] == "alice"
    for refused in (theirs, cancel, stream):
        assert refused.status_code == 404, refused.text
        assert refused.json() == {"error": "job_not_found", "detail": f"no job {job_id}"}
    assert unknown.json() == {"error": "job_not_found", "detail": "no job no-such-job"}
    assert multi.status_code == 404
    assert multi.json()["detail"] == {"unknown": [job_id, "no-such-job"]}
    assert still.json()["status"] == "queued", "bob's DELETE cancelled nothing"


async def test_the_same_explicit_job_id_from_another_key_is_taken(gateway: Gateway) -> None:
    # arq's own keys are not prefixed per test: an id of this test alone.
    job = {"name": "test.wait", "args": {}, "job_id": f"taken-{uuid.uuid4().hex}"}
    async with gateway.client() as client:
        first = await client.post("/jobs", json=job, headers=bearer(ALICE_KEY))
        again = await client.post("/jobs", json=job, headers=bearer(ALICE_KEY))
        other = await client.post("/jobs", json=job, headers=bearer(BOB_KEY))

    assert (first.status_code, again.status_code) == (202, 200)
    assert other.status_code == 409
    assert other.json()["error"] == "job_id_taken"
    assert "watch_token" not in other.text


async def test_a_key_cannot_take_another_keys_idempotent_job_id(gateway: Gateway) -> None:
    """Key names are in every watch token, so the id alice's Idempotency-Key names is
    computable by bob; taking it first would make her submit a 409."""
    idempotent = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    alices_id = _idempotent_job_id("alice", idempotent["Idempotency-Key"])
    async with gateway.client() as client:
        taken = await client.post(
            "/jobs", json={"name": "test.wait", "job_id": alices_id}, headers=bearer(BOB_KEY)
        )
        prefixed = await client.post(
            "/jobs", json={"name": "test.wait", "job_id": "idem-mine"}, headers=bearer(BOB_KEY)
        )
        alices = await client.post(
            "/jobs", json={"name": "test.wait"}, headers=bearer(ALICE_KEY) | idempotent
        )

    for refused in (taken, prefixed):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_job_id"
        assert "reserved" in refused.json()["detail"]
    assert alices.status_code == 202, alices.text
    assert alices.json()["job_id"] == alices_id


def _idempotent_job_id(key_name: str, idempotency_key: str) -> str:
    digest = sha256(f"{key_name}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return f"{IDEMPOTENT_PREFIX}{digest}"


async def test_idempotency_keys_are_scoped_per_api_key(gateway: Gateway) -> None:
    idempotent = {"Idempotency-Key": "order-42"}
    job = {"name": "test.wait", "args": {"n": 1}}
    async with gateway.client() as client:
        alice = await client.post("/jobs", json=job, headers=bearer(ALICE_KEY) | idempotent)
        retried = await client.post("/jobs", json=job, headers=bearer(ALICE_KEY) | idempotent)
        bob = await client.post("/jobs", json=job, headers=bearer(BOB_KEY) | idempotent)
        bobs_state = await client.get(f"/jobs/{bob.json()['job_id']}", headers=bearer(BOB_KEY))

    assert (alice.status_code, retried.status_code, bob.status_code) == (202, 200, 202)
    assert retried.json()["job_id"] == alice.json()["job_id"]
    assert bob.json()["job_id"] != alice.json()["job_id"]
    assert bobs_state.json()["owner"] == "bob"


# --- watch tokens ---------------------------------------------------------------------------


async def test_a_watch_token_opens_its_job_and_nothing_else(stack: Gateway) -> None:
    async with stack.client() as client:
        answer = await submit_as(client, ALICE_KEY, name="demo.countdown", seconds=0.1, steps=1)
        other = await submit_as(client, ALICE_KEY)
        job_id, token = answer["job_id"], answer["watch_token"]

        events = await collect_events(client, job_id, params={"token": token})
        by_header = await collect_events(client, job_id, headers=bearer(token))
        state = await client.get(f"/jobs/{job_id}", params={"token": token})
        elsewhere = [
            await client.get(f"/jobs/{other['job_id']}/events", params={"token": token}),
            await client.get(f"/jobs/{other['job_id']}", headers=bearer(token)),
            await client.get("/events", params={"job": other["job_id"], "token": token}),
        ]
        as_a_key = [
            await client.post("/jobs", json=COUNTDOWN, headers=bearer(token)),
            await client.delete(f"/jobs/{job_id}", headers=bearer(token)),
            await client.get("/catalog", headers=bearer(token)),
        ]

    assert isinstance(token, str)
    assert event_types(events)[0] == "queued"
    assert event_types(events)[-1] == "completed"
    assert [event.id for event in by_header] == [event.id for event in events]
    assert state.status_code == 200
    assert state.json()["status"] == "completed"
    for refused in elsewhere:
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "forbidden"
        assert refused.json()["detail"]["jobs"] == [other["job_id"]]
    for refused in as_a_key:
        _assert_unauthorized(refused)


async def test_the_query_token_works_for_an_eventsource_style_get(
    stack: Gateway, settings: Settings
) -> None:
    """What a browser's EventSource sends: no Authorization, the token in the URL, and on
    reconnect `Last-Event-ID`."""
    async with stack.client() as client:
        answer = await submit_as(client, ALICE_KEY, name="demo.countdown", seconds=0.2, steps=3)
    job_id, token = answer["job_id"], answer["watch_token"]
    port = int(stack.url.rsplit(":", 1)[1])
    eventsource = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}

    first = await raw_get(port, f"/jobs/{job_id}/events?token={token}", eventsource)
    ids = first.event_ids()
    resumed = await raw_get(
        port, f"/jobs/{job_id}/events?token={token}", eventsource | {"Last-Event-ID": ids[1]}
    )
    at_the_end = await raw_get(
        port, f"/jobs/{job_id}/events?token={token}", eventsource | {"Last-Event-ID": ids[-1]}
    )
    without = await raw_get(port, f"/jobs/{job_id}/events", eventsource)

    assert first.status == 200
    assert first.headers["content-type"].startswith("text/event-stream")
    assert b"event: completed" in first.body
    assert resumed.event_ids() == ids[2:]
    assert at_the_end.status == 204
    assert without.status == 401


async def test_a_multi_job_stream_needs_a_token_for_every_job(stack: Gateway) -> None:
    async with stack.client() as client:
        answers = [
            await submit_as(client, ALICE_KEY, name="demo.countdown", seconds=0.1, steps=1),
            await submit_as(client, BOB_KEY, name="demo.countdown", seconds=0.1, steps=1),
        ]
        jobs = [answer["job_id"] for answer in answers]
        tokens = [answer["watch_token"] for answer in answers]

        async def stream(params: dict[str, list[str]]) -> list[str]:
            async with (
                asyncio.timeout(scaled(20)),
                client.stream("GET", "/events", params=params) as response,
            ):
                assert response.status_code == 200, await response.aread()
                return [event.event async for event in read_events(response)]

        # Tokens of two keys, in any order: each job is covered by its own.
        both = await stream({"job": jobs, "token": tokens[::-1]})
        one_short = await client.get("/events", params={"job": jobs, "token": tokens[:1]})
        swapped = await client.get("/events", params={"job": jobs[:1], "token": tokens[1:]})
        with_a_bad_one = await client.get(
            "/events", params={"job": jobs, "token": [*tokens, tokens[0][:-2] + "xx"]}
        )

    assert both.count("completed") == 2
    assert one_short.status_code == 403
    assert one_short.json()["detail"]["jobs"] == jobs[1:]
    assert swapped.status_code == 403
    _assert_unauthorized(with_a_bad_one)


def _tampered(token: str) -> list[str]:
    body, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return [
        f"{body}.{flipped}{signature[1:]}",  # another signature
        f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{signature}",  # another body
        f"{body}x.{signature}",
        f"{body}.{signature}=",
        f"{body}.{signature[:-1]}",
        f"{body}{signature}",
        body,
        "",
    ]


async def test_a_tampered_token_gets_401(gateway: Gateway, settings: Settings) -> None:
    async with gateway.client() as client:
        answer = await submit_as(client, ALICE_KEY)
        job_id, token = answer["job_id"], answer["watch_token"]
        other_secret = Access({"alice": ALICE_KEY}, "another-secret-" + "9" * 32, 60).sign(
            job_id, TokenBinding("alice", "", 0), int(time.time()) + 60
        )

        for forged in [*_tampered(token), other_secret]:
            _assert_unauthorized(
                await client.get(f"/jobs/{job_id}/events", params={"token": forged})
            )
        genuine = await client.get(f"/jobs/{job_id}", params={"token": token})

    assert genuine.status_code == 200


async def test_an_expired_token_gets_401(
    gateway: Gateway, settings: Settings, redis: Redis
) -> None:
    access = _access(settings)
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        binding = await _binding(redis, settings, job_id)
        expired = access.sign(job_id, binding, int(time.time()) - 1)
        fresh = access.sign(job_id, binding, int(time.time()) + 60)

        stream = await client.get(f"/jobs/{job_id}/events", params={"token": expired})
        state = await client.get(f"/jobs/{job_id}", headers=bearer(expired))
        valid = await client.get(f"/jobs/{job_id}", params={"token": fresh})

    for refused in (stream, state):
        _assert_unauthorized(refused)
        assert refused.json()["detail"] == "the watch token has expired"
    assert valid.status_code == 200


async def test_a_token_dies_with_the_key_that_issued_it(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    before = await start_keyed_gateway(start_gateway, redis, settings)
    async with before.client() as client:
        answer = await submit_as(client, BOB_KEY)
    # The same secret and store, without bob's key (a second replica, or after a restart).
    after = await start_gateway(with_auth(settings, api_keys=f"alice:{ALICE_KEY}"))
    async with after.client() as client:
        response = await client.get(
            f"/jobs/{answer['job_id']}", params={"token": answer["watch_token"]}
        )

    _assert_unauthorized(response)
    assert "no longer accepted" in response.json()["detail"]


def test_a_token_lasts_the_token_ttl() -> None:
    now = 1_700_000_000.0

    def at(moment: float) -> Access:
        return Access({"alice": ALICE_KEY}, TOKEN_SECRET, 90.0, clock=lambda: moment)

    token = at(now).issue("job-1", TokenBinding("alice", "f00d", 2))

    assert token is not None
    assert at(now + 89.9).verify(token) == WatchGrant("job-1", "alice", int(now) + 90, "f00d", 2)
    with pytest.raises(APIError) as expired:
        at(now + 90).verify(token)
    assert (expired.value.status_code, expired.value.detail) == (401, "the watch token has expired")


# --- auth disabled, and refusing to start ---------------------------------------------------


def _disabled_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "authentication is disabled" in record.getMessage()
    ]


async def test_with_auth_disabled_anything_goes_and_a_warning_is_logged(
    start_gateway: StartGateway, settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await advertise_waiting_job(redis, settings)
    with caplog.at_level(logging.WARNING, logger="jobwire.gateway"):
        await start_gateway(with_auth(settings))
        assert _disabled_warnings(caplog) == []
        gateway = await start_gateway(settings)
        assert len(_disabled_warnings(caplog)) == 1
    async with gateway.client() as client:
        answer = (await client.post("/jobs", json={"name": "test.wait"})).json()
        state = await client.get(f"/jobs/{answer['job_id']}", params={"token": "anything"})
        unknown = await client.get("/jobs/nothing/events", headers=bearer("whatever"))

    assert answer["watch_token"] is None
    assert state.status_code == 200
    assert "owner" not in state.json()
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("missing", "changes"),
    [
        ("JOBWIRE_API_KEYS and JOBWIRE_TOKEN_SECRET", {"api_keys": "", "token_secret": ""}),
        ("JOBWIRE_API_KEYS", {"api_keys": ""}),
        ("JOBWIRE_TOKEN_SECRET", {"token_secret": ""}),
    ],
)
def test_the_gateway_refuses_to_start_with_auth_on_and_no_keys(
    settings: Settings, missing: str, changes: dict[str, str]
) -> None:
    with pytest.raises(SettingsError, match=f"authentication is on but {missing} (is|are) empty"):
        create_app(with_auth(settings, **changes))


def test_jobwire_gateway_without_keys_exits_with_the_reason() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "jobwire.cli", "gateway"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert process.returncode == 2
    assert "JOBWIRE_API_KEYS" in process.stderr
    assert "JOBWIRE_AUTH_DISABLED=true" in process.stderr
    assert "Traceback" not in process.stderr


# --- logs -----------------------------------------------------------------------------------


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """uvicorn's access log (it does not propagate to the root logger caplog watches)."""
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


async def test_keys_and_tokens_never_reach_the_logs(
    stack: Gateway, access_log: pytest.LogCaptureFixture
) -> None:
    async with stack.client() as client:
        answer = await submit_as(client, ALICE_KEY, name="demo.countdown", seconds=0.1, steps=1)
        job_id, token = answer["job_id"], answer["watch_token"]
        await collect_events(client, job_id, params={"token": token})
        await client.get(f"/jobs/{job_id}?last_event_id=0-0&tok%65n={token}&token={token}")
        await client.get(f"/events?job={job_id}&token={token}", headers=bearer(ALICE_KEY))
        await client.get(f"/jobs/{job_id}/events?token={token}x")  # a bad one: 401
        await client.get(f"/jobs/{job_id}", headers=bearer(ALICE_KEY + "x"))

    # Everything logged in this process but by the test's own HTTP client, in both formats.
    records = [r for r in access_log.records if not r.name.startswith(("httpx", "httpcore"))]
    as_json = JsonLineFormatter()
    for logged in (
        "\n".join(record.getMessage() for record in records),
        "\n".join(as_json.format(record) for record in records),
    ):
        assert f"/jobs/{job_id}/events?token=[redacted]" in logged  # the access log was read
        assert "last_event_id=0-0&tok%65n=[redacted]&token=[redacted]" in logged
        assert token[:20] not in logged
        assert token.split(".")[1] not in logged
        assert ALICE_KEY not in logged
        assert TOKEN_SECRET not in logged
    paths = {orjson.loads(as_json.format(r)).get("path") for r in records}
    assert f"/jobs/{job_id}/events?token=[redacted]" in paths  # the JSON field, redacted too


@pytest.mark.parametrize(
    ("target", "redacted"),
    [
        ("/jobs/a/events", "/jobs/a/events"),
        ("/jobs/a/events?token=abc.def", "/jobs/a/events?token=[redacted]"),
        (
            "/events?job=a&token=t1&job=b&token=t2",
            "/events?job=a&token=[redacted]&job=b&token=[redacted]",
        ),
        ("/events?tok%65n=t1&Token=t2&token", "/events?tok%65n=[redacted]&Token=[redacted]&token"),
        ("/x?tokens=keep&my_token=keep", "/x?tokens=keep&my_token=keep"),
        ("/x?a=1&token=", "/x?a=1&token=[redacted]"),
    ],
)
def test_redact_target(target: str, redacted: str) -> None:
    assert redact_target(target) == redacted


def test_api_keys_are_named_by_their_name_or_an_id_keyed_with_the_token_secret(
    settings: Settings,
) -> None:
    keys = parse_api_keys(f" alice:{ALICE_KEY} , {BOB_KEY},", id_secret=TOKEN_SECRET)
    access = Access.from_settings(with_auth(settings, api_keys=f"alice:{ALICE_KEY},{BOB_KEY}"))

    assert keys == {"alice": ALICE_KEY, unnamed_key_id(BOB_KEY, TOKEN_SECRET): BOB_KEY}
    assert access.key_id(BOB_KEY) == unnamed_key_id(BOB_KEY, TOKEN_SECRET)
    assert access.key_id(ALICE_KEY) == "alice"
    assert parse_api_keys("", id_secret=TOKEN_SECRET) == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBWIRE_AUTH_DISABLED", "maybe"),
        ("JOBWIRE_AUTH_DISABLED", ""),
        ("JOBWIRE_API_KEYS", "too-short"),
        ("JOBWIRE_API_KEYS", "a key with spaces in it"),
        ("JOBWIRE_API_KEYS", f"bad name:{ALICE_KEY}"),
        ("JOBWIRE_API_KEYS", f"a:{ALICE_KEY},a:{BOB_KEY}"),
        ("JOBWIRE_API_KEYS", f"a:{ALICE_KEY},b:{ALICE_KEY}"),
        ("JOBWIRE_TOKEN_SECRET", "short"),
        ("JOBWIRE_TOKEN_TTL_S", "0"),
        ("JOBWIRE_CORS_ORIGINS", "https://app.example.com/"),
        ("JOBWIRE_CORS_ORIGINS", "app.example.com"),
        ("JOBWIRE_MAX_STREAMS_PER_KEY", "-1"),
        ("JOBWIRE_SUBMITS_PER_MINUTE", "-1"),
    ],
)
def test_invalid_access_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("raw", "disabled"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False)],
)
def test_auth_is_disabled_only_when_said_so(raw: str, disabled: bool) -> None:
    assert Settings.from_env({"JOBWIRE_AUTH_DISABLED": raw}).auth_disabled is disabled
    assert Settings.from_env({}).auth_enabled


def test_settings_never_show_keys_or_the_secret(settings: Settings) -> None:
    text = repr(with_auth(settings))

    assert ALICE_KEY not in text
    assert TOKEN_SECRET not in text


# --- CORS -----------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"
_PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, last-event-id",
}


@pytest.fixture
async def cors_gateway(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    return await start_keyed_gateway(
        start_gateway, redis, settings, cors_origins=f"{ORIGIN}, http://localhost:3000"
    )


async def test_cors_preflight_from_an_allowed_origin(cors_gateway: Gateway) -> None:
    async with cors_gateway.client() as client:
        response = await client.options("/jobs", headers=_PREFLIGHT)

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    assert "DELETE" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    "change",
    [
        {"Origin": "https://evil.example.com"},
        {"Origin": ORIGIN + "/"},
        {"Access-Control-Request-Method": "PUT"},
        {"Access-Control-Request-Headers": "authorization, x-something-else"},
    ],
    ids=["other origin", "origin with a path", "method", "header"],
)
async def test_cors_preflight_refused(cors_gateway: Gateway, change: dict[str, str]) -> None:
    async with cors_gateway.client() as client:
        response = await client.options("/jobs", headers=_PREFLIGHT | change)

    assert response.status_code == 403
    assert response.json()["error"] == "cors_refused"
    if "Origin" in change:
        assert "access-control-allow-origin" not in response.headers


async def test_cors_headers_on_answers_and_streams(cors_gateway: Gateway) -> None:
    origin = {"Origin": ORIGIN}
    async with cors_gateway.client() as client:
        submitted = await client.post(
            "/jobs", json={"name": "test.wait"}, headers=bearer(ALICE_KEY) | origin
        )
        answer = submitted.json()
        async with client.stream(
            "GET", f"/jobs/{answer['job_id']}/events?token={answer['watch_token']}", headers=origin
        ) as stream:
            first = [event async for event in read_events(stream, limit=1)]
            stream_headers = stream.headers
        stranger = await client.get("/healthz", headers={"Origin": "https://evil.example.com"})

    assert submitted.headers["access-control-allow-origin"] == ORIGIN
    exposed = submitted.headers["access-control-expose-headers"].lower()
    assert {"location", "retry-after", "www-authenticate"} <= {
        h.strip() for h in exposed.split(",")
    }
    assert stream_headers["access-control-allow-origin"] == ORIGIN
    assert event_types(first) == ["queued"]
    assert "access-control-allow-origin" not in stranger.headers


async def test_without_cors_origins_no_cross_origin_call_is_allowed(gateway: Gateway) -> None:
    async with gateway.client() as client:
        preflight = await client.options("/jobs", headers=_PREFLIGHT)
        simple = await client.get("/healthz", headers={"Origin": ORIGIN})

    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in simple.headers
