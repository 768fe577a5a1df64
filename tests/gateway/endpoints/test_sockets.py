"""`/jobs/{id}/ws` and `/events/ws`: the same events and resume rules as the SSE streams, as
WebSocket messages, with the `websockets` client against a real uvicorn; refusals are HTTP
answers before the upgrade."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared.publish import Publisher
from shared.settings import Settings
from tests.auth_support import (
    ALICE_KEY,
    BOB_KEY,
    bearer,
    start_keyed_gateway,
    submit_as,
)
from tests.conftest import Gateway, StartGateway
from tests.socket_support import read_socket, refusal, ws_url
from tests.support import (
    publish_completed,
    publish_progress,
    publish_started,
    stream_ids,
    submit,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


async def test_a_job_over_a_websocket_is_exactly_its_stream_then_end(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.3, steps=3)
    read = await read_socket(ws_url(stack.url, f"/jobs/{job_id}/ws"))

    assert read.ids == await stream_ids(redis, settings, job_id)
    assert read.types[-2:] == ["completed", "end"]
    assert read.messages[-1] == {"type": "end"}
    assert read.close_code == 1000
    first = read.messages[0]
    assert (first["type"], first["data"]["type"], first["data"]["job"]) == ("queued",) * 2 + (
        job_id,
    )


@pytest.mark.parametrize("cut_after", [1, 3, 6])
async def test_resume_from_any_id_gets_exactly_the_rest(
    start_gateway: StartGateway, redis: Redis, settings: Settings, cut_after: int
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = f"ws-resume-{cut_after}"
    await publish_started(publisher, job_id)
    await publish_progress(publisher, job_id, 5)
    url = ws_url(gateway.url, f"/jobs/{job_id}/ws")
    first = await read_socket(url, limit=cut_after)
    rest = asyncio.create_task(read_socket(f"{url}?last_event_id={first.ids[-1]}"))
    await publish_progress(publisher, job_id, 3)
    await publish_completed(publisher, job_id)
    resumed = await rest

    assert first.ids + resumed.ids == await stream_ids(redis, settings, job_id)
    assert resumed.types[-1] == "end"
    at_end = await read_socket(f"{url}?last_event_id={resumed.ids[-1]}")
    assert (at_end.messages, at_end.close_code) == ([{"type": "end"}], 1000)


async def test_a_position_the_stream_cannot_vouch_for_gets_reset_with_the_snapshot(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "ws-reset"
    await publish_started(publisher, job_id)
    await publish_completed(publisher, job_id)
    read = await read_socket(ws_url(gateway.url, f"/jobs/{job_id}/ws?last_event_id=1-0"))

    reset = read.messages[0]
    assert "id" not in reset
    assert (reset["type"], reset["data"]["reason"]) == ("reset", "unknown_position")
    assert reset["data"]["state"]["status"] == "completed"
    assert read.ids == await stream_ids(redis, settings, job_id)
    assert read.types[-1] == "end"


async def test_several_jobs_resume_from_the_cursor(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    jobs = ["ws-multi-a", "ws-multi-b"]
    for job_id in jobs:
        await publish_started(publisher, job_id)
    url = ws_url(gateway.url, "/events/ws?job=ws-multi-a&job=ws-multi-b")
    first = await read_socket(url, limit=3)
    cursor = first.ids[-1]
    rest = asyncio.create_task(read_socket(f"{url}&last_event_id={cursor}"))
    for job_id in jobs:
        await publish_progress(publisher, job_id, 2)
        await publish_completed(publisher, job_id)
    resumed = await rest

    delivered: dict[str, list[str]] = {job_id: [] for job_id in jobs}
    for message in first.messages + resumed.messages:
        if "id" in message:
            envelope = message["data"]
            position = dict(entry.split(":") for entry in message["id"].split(","))
            delivered[envelope["job"]].append(position[envelope["job"]])
    for job_id in jobs:
        assert delivered[job_id] == await stream_ids(redis, settings, job_id)
    assert resumed.messages[-1] == {"type": "end"}
    assert resumed.close_code == 1000


async def test_refusals_are_http_answers_before_the_upgrade(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_keyed_gateway(start_gateway, redis, settings)
    async with gateway.client() as client:
        job = await submit_as(client, ALICE_KEY)
        other = await submit_as(client, ALICE_KEY)
        plain = await client.get(f"/jobs/{job['job_id']}/ws")
    url = ws_url(gateway.url, f"/jobs/{job['job_id']}/ws")

    nobody = await refusal(url)
    assert (nobody.status, nobody.body["error"]) == (401, "unauthorized")
    assert nobody.headers["www-authenticate"].startswith("Bearer")
    assert (await refusal(url, headers=bearer(BOB_KEY))).body["error"] == "job_not_found"
    bad_position = await refusal(f"{url}?last_event_id=later", headers=bearer(ALICE_KEY))
    assert (bad_position.status, bad_position.body["error"]) == (400, "invalid_last_event_id")
    wrong_token = await refusal(
        ws_url(gateway.url, f"/jobs/{other['job_id']}/ws?token={job['watch_token']}")
    )
    assert (wrong_token.status, wrong_token.body["error"]) == (403, "forbidden")
    elsewhere = await refusal(
        f"{url}?token={job['watch_token']}", headers={"Origin": "https://evil.example"}
    )
    assert (elsewhere.status, elsewhere.body["error"]) == (403, "origin_refused")
    assert (plain.status_code, plain.json()["error"]) == (426, "upgrade_required")
    # The watch token opens it, from the page's own origin: the job stays queued.
    host = urlsplit(gateway.url).netloc
    held = await read_socket(
        f"{url}?token={job['watch_token']}", headers={"Origin": f"http://{host}"}, limit=1
    )
    assert held.types == ["queued"]


async def test_a_stream_past_its_keys_limit_is_refused_with_429(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_keyed_gateway(start_gateway, redis, settings, max_streams_per_key=1)
    async with gateway.client() as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
    url = ws_url(gateway.url, f"/jobs/{job_id}/ws")
    holding = asyncio.create_task(read_socket(url, headers=bearer(ALICE_KEY), limit=2))
    await wait_until(lambda: gateway.hub.open_streams == 1, timeout=10)
    refused = await refusal(url, headers=bearer(ALICE_KEY))
    holding.cancel()

    assert (refused.status, refused.body["error"]) == (429, "too_many_streams")
    assert refused.headers["retry-after"] == "5"


async def test_a_websocket_that_never_reads_is_cut_and_harms_no_one(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    limit = 32 * 1024
    gateway = await start_gateway(settings.replace(max_buffer_bytes=limit))
    publisher = Publisher(redis, settings)
    job_id = "ws-flooded"
    await publish_started(publisher, job_id)
    port = urlsplit(gateway.url).port
    assert port is not None
    stalled = [await _unread_socket(port, f"/jobs/{job_id}/ws") for _ in range(5)]
    reader = asyncio.create_task(read_socket(ws_url(gateway.url, f"/jobs/{job_id}/ws")))
    await wait_until(lambda: gateway.hub.open_streams == 6, timeout=30)
    # More than the kernel's socket buffers hold: 8 MB to each.
    await publish_progress(publisher, job_id, 1000, size=8000)
    await publish_completed(publisher, job_id)
    read = await reader
    for sock in stalled:
        sock.close()

    assert read.ids == await stream_ids(redis, settings, job_id)
    assert gateway.hub.counters.slow_consumer_cutoffs == 5
    await wait_until(lambda: gateway.hub.open_streams == 0, timeout=10)


async def _unread_socket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a bare socket with a small receive buffer, never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    handshake = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, handshake.encode())
    return sock


async def test_handshakes_are_counted_in_the_request_tally_by_route_and_status(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "ws-tallied"
    await publish_started(publisher, job_id)
    await publish_completed(publisher, job_id)
    single = ws_url(gateway.url, f"/jobs/{job_id}/ws")
    for _ in range(2):
        assert (await read_socket(single)).types[-1] == "end"
    assert (await read_socket(ws_url(gateway.url, f"/events/ws?job={job_id}"))).close_code == 1000
    missing = await refusal(ws_url(gateway.url, "/jobs/no-such-job/ws"))
    assert missing.status == 404
    async with gateway.client() as client:
        plain = await client.get(f"/jobs/{job_id}/ws")
        assert plain.status_code == 426
        metrics = await client.get("/metrics")

    counted = {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "jobwire_gateway_requests_total" and sample.labels["method"] == "GET"
    }
    assert {key: n for key, n in counted.items() if "/ws" in key[0] and n} == {
        ("/jobs/{job_id}/ws", "101"): 2,
        ("/jobs/{job_id}/ws", "404"): 1,
        ("/jobs/{job_id}/ws", "426"): 1,
        ("/events/ws", "101"): 1,
    }
