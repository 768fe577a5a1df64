"""`GET /metrics` on the gateway and on a worker: exact counts for a scripted scenario (2 jobs,
1 failure, 3 subscribers, 1 resume) against a real gateway and a real worker, and who may
read the gateway's."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.endpoints.instruments import GatewayInstruments
from shared.catalog import advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import RunWorker, StartGateway
from tests.support import SSEParser, free_port, scaled, stream_ids, submit, wait_until
from worker import demo

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=scaled(5)) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def read_stream(
    client: httpx.AsyncClient, job_id: str, headers: dict[str, str] | None = None
) -> tuple[list[str], int]:
    """The event types of one stream until the gateway ends it, and the bytes of its body."""
    parser, types, size = SSEParser(), [], 0
    async with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            types += [event.event for event in parser.feed(chunk)]
    return types, size


async def test_a_scripted_scenario_gives_exact_counts_on_both_endpoints(
    settings: Settings, start_gateway: StartGateway, start_worker: RunWorker, redis: Redis
) -> None:
    gateway = await start_gateway(settings.replace(hub_linger_s=60))
    await advertise(redis, Keys(settings.key_prefix), demo.jobs.specs())  # no worker yet
    async with gateway.client() as client:
        counted = await submit(client, "demo.countdown", seconds=0.3, steps=3)
        failing = await submit(client, "demo.fail", message="planned")
        # Three subscribers join while both jobs wait in the queue.
        watchers = [
            asyncio.create_task(read_stream(client, job_id))
            for job_id in (counted, counted, failing)
        ]
        await wait_until(lambda: gateway.hub.open_streams == 3, timeout=10)
        before = await scrape(gateway.url)
        assert one(before, "jobwire_queue_depth") == 2
        assert one(before, "jobwire_gateway_open_streams") == 3
        assert one(before, "jobwire_gateway_subscribers") == 3
        assert one(before, "jobwire_gateway_watched_jobs") == 2

        port = free_port()
        await start_worker(settings.replace(worker_metrics_port=port))
        watched = await asyncio.gather(*watchers)
        stored = {
            job_id: await stream_ids(redis, settings, job_id) for job_id in (counted, failing)
        }
        # One resume, from the counted job's `started`: the hub's ring still holds it.
        resumed = await read_stream(client, counted, {"Last-Event-ID": stored[counted][1]})
        await wait_until(lambda: gateway.hub.open_streams == 0, timeout=10)
        gateway_samples = await scrape(gateway.url)
        worker_samples = await scrape(f"http://127.0.0.1:{port}")

    assert watched[0][0][-1] == "completed"
    assert watched[2][0][-1] == "failed"
    delivered = sum(len(types) for types, _ in [*watched, resumed])
    assert delivered == 3 * len(stored[counted]) + len(stored[failing]) - 2  # resumed after 2
    g = gateway_samples
    assert one(g, "jobwire_gateway_events_delivered_total") == delivered
    assert one(g, "jobwire_gateway_bytes_written_total") == sum(
        size for _, size in [*watched, resumed]
    )
    assert one(g, "jobwire_gateway_resumes_total", kind="ring") == 1
    for kind in ("redis", "reset", "finished"):
        assert one(g, "jobwire_gateway_resumes_total", kind=kind) == 0
    events_route = {"route": "/jobs/{job_id}/events", "method": "GET", "status": "200"}
    assert one(g, "jobwire_gateway_requests_total", **events_route) == 4
    submits = {"route": "/jobs", "method": "POST", "status": "202"}
    assert one(g, "jobwire_gateway_requests_total", **submits) == 2
    assert one(g, "jobwire_gateway_submit_to_first_event_seconds_count") == 2
    assert one(g, "jobwire_gateway_open_streams") == 0
    assert one(g, "jobwire_gateway_slow_consumer_cutoffs_total") == 0
    assert one(g, "jobwire_gateway_pubsub_reconnects_total") == 0
    assert one(g, "jobwire_queue_depth") == 0
    assert one(g, "jobwire_workers_alive") == 1
    assert one(g, "jobwire_redis_up") == 1
    # The deployment-wide count every worker keeps in Redis, shown by any gateway.
    assert one(g, "jobwire_jobs_ended_total", job="demo.countdown", outcome="completed") == 1
    assert one(g, "jobwire_jobs_ended_total", job="demo.fail", outcome="failed") == 1
    ended = [name for (name, _), _ in g.items() if name == "jobwire_jobs_ended_total"]
    assert len(ended) == 2

    w = worker_samples
    for job in ("demo.countdown", "demo.fail"):
        assert one(w, "jobwire_worker_jobs_started_total", job=job) == 1
        assert one(w, "jobwire_worker_job_duration_seconds_count", job=job) == 1
    assert one(w, "jobwire_worker_jobs_ended_total", job="demo.countdown", outcome="completed") == 1
    assert one(w, "jobwire_worker_jobs_ended_total", job="demo.fail", outcome="failed") == 1
    for job, outcome in [("demo.countdown", "failed"), ("demo.fail", "completed")]:
        assert one(w, "jobwire_worker_jobs_ended_total", job=job, outcome=outcome) == 0
    assert one(w, "jobwire_worker_jobs_ended_total", job="demo.flaky", outcome="retried") == 0
    # Every event but the gateway's `queued` was published by the worker.
    published = {
        labels[0][1]: value
        for (name, labels), value in w.items()
        if name == "jobwire_worker_events_published_total"
    }
    written = [t for types, _ in watched[1:] for t in types if t != "queued"]
    assert {t: n for t, n in published.items() if n} == {t: written.count(t) for t in set(written)}
    assert one(w, "jobwire_worker_publish_seconds_count") == len(written)
    assert one(w, "jobwire_worker_publish_retries_total") == 0


@pytest.fixture
def guarded(settings: Settings) -> Settings:
    return settings.replace(
        auth_disabled=False,
        api_keys="app:" + "k" * 32,
        token_secret="s" * 40,
        metrics_key="m" * 24,
    )


@pytest.mark.parametrize(
    ("peer", "authorization", "status"),
    [
        ("127.0.0.1", None, 200),
        ("::1", None, 200),
        ("203.0.113.7", None, 401),
        ("203.0.113.7", "Bearer " + "x" * 24, 401),
        ("203.0.113.7", "Bearer " + "m" * 24, 200),
        ("203.0.113.7", "Bearer " + "k" * 32, 200),
    ],
)
async def test_only_loopback_the_metrics_key_or_an_api_key_reads_the_gateways_metrics(
    guarded: Settings, peer: str, authorization: str | None, status: int
) -> None:
    app = create_app(guarded)
    headers = {} if authorization is None else {"Authorization": authorization}
    transport = httpx.ASGITransport(app, client=(peer, 40_000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        response = await client.get("/metrics", headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert "jobwire_gateway_open_streams" in response.text


def test_each_app_counts_apart(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    instruments: list[GatewayInstruments] = [first.state.instruments, second.state.instruments]
    instruments[0].counters.events_delivered += 5
    texts = [parse(i.exposition(None, []).decode()) for i in instruments]

    assert [one(t, "jobwire_gateway_events_delivered_total") for t in texts] == [5, 0]
