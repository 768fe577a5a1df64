"""Events on a Redis Cluster: a gateway and workers on `redis+cluster://`, live notifications by
sharded pub/sub (one connection per master with watched jobs), every command within one slot,
and delivery that stays exact while slots change hands — a manual failover, and a master
killed outright while 100 clients watch 20 running jobs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from bench.cluster import LocalCluster
from gateway.app import CLIENT_NAME
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings, SettingsError
from tests.auth_support import ALICE_KEY, bearer, with_auth
from tests.conftest import RunWorker, StartGateway
from tests.feeds import play_job
from tests.support import RedisServer, submit, wait_until
from tests.watchers import Watch, watch_client, watch_job

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def _tasks() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Tasks a test starts; whatever still runs when the test leaves (a failure included) is
    cancelled and awaited, so no stream of it is left open for a later test to trip on."""
    tasks: list[asyncio.Task[Any]] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _port_of(node_name: str) -> int:
    return int(node_name.rsplit(":", 1)[1])


def _jobs_by_master(
    redis: RedisCluster, keys: Keys, prefix: str, per_master: int
) -> dict[int, list[str]]:
    """Job ids named `<prefix>-<n>`, `per_master` of them on each master (by master port)."""
    masters = {_port_of(node.name) for node in redis.get_primaries()}
    chosen: dict[int, list[str]] = {port: [] for port in masters}
    for n in itertools.count():
        job_id = f"{prefix}-{n}"
        node = redis.get_node_from_key(keys.events(job_id))
        assert node is not None
        jobs = chosen[_port_of(node.name)]
        if len(jobs) < per_master:
            jobs.append(job_id)
        if all(len(jobs) == per_master for jobs in chosen.values()):
            return chosen
    raise AssertionError("unreachable")


async def _start_job(publisher: Publisher, job_id: str) -> None:
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "test.feed", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    started = make_event(EventType.STARTED, job_id, 1, {"attempt": 1, "worker": "test"})
    assert (await publisher.publish(started)).accepted


async def _stored_ids(redis: RedisCluster, keys: Keys, job_id: str) -> list[str]:
    return [raw.decode() for raw, _ in await redis.xrange(keys.events(job_id))]


async def _assert_exact(watches: Iterable[Watch], redis: RedisCluster, keys: Keys) -> None:
    """Each watcher got exactly the stream's final sequence: all of it, once, in order; after a
    `reset` (its position lost with a master), the stream as it now is."""
    for watch in watches:
        stored = await _stored_ids(redis, keys, watch.job_id)
        resets = [event for event in watch.made_up if event.event == "reset"]
        got = watch.ids[len(watch.ids) - len(stored) :] if resets else watch.ids
        assert got == stored, (watch.job_id, len(watch.ids), len(stored), len(resets))


def _subscribed_per_master(cluster: LocalCluster) -> dict[int, list[int]]:
    """Master port -> the shard-channel counts of the gateway's pub/sub connections there."""
    seen: dict[int, list[int]] = {}
    for port in cluster.masters():
        clients: list[dict[str, str]] = cluster.client(port).client_list()  # type: ignore[assignment]
        seen[port] = [
            int(c["ssub"]) for c in clients if c["name"] == CLIENT_NAME and int(c["ssub"]) > 0
        ]
    return seen


def test_a_cluster_for_the_events_needs_a_queue_redis_of_its_own(
    redis_cluster: LocalCluster, redis_server: RedisServer
) -> None:
    with pytest.raises(SettingsError, match="QUEUE_REDIS_URL too"):
        Settings.from_env({"JOBWIRE_REDIS_URL": redis_cluster.url})
    with pytest.raises(SettingsError, match="cannot live on a cluster"):
        Settings.from_env(
            {"JOBWIRE_REDIS_URL": redis_cluster.url, "JOBWIRE_QUEUE_REDIS_URL": redis_cluster.url}
        )
    settings = Settings.from_env(
        {"JOBWIRE_REDIS_URL": redis_cluster.url, "JOBWIRE_QUEUE_REDIS_URL": redis_server.url}
    )
    assert settings.arq_redis_url == redis_server.url


async def test_a_job_run_and_watched_through_the_cluster_gets_exactly_its_stream(
    start_worker: RunWorker, start_gateway: StartGateway, redis: RedisCluster, settings: Settings
) -> None:
    await start_worker()
    gateway = await start_gateway()
    async with gateway.client() as api, watch_client(gateway.url) as client:
        job_id = await submit(api, "demo.countdown", seconds=0.3, steps=6)
        watch = await watch_job([client], job_id, timeout=20)

    types = [event.event for event in watch.events]
    assert types[:2] == ["queued", "started"], types
    assert types[-1] == "completed", types
    assert set(types[2:-1]) == {"progress"}, types
    await _assert_exact([watch], redis, Keys(settings.key_prefix))
    assert not watch.made_up


async def test_jobs_on_every_master_are_watched_through_one_connection_per_master(
    start_gateway: StartGateway,
    redis: RedisCluster,
    settings: Settings,
    redis_cluster: LocalCluster,
) -> None:
    gateway = await start_gateway()
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, settings)
    by_master = _jobs_by_master(redis, keys, "spread", per_master=3)
    jobs = [job_id for jobs in by_master.values() for job_id in jobs]
    for job_id in jobs:
        await _start_job(publisher, job_id)
    async with watch_client(gateway.url) as client, _tasks() as watching:
        watching += [
            asyncio.create_task(watch_job([client], job_id, timeout=30))
            for job_id in jobs
            for _ in range(2)
        ]
        await wait_until(lambda: gateway.hub.watched_jobs == len(jobs), message="jobs watched")
        await wait_until(
            lambda: _subscribed_per_master(redis_cluster) == {port: [3] for port in by_master},
            message="one connection per master, subscribed to that master's 3 jobs",
        )
        await asyncio.gather(
            *(play_job(publisher, job_id, events=20, interval_s=0.002) for job_id in jobs)
        )
        watches = await asyncio.gather(*watching)

    await _assert_exact(watches, redis, keys)
    assert not any(watch.made_up for watch in watches)


def _crossslot_errors(cluster: LocalCluster) -> int:
    """CROSSSLOT refusals every live node has answered since it started."""
    total = 0
    for port in cluster.live_ports():
        stats: dict[str, Any] = cluster.client(port).info("errorstats")  # type: ignore[assignment]
        total += int(stats.get("errorstat_CROSSSLOT", {}).get("count", 0))
    return total


def test_the_keys_of_one_job_share_a_slot() -> None:
    """The publish and revoke scripts touch a job's stream, state and live channel together;
    every other key (the catalog, the workers, each API key's job list) is used alone."""
    keys = Keys("jobwire")
    for job_id in ("a", "job-1", "0f9e8d7c6b5a", "x" * 128, "with.dots_and-dashes"):
        named = (keys.events(job_id), keys.state(job_id), keys.live(job_id))
        assert len({key_slot(key.encode()) for key in named}) == 1, job_id
        assert key_slot(job_id.encode()) == key_slot(keys.events(job_id).encode())


async def test_every_flow_of_the_api_stays_within_one_slot(
    start_worker: RunWorker,
    start_gateway: StartGateway,
    redis: RedisCluster,
    settings: Settings,
    redis_cluster: LocalCluster,
) -> None:
    before = _crossslot_errors(redis_cluster)
    await start_worker()
    gateway = await start_gateway(with_auth(settings))
    answers: list[httpx.Response] = []
    async with gateway.client(headers=bearer(ALICE_KEY)) as alice:

        async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            answer = await alice.request(method, path, **kwargs)
            answers.append(answer)
            return answer

        quick = {"name": "demo.countdown", "args": {"seconds": 0.1, "steps": 2}}
        first = (await call("POST", "/jobs", json=quick)).json()
        second = (await call("POST", "/jobs", json=quick)).json()
        streamed = await call("GET", f"/jobs/{first['job_id']}/events")
        ids = [line[4:] for line in streamed.text.splitlines() if line.startswith("id: ")]
        resumed = await call(
            "GET", f"/jobs/{first['job_id']}/events", headers={"Last-Event-ID": ids[1]}
        )
        at_end = await call(
            "GET", f"/jobs/{first['job_id']}/events", headers={"Last-Event-ID": ids[-1]}
        )
        both = await call(
            "GET",
            "/events",
            params={"job": [first["job_id"], second["job_id"]], "token": second["watch_token"]},
        )
        posted = {"headers": {"Accept": "text/event-stream", "Idempotency-Key": "cluster-1"}}
        await call("POST", "/jobs", json=quick, **posted)
        await call("POST", "/jobs", json=quick, **posted)  # the same job, resumed
        waiting = await call("POST", "/jobs", json={"name": "demo.quiet", "args": {"seconds": 30}})
        waiting_id = waiting.json()["job_id"]
        await call("DELETE", f"/jobs/{waiting_id}/tokens")
        await call("DELETE", f"/jobs/{waiting_id}")
        cancelled = await call("GET", f"/jobs/{waiting_id}/events")
        await call("GET", f"/jobs/{first['job_id']}", params={"token": first["watch_token"]})
        listed = await call("GET", "/jobs")
        await call("GET", "/system")
        await call("GET", "/readyz")
        await call("GET", "/metrics")

    assert [a.status_code for a in answers if a.status_code >= 400] == [], [
        (a.request.url, a.status_code, a.text[:200]) for a in answers if a.status_code >= 400
    ]
    assert "completed" in resumed.text
    assert ids[1] not in resumed.text
    assert at_end.status_code == 204
    assert both.text.count("event: completed") == 2
    assert "event: cancelled" in cancelled.text
    assert {first["job_id"], second["job_id"], waiting_id} <= {
        item["job_id"] for item in listed.json()["jobs"]
    }
    assert _crossslot_errors(redis_cluster) == before


async def test_a_manual_failover_moves_the_subscriptions_and_delivery_stays_exact(
    start_gateway: StartGateway,
    redis: RedisCluster,
    settings: Settings,
    redis_cluster: LocalCluster,
) -> None:
    """The old master sends `sunsubscribe` for its channels as it becomes a replica: the hub
    follows them to the new master and catches up from each job's last delivered id."""
    gateway = await start_gateway()
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, settings)
    by_master = _jobs_by_master(redis, keys, "handover", per_master=1)
    jobs = [job_id for jobs in by_master.values() for job_id in jobs]
    for job_id in jobs:
        await _start_job(publisher, job_id)
    async with watch_client(gateway.url) as client, _tasks() as watching, _tasks() as playing:
        watching += [
            asyncio.create_task(watch_job([client], job_id, timeout=40))
            for job_id in jobs
            for _ in range(3)
        ]
        await wait_until(
            lambda: _subscribed_per_master(redis_cluster) == {port: [1] for port in by_master},
            message="one subscription per master",
        )
        playing += [
            asyncio.create_task(play_job(publisher, job_id, events=300, interval_s=0.005))
            for job_id in jobs
        ]
        (replica, *_) = next(iter(redis_cluster.masters().values()))
        await wait_until(lambda: gateway.hub.counters.events_delivered > 100)
        redis_cluster.command(replica, "CLUSTER FAILOVER")
        await wait_until(
            lambda: replica in redis_cluster.masters(), timeout=15, message="replica promoted"
        )
        await wait_until(
            lambda: _subscribed_per_master(redis_cluster).get(replica) == [1],
            timeout=15,
            message="the moved job subscribed on its new master",
        )
        await asyncio.gather(*playing)
        watches = await asyncio.gather(*watching)

    await _assert_exact(watches, redis, keys)
    assert not any(watch.made_up for watch in watches), "a manual failover loses nothing"
    assert gateway.hub.counters.pubsub_reconnects >= 1
    redis_cluster.wait_healthy()


async def test_a_master_killed_while_100_clients_watch_20_jobs_loses_no_client_its_place(
    start_worker: RunWorker,
    start_gateway: StartGateway,
    redis: RedisCluster,
    settings: Settings,
    redis_cluster: LocalCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the failover the worker's publishes ride out CLUSTERDOWN and the dead master (no
    job fails), and 100 clients reconnecting at once wait for the gateway's connections
    instead of being turned away (no 503)."""
    await start_worker(settings.replace(worker_concurrency=25))
    gateway = await start_gateway()
    keys = Keys(settings.key_prefix)
    by_master = _jobs_by_master(redis, keys, "survivor", per_master=7)
    jobs = [job_id for jobs in by_master.values() for job_id in jobs][:20]
    victim = max(by_master, key=lambda port: len(set(by_master[port]) & set(jobs)))
    caplog.set_level(logging.WARNING)
    async with gateway.client() as api, watch_client(gateway.url) as client, _tasks() as watching:
        for job_id in jobs:
            job = {"name": "demo.countdown", "args": {"seconds": 5, "steps": 50}, "job_id": job_id}
            assert (await api.post("/jobs", json=job)).status_code == 202
        watching += [
            asyncio.create_task(watch_job([client], job_id, timeout=50))
            for job_id in jobs
            for _ in range(5)
        ]
        await wait_until(
            lambda: gateway.hub.counts()["subscribers"] == 100 and _all_running(redis, keys, jobs),
            timeout=20,
            message="100 clients watching 20 running jobs",
        )
        try:
            redis_cluster.kill(victim)
            watches = await asyncio.gather(*watching)
        finally:
            redis_cluster.restart(victim)  # it comes back as a replica of its successor

    await _assert_exact(watches, redis, keys)
    assert victim not in redis_cluster.masters()
    assert gateway.hub.counters.pubsub_reconnects >= 1, "the victim's shard moved"
    assert [w.job_id for w in watches if w.events[-1].event != "completed"] == []
    assert [(w.job_id, w.statuses) for w in watches if max(w.statuses) >= 500] == []
    assert "MaxConnectionsError" not in caplog.text
    redis_cluster.wait_healthy()


async def _all_running(redis: RedisCluster, keys: Keys, jobs: list[str]) -> bool:
    states = [await redis.hget(keys.state(job_id), "status") for job_id in jobs]  # type: ignore[misc]
    return all(state == b"running" for state in states)


async def test_a_publish_waiting_for_one_replica_returns_once_the_replica_has_it(
    redis: RedisCluster,
    settings: Settings,
    redis_cluster: LocalCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, settings.replace(publish_replicas=1))
    by_master = _jobs_by_master(redis, keys, "replicated", per_master=1)
    masters = redis_cluster.masters()
    for master, (job_id,) in by_master.items():
        await _start_job(publisher, job_id)
        for n in range(10):
            await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, {"current": n}))
        replica = redis_cluster.client(masters[master][0]).pipeline(transaction=False)
        replica.execute_command("READONLY")  # type: ignore[no-untyped-call]
        replica.xlen(keys.events(job_id))
        _, length = replica.execute()
        assert length == 12, "every event on the replica when its publish returned"
    assert "replicas acknowledged" not in caplog.text
