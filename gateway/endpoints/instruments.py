"""The gateway's Prometheus metrics (`GatewayInstruments`), made from the plain counters the
hub and the endpoints keep (`gateway.engine.counters`), and the Redis-side facts read at
scrape time (`redis_facts`).

The counters are copied into Prometheus metrics by `sync`: at every scrape, and, when several
processes share the port (`JOBWIRE_GATEWAY_PROCESSES`), once a second in each process. Then
prometheus_client's multiprocess mode keeps each process's values in a file of the directory
the supervisor made, and a scrape answered by any process sums them all (gauges of live
processes only: `livesum`), so no scrape shows one random process's numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from gateway.endpoints.services import Services
from gateway.engine.counters import GatewayCounters, ResumeKind
from gateway.engine.hub import Hub
from shared.catalog import ALIVE_WITHIN_S, count_alive
from shared.outcomes import load_outcomes

__all__ = ["SYNC_EVERY_S", "GatewayInstruments", "redis_facts"]

SYNC_EVERY_S = 1.0
# Seconds from submit to the first event seen live: a worker picks a job up in well under a
# second when one is free, and minutes when the queue is deep.
_FIRST_EVENT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class GatewayInstruments:
    """One gateway process's metrics, in a registry of its own (so each app counts apart)."""

    def __init__(self, counters: GatewayCounters, multiprocess_dir: str | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`: noise
        self.counters = counters
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry(auto_describe=True)
        prefix = "jobwire_gateway_"

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(prefix + name, doc, registry=registry, multiprocess_mode="livesum")

        self._open_streams = gauge("open_streams", "Event streams open.")
        self._subscribers = gauge(
            "subscribers", "Subscriptions to jobs: a stream of three jobs counts three."
        )
        self._watched_jobs = gauge(
            "watched_jobs", "Jobs whose live channel is subscribed (lingering ones included)."
        )
        self._delivered = Counter(
            prefix + "events_delivered",
            "Event frames handed to streams (one per event per stream).",
            registry=registry,
        )
        self._bytes = Counter(
            prefix + "bytes_written", "Bytes written to event streams.", registry=registry
        )
        self._cutoffs = Counter(
            prefix + "slow_consumer_cutoffs",
            "Streams cut off with more than JOBWIRE_MAX_BUFFER_BYTES unsent.",
            registry=registry,
        )
        self._send_timeouts = Counter(
            prefix + "send_timeouts",
            "Streams dropped when nothing was taken within JOBWIRE_SEND_TIMEOUT_S.",
            registry=registry,
        )
        self._reconnects = Counter(
            prefix + "pubsub_reconnects",
            "Times the pub/sub connection was lost and opened again.",
            registry=registry,
        )
        self._resumes = Counter(
            prefix + "resumes",
            "Jobs of stream requests that named a position, by how the position was served.",
            ["kind"],
            registry=registry,
        )
        self._requests = Counter(
            prefix + "requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._first_event = Histogram(
            prefix + "submit_to_first_event_seconds",
            "From a job's `queued` to its `started` reaching its streams here.",
            buckets=_FIRST_EVENT_BUCKETS,
            registry=registry,
        )
        for kind in ResumeKind:
            self._resumes.labels(kind.value)  # every kind shows, at 0 until it happens
        self._seen: dict[object, int] = {}

    def sync(self, hub: Hub | None) -> None:
        """Copy the counters (and the hub's gauges) into the metrics."""
        counters = self.counters
        self._add(self._delivered, "delivered", counters.events_delivered)
        self._add(self._bytes, "bytes", counters.bytes_written)
        self._add(self._cutoffs, "cutoffs", counters.slow_consumer_cutoffs)
        self._add(self._send_timeouts, "send_timeouts", counters.send_timeouts)
        self._add(self._reconnects, "reconnects", counters.pubsub_reconnects)
        for kind, count in list(counters.resumes.items()):
            self._add(self._resumes.labels(kind.value), kind, count)
        for (route, method, status), count in list(counters.requests.items()):
            labelled = self._requests.labels(route, method, str(status))
            self._add(labelled, (route, method, status), count)
        delays, counters.first_event_delays = counters.first_event_delays, []
        for delay in delays:
            self._first_event.observe(delay)
        if hub is not None:
            self._open_streams.set(hub.open_streams)
            self._subscribers.set(hub.subscriptions())
            self._watched_jobs.set(hub.watched_jobs)

    def _add(self, counter: Counter, key: object, total: int) -> None:
        delta = total - self._seen.get(key, 0)
        if delta:
            counter.inc(delta)
            self._seen[key] = total

    async def sync_forever(self, hub: Hub) -> None:
        """Keep this process's numbers at most SYNC_EVERY_S old for a scrape another process
        answers (multiprocess mode)."""
        while True:
            self.sync(hub)
            await asyncio.sleep(SYNC_EVERY_S)

    def exposition(self, hub: Hub | None, facts: list[Metric]) -> bytes:
        """The text a scrape gets: every process's metrics, then the Redis-side facts."""
        self.sync(hub)
        if self.multiprocess_dir is None:
            registry = self.registry
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        once = CollectorRegistry(auto_describe=False)
        once.register(_Fixed(facts))
        return generate_latest(registry) + generate_latest(once)


class _Fixed(Collector):
    """Metrics already read (from Redis, at this scrape)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


async def redis_facts(svc: Services) -> list[Metric]:
    """What Redis says at this scrape: whether it answers, the jobs waiting in the queue
    (deferred retries included), the workers alive, and how every worker's attempts ended.
    A few commands, once per scrape."""
    up = GaugeMetricFamily("jobwire_redis_up", "1 when Redis answered this scrape's reads.")
    try:
        depth = await svc.queue.zcard(svc.settings.queue_name)
        workers = await count_alive(svc.redis, svc.keys, ALIVE_WITHIN_S)
        outcomes = await load_outcomes(svc.redis, svc.keys)
    except (RedisError, OSError):
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    queue = GaugeMetricFamily(
        "jobwire_queue_depth", "Jobs waiting in the arq queue, deferred retries included."
    )
    queue.add_metric([], depth)
    alive = GaugeMetricFamily(
        "jobwire_workers_alive", f"Workers that marked themselves alive in {ALIVE_WITHIN_S:g} s."
    )
    alive.add_metric([], workers)
    ended = CounterMetricFamily(
        "jobwire_jobs_ended",
        "Attempts ended, by job name and outcome, counted by every worker in Redis.",
        labels=["job", "outcome"],
    )
    for (job_name, outcome), count in sorted(outcomes.items()):
        ended.add_metric([job_name, outcome], count)
    return [up, queue, alive, ended]
