"""The OpenAPI document at `/openapi.json` describes the gateway as it is: every route, and
whatever schemathesis sends it from the document — its examples, valid data, invalid data —
gets a documented answer: never a 5xx, never a status, header, media type or body the document
does not allow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route

from gateway.app import create_app
from gateway.endpoints.openapi import DOCUMENT
from shared.settings import Settings
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    bearer,
    start_keyed_gateway,
    with_auth,
)
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import collect_events

pytestmark = pytest.mark.timeout(120)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_STRATEGY = 20
# Streams of jobs that never end are not generated (see `Jobs`); this bounds any other.
REQUEST_TIMEOUT_S = 5.0

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
Operation = APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]
Strategy = st.SearchStrategy[Case]
DESCRIBED = sorted(
    (path, method)
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method != "parameters"
)
OPERATIONS: list[Operation] = [SCHEMA[path][method] for path, method in DESCRIBED]


def _operations_of_the_app(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    found = set()
    for route in app.routes:
        if isinstance(route, Route):
            methods = (route.methods or set()) - {"HEAD"}
            found |= {(method.lower(), route.path) for method in methods}
        elif isinstance(route, Mount):
            found.add(("get", f"{route.path}/{{path}}"))
    return found


def test_the_document_is_valid_openapi() -> None:
    SCHEMA.validate()


def test_every_route_is_described(settings: Settings) -> None:
    described = {(method, path) for path, method in DESCRIBED}

    assert described == _operations_of_the_app(with_auth(settings))


async def test_the_gateway_serves_the_document(
    start_gateway: StartGateway, settings: Settings
) -> None:
    gateway = await start_gateway(with_auth(settings))
    async with gateway.client() as client:
        response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.json() == DOCUMENT


# --- the schemathesis run -------------------------------------------------------------------


@dataclass(frozen=True)
class Jobs:
    """Real jobs to aim generated requests at (random ids only ever find no job)."""

    finished: str  # its stream replays and closes
    finished_token: str
    running: str  # its stream would never end: not used for streams


@dataclass
class Run:
    """What one schemathesis run sent and got."""

    calls: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _strategies(operation: Operation, jobs: Jobs) -> Iterator[tuple[Strategy, dict[str, str]]]:
    """(strategy, extra headers): the document's examples, valid and invalid data, and valid
    data about real jobs — by API key, by watch token, by the wrong token, by no credential."""
    key = bearer(ALICE_KEY)
    yield from ((strategy, key) for strategy in SCHEMA.get_strategies_from_examples(operation))
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        yield operation.as_strategy(generation_mode=mode), key
    if "{job_id}" in operation.path:
        yield from _about_one_job(operation, jobs)
    if operation.path == "/events":
        yield from _about_jobs(operation, jobs)
    if operation.path == "/static/{path}":
        for name in ("app.css", "index.html", "js/main.js"):
            yield operation.as_strategy(path_parameters={"path": name}), {}


def _about_one_job(operation: Operation, jobs: Jobs) -> Iterator[tuple[Strategy, dict[str, str]]]:
    key, token = bearer(ALICE_KEY), [jobs.finished_token]
    finished, running = {"job_id": jobs.finished}, {"job_id": jobs.running}
    streams = operation.path.endswith("/events")
    yield operation.as_strategy(path_parameters=finished), key
    if not streams:
        yield operation.as_strategy(path_parameters=running), key
    if operation.method.upper() != "GET":
        return
    yield operation.as_strategy(path_parameters=finished, query={"token": token}), {}
    yield operation.as_strategy(path_parameters=running, query={"token": token}), {}
    yield operation.as_strategy(path_parameters=finished), {}
    yield operation.as_strategy(path_parameters=finished), bearer(BOB_KEY)


def _about_jobs(operation: Operation, jobs: Jobs) -> Iterator[tuple[Strategy, dict[str, str]]]:
    token = [jobs.finished_token]
    yield operation.as_strategy(query={"job": [jobs.finished]}), bearer(ALICE_KEY)
    yield operation.as_strategy(query={"job": [jobs.finished], "token": token}), {}
    yield operation.as_strategy(query={"job": [jobs.running], "token": token}), {}
    yield operation.as_strategy(query={"job": [jobs.finished]}), {}


def _run_strategy(run: Run, label: str, strategy: Strategy, call: Callable[[Any], None]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_STRATEGY,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(st.data())
    def test(data: st.DataObject) -> None:
        call(data.draw(strategy))

    try:
        test()
    except hypothesis.errors.Unsatisfiable:
        pass  # nothing to vary: no parameters, so no invalid data either
    except Exception as exc:
        run.failures.append(f"{label}: {str(exc)[:3_000]}")


def _fuzz(base_url: str, jobs: Jobs) -> Run:
    run = Run()
    session = requests.Session()
    for operation in OPERATIONS:
        label = operation.label
        for strategy, headers in _strategies(operation, jobs):

            def call(case: Case, headers: dict[str, str] = headers, label: str = label) -> None:
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S
                )
                run.calls += 1
                run.statuses.setdefault(label, set()).add(response.status_code)
                case.validate_response(response, checks=CHECKS, headers=headers)

            _run_strategy(run, label, strategy, call)
    return run


async def _real_jobs(gateway: Gateway) -> Jobs:
    async with gateway.client(headers=bearer(ALICE_KEY)) as client:
        done = await client.post("/jobs", json={"name": "demo.countdown", "args": {"seconds": 0}})
        running = await client.post(
            "/jobs", json={"name": "demo.countdown", "args": {"seconds": 600}}
        )
        await collect_events(client, done.json()["job_id"])
    return Jobs(done.json()["job_id"], done.json()["watch_token"], running.json()["job_id"])


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    start_gateway: StartGateway, start_worker: RunWorker, settings: Settings, redis: Redis
) -> None:
    await start_worker()
    gateway = await start_keyed_gateway(start_gateway, redis, settings, submits_per_minute=0)
    jobs = await _real_jobs(gateway)

    started = time.monotonic()
    # schemathesis calls with blocking requests: in a thread, so this loop serves them.
    run = await asyncio.to_thread(_fuzz, gateway.url, jobs)
    elapsed = time.monotonic() - started

    reached = {label: sorted(codes) for label, codes in run.statuses.items()}
    print(f"schemathesis: {run.calls} requests in {elapsed:.1f} s; statuses: {reached}")
    assert run.failures == []
    assert set(reached) == {operation.label for operation in OPERATIONS}
    # It got past the checks to the answers that carry data, not only refusals.
    assert {200, 202, 400, 401, 422} <= set(reached["POST /jobs"])
    assert {200, 400, 401, 403, 404} <= set(reached["GET /jobs/{job_id}"])
    assert {200, 400} <= set(reached["GET /jobs"])
    assert {202, 404, 409} <= set(reached["DELETE /jobs/{job_id}"])
    assert {200, 400, 401, 403, 404} <= set(reached["GET /jobs/{job_id}/events"])
    assert {200, 400, 401, 403, 404} <= set(reached["GET /events"])
    assert {200, 404} <= set(reached["GET /static/{path}"])


# --- answers a generated request rarely reaches, checked against the document ----------------


def _check(gateway: Gateway, label: str, **request: Any) -> int:
    """Sends one request through schemathesis and runs the same checks on its answer."""
    method, path = label.split(" ", 1)
    headers = request.pop("extra_headers", {})
    case = SCHEMA[path][method].Case(**request)
    response = case.call(base_url=gateway.url, headers=headers, timeout=REQUEST_TIMEOUT_S)
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response.status_code


async def test_limits_and_refusals_match_the_document(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    limited = {"submits_per_minute": 1, "max_streams_per_key": 1, "max_body_bytes": 1_000}
    gateway = await start_keyed_gateway(start_gateway, redis, settings, **limited)
    async with gateway.client(headers=bearer(ALICE_KEY)) as client:
        answer = (await client.post("/jobs", json={"name": "test.wait"})).json()
    job_id, token = answer["job_id"], answer["watch_token"]
    key = bearer(ALICE_KEY)

    def check_all() -> list[int]:
        events = "GET /jobs/{job_id}/events"
        with requests.get(
            f"{gateway.url}/jobs/{job_id}/events", headers=key, stream=True, timeout=5
        ) as holding:  # the key's one stream, held open
            assert holding.status_code == 200
            return [
                _check(gateway, "POST /jobs", body={"name": "test.wait"}, headers=key),
                _check(gateway, events, path_parameters={"job_id": job_id}, headers=key),
                _check(gateway, "GET /events", query={"job": [job_id]}, headers=key),
                _check(
                    gateway, events, path_parameters={"job_id": "other"}, query={"token": [token]}
                ),
                _check(
                    gateway,
                    "GET /jobs/{job_id}",
                    path_parameters={"job_id": "x"},
                    query={"token": ["x"]},
                ),
                _check(gateway, "POST /jobs", body={"name": "x" * 2_000}, headers=bearer(BOB_KEY)),
                _check(
                    gateway,
                    "DELETE /jobs/{job_id}",
                    path_parameters={"job_id": job_id},
                    headers=key,
                ),
                _check(
                    gateway,
                    "DELETE /jobs/{job_id}",
                    path_parameters={"job_id": job_id},
                    headers=key,
                ),
                _check(
                    gateway,
                    events,
                    path_parameters={"job_id": job_id},
                    query={"token": [token], "last_event_id": _last_event_id(gateway, job_id)},
                ),
            ]

    statuses = await asyncio.to_thread(check_all)

    assert statuses == [429, 429, 429, 403, 401, 413, 202, 409, 204]


def _last_event_id(gateway: Gateway, job_id: str) -> str:
    state = requests.get(f"{gateway.url}/jobs/{job_id}", headers=bearer(ALICE_KEY), timeout=5)
    last: str = state.json()["last_event_id"]
    return last
