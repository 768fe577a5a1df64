"""`JOBWIRE_GATEWAY_PROCESSES=2 jobwire gateway`: two gateway processes on one port, each with
its own hub, resuming each other's clients exactly; a scrape of /metrics sums both; one that
dies is restarted, SIGTERM stops them all, and a process that cannot start stops the lot."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.settings import Settings
from tests.support import (
    RawResponse,
    free_port,
    port_open,
    raw_get,
    scaled,
    stream_ids,
    wait_until,
)
from tests.up_support import clean_env

pytestmark = pytest.mark.timeout(90)

JOBWIRE = Path(sys.executable).parent / "jobwire"
_Key = tuple[str, tuple[tuple[str, str], ...]]  # a sample's name and labels
_Samples = dict[_Key, float]


def _gateway_processes(parent: int) -> list[int]:
    """The pids of the gateway processes `parent` started (multiprocessing's spawned
    children, not its resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def _listening_sockets(port: int) -> int:
    """Sockets in LISTEN on `port`: one per gateway process (SO_REUSEPORT)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local_and_state = (line.split()[1:4:2] for line in lines)
    return sum(
        1 for local, state in local_and_state if local.endswith(f":{port:04X}") and state == "0A"
    )


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _start(settings: Settings, port: int) -> asyncio.subprocess.Process:
    env = clean_env(
        **settings.replace(port=port, gateway_processes=2, log_level="WARNING").to_env()
    )
    return await asyncio.create_subprocess_exec(
        str(JOBWIRE),
        "gateway",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.fixture
async def two_processes(
    settings: Settings,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    port = free_port()
    process = await _start(settings, port)
    try:
        await wait_until(lambda: _listening_sockets(port) == 2, timeout=30)
        await wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), timeout=30)
        yield process, port
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(scaled(30)):
                await process.wait()


async def test_both_processes_serve_and_resume_each_others_clients_exactly(
    two_processes: tuple[asyncio.subprocess.Process, int], redis: Redis, settings: Settings
) -> None:
    _, port = two_processes
    publisher = Publisher(redis, settings)
    jobs = [f"shared-port-{n}" for n in range(20)]
    watchers = await _watched_on_both_processes(port, redis, publisher, jobs)
    for n in range(10):
        for job_id in jobs:
            await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": n}))
    midway = {job_id: (await stream_ids(redis, settings, job_id))[-1] for job_id in jobs}
    # Clients resuming mid-job land on either process and get exactly the rest.
    resumers = [
        asyncio.create_task(
            raw_get(port, f"/jobs/{job_id}/events", {"Last-Event-ID": midway[job_id]})
        )
        for job_id in jobs
        for _ in range(5)
    ]
    for job_id in jobs:
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": 10}))
        await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": None}))
    watched = await asyncio.gather(*watchers)
    resumed = await asyncio.gather(*resumers)

    for n, job_id in enumerate(jobs):
        stored = await stream_ids(redis, settings, job_id)
        after = stored[stored.index(midway[job_id]) + 1 :]
        assert all(r.event_ids() == stored for r in watched[n * 5 : n * 5 + 5])
        assert all(r.event_ids() == after for r in resumed[n * 5 : n * 5 + 5])


async def _watched_on_both_processes(
    port: int, redis: Redis, publisher: Publisher, jobs: list[str]
) -> list[asyncio.Task[RawResponse]]:
    """`jobs` started, five clients watching each: the tasks reading their streams, once both
    processes hold a subscription (each subscribes to the jobs its own clients watch)."""
    for job_id in jobs:
        queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
        await publisher.publish(queued, create=True)
        await publisher.publish(make_event(EventType.STARTED, job_id, 1, {}))
    watchers = [
        asyncio.create_task(raw_get(port, f"/jobs/{job_id}/events"))
        for job_id in jobs
        for _ in range(5)
    ]
    await wait_until(lambda: _subscribed_connections(redis, count=2), timeout=20)
    return watchers


async def _subscribed_connections(redis: Redis, count: int) -> bool:
    clients = await redis.client_list()
    return sum(1 for client in clients if int(client["ssub"]) > 0) >= count


async def test_a_process_that_dies_is_restarted_and_sigterm_stops_all(
    two_processes: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, port = two_processes
    first, second = _gateway_processes(process.pid)
    os.kill(first, signal.SIGKILL)
    await wait_until(
        lambda: len(now := _gateway_processes(process.pid)) == 2 and first not in now, timeout=20
    )
    assert second in _gateway_processes(process.pid)
    await wait_until(lambda: _listening_sockets(port) == 2, timeout=30)

    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(scaled(30)):
        returncode = await process.wait()
    assert returncode == 0
    assert _gateway_processes(process.pid) == []
    assert not port_open(port)


async def test_processes_that_cannot_start_stop_the_supervisor(settings: Settings) -> None:
    with socket.socket() as taken:  # bound without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = await _start(settings, taken.getsockname()[1])
        assert process.stdout is not None
        async with asyncio.timeout(scaled(30)):
            output = (await process.stdout.read()).decode()
            returncode = await process.wait()

    assert returncode == 1
    assert "failed at start-up" in output


async def test_processes_stop_when_their_supervisor_is_killed(
    two_processes: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, port = two_processes
    children = _gateway_processes(process.pid)
    process.kill()
    await process.wait()

    await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=20)
    assert not port_open(port)


async def test_a_scrape_sums_the_metrics_of_every_process(
    two_processes: tuple[asyncio.subprocess.Process, int], redis: Redis, settings: Settings
) -> None:
    _, port = two_processes
    publisher = Publisher(redis, settings)
    jobs = [f"scraped-{n}" for n in range(4)]
    # Both processes hold some of the 20 streams: a scrape of either one alone shows fewer.
    watchers = await _watched_on_both_processes(port, redis, publisher, jobs)
    for job_id in jobs:
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": 1}))
    expected: _Samples = {
        ("jobwire_gateway_open_streams", ()): 20.0,
        ("jobwire_gateway_events_delivered_total", ()): 60.0,  # queued, started, progress
        (
            "jobwire_gateway_requests_total",
            (("method", "GET"), ("route", "/jobs/{job_id}/events"), ("status", "200")),
        ): 20.0,
    }

    async def scrape_shows_all() -> bool:
        return _picked(await _scrape(port), expected) == expected

    await wait_until(scrape_shows_all, timeout=20)
    for _ in range(6):  # new connections, spread over both processes
        assert _picked(await _scrape(port), expected) == expected

    for job_id in jobs:
        await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": None}))
    await asyncio.gather(*watchers)
    gone: _Samples = {("jobwire_gateway_open_streams", ()): 0.0}
    await wait_until(lambda: _scrape_picks(port, gone), timeout=20)


async def _scrape(port: int) -> _Samples:
    async with httpx.AsyncClient(timeout=scaled(5)) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _picked(
    samples: _Samples,
    wanted: _Samples,
) -> dict[_Key, float | None]:
    return {key: samples.get(key) for key in wanted}


async def _scrape_picks(port: int, wanted: _Samples) -> bool:
    return _picked(await _scrape(port), wanted) == wanted
