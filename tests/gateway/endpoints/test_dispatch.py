"""Event-stream routes dispatched past the middleware, and HEAD on them: by either path, the
status and headers a GET would get, and nothing else — no body, no stream, no slot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from gateway.endpoints.limits import Limits
from shared.settings import Settings
from tests.auth_support import (
    ALICE_KEY,
    bearer,
    holding_alices_one_stream,
    start_keyed_gateway,
    submit_as,
)
from tests.conftest import Gateway, StartGateway
from tests.support import scaled, stream_ids

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    after_head: bytes  # everything the server sent after the head, until it closed


async def _head(gateway: Gateway, path: str, headers: dict[str, str]) -> Answer:
    """HEAD `path` on a connection the server is asked to close once it has answered."""
    port = urlsplit(gateway.url).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"HEAD {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        # A HEAD that opened a stream would neither stop sending nor close: this bound fails it.
        async with asyncio.timeout(scaled(10)):
            data = await reader.read(-1)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.lower().split(": ", 1) for line in header_lines)
    return Answer(int(status_line.split()[1]), parsed, rest)


def _limits(gateway: Gateway) -> Limits:
    limits: Limits = gateway.server.config.app.state.limits  # type: ignore[union-attr]
    return limits


@pytest.mark.parametrize("origin", [None, "http://elsewhere.example"], ids=["direct", "origin"])
async def test_head_on_an_event_stream_answers_headers_only_and_holds_no_slot(
    start_gateway: StartGateway, settings: Settings, redis: Redis, origin: str | None
) -> None:
    # One slot: a HEAD that took it, or kept it, would turn the GET below into a 429.
    gateway = await start_keyed_gateway(start_gateway, redis, settings, max_streams_per_key=1)
    anyone = {"Origin": origin} if origin else {}
    key = bearer(ALICE_KEY) | anyone
    async with gateway.client() as client:
        live = (await submit_as(client, ALICE_KEY))["job_id"]
        done = (await submit_as(client, ALICE_KEY))["job_id"]
        assert (await client.delete(f"/jobs/{done}", headers=bearer(ALICE_KEY))).status_code == 202
    last = (await stream_ids(redis, settings, done))[-1]
    cases = [
        (f"/jobs/{live}/events", key, 200),
        (f"/events?job={live}&job={done}", key, 200),
        (f"/jobs/{done}/events", key | {"Last-Event-ID": last}, 204),
        (f"/events?job={done}", key | {"Last-Event-ID": f"{done}:{last}"}, 204),
        (f"/jobs/{live}/events", key | {"Last-Event-ID": "not-an-id"}, 400),
        ("/events", key, 400),
        (f"/jobs/{live}/events", anyone, 401),
        (f"/events?job={live}", anyone, 401),
        ("/jobs/made-up/events", key, 404),
        ("/events?job=made-up&job=another", key, 404),
    ]

    answers = [await _head(gateway, path, headers) for path, headers, _ in cases]

    for (path, _, status), answer in zip(cases, answers, strict=True):
        assert (path, answer.status) == (path, status)
        assert answer.after_head == b"", (path, answer.after_head[:200])
    streaming = answers[0].headers
    assert streaming["content-type"] == "text/event-stream"
    assert streaming["cache-control"] == "no-cache"
    assert "content-length" not in streaming, "a stream's GET states no length"
    assert answers[4].headers["content-type"] == "application/json"  # as its GET's error
    assert _limits(gateway).open_streams("alice") == 0
    assert gateway.hub.counts()["subscribers"] == 0
    async with (
        gateway.client() as client,
        client.stream("GET", f"/jobs/{live}/events", headers=key) as response,
    ):
        assert response.status_code == 200, "the HEADs left the key's one slot free"


async def test_head_is_refused_like_its_get_when_the_slots_are_taken(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    async with holding_alices_one_stream(start_gateway, redis, settings) as (gateway, _, job_id):
        answer = await _head(gateway, f"/jobs/{job_id}/events", bearer(ALICE_KEY))
        assert _limits(gateway).open_streams("alice") == 1

    assert (answer.status, answer.headers["retry-after"]) == (429, "5")
    assert answer.after_head == b""
