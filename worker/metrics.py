"""A worker's Prometheus metrics (`WorkerMetrics`), in a registry of its own, served by a small
HTTP listener when `JOBWIRE_WORKER_METRICS_PORT` names a port (`MetricsListener`).

Each worker is one process with its own listener, so nothing needs adding up across
processes: Prometheus scrapes every worker and sums. A worker's publishes cost a Redis round
trip each, so counting them with Prometheus's own counters costs nothing that shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from shared.events import EventType

__all__ = ["OUTCOMES", "MetricsListener", "WorkerMetrics"]

# How an attempt ended, by its closing event.
OUTCOMES = {
    EventType.COMPLETED: "completed",
    EventType.FAILED: "failed",
    EventType.RETRYING: "retried",
    EventType.CANCELLED: "cancelled",
}
_RUN_TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
_PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class WorkerMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`: noise
        self.registry = registry = CollectorRegistry()
        prefix = "jobwire_worker_"
        self.jobs_started = Counter(
            prefix + "jobs_started", "Attempts begun, by job name.", ["job"], registry=registry
        )
        self.jobs_ended = Counter(
            prefix + "jobs_ended",
            "Attempts ended, by job name and outcome (completed, failed, retried, cancelled).",
            ["job", "outcome"],
            registry=registry,
        )
        self.run_time = Histogram(
            prefix + "job_duration_seconds",
            "Run time of an attempt, from `started` to its closing event, by job name.",
            ["job"],
            buckets=_RUN_TIME_BUCKETS,
            registry=registry,
        )
        self.events_published = Counter(
            prefix + "events_published",
            "Events stored in their job's stream, by type.",
            ["type"],
            registry=registry,
        )
        for event_type in EventType:
            if event_type != EventType.QUEUED:  # the gateway's, at submit
                self.events_published.labels(event_type.value)
        self.publish_time = Histogram(
            prefix + "publish_seconds",
            "Time of one successful publish (the script's round trip to Redis).",
            buckets=_PUBLISH_BUCKETS,
            registry=registry,
        )
        self.publish_retries = Counter(
            prefix + "publish_retries",
            "Publishes tried again because Redis was unreachable.",
            registry=registry,
        )

    def know_jobs(self, names: Iterable[str]) -> None:
        """Show every job's series from the start, at 0 until it runs."""
        for name in names:
            self.jobs_started.labels(name)
            self.run_time.labels(name)
            for outcome in OUTCOMES.values():
                self.jobs_ended.labels(name, outcome)

    def ended(self, job: str, event_type: EventType, run_time_s: float) -> None:
        """An attempt of `job` ended with `event_type` after `run_time_s`."""
        outcome = OUTCOMES.get(event_type)
        if outcome is not None:
            self.jobs_ended.labels(job, outcome).inc()
        self.run_time.labels(job).observe(run_time_s)

    def serve(self, host: str, port: int) -> MetricsListener:
        """Serve `GET /metrics` on `host:port` from a thread, until the listener is closed."""
        server, thread = start_http_server(port, host, registry=self.registry)
        return MetricsListener(server, thread)


class MetricsListener:
    """prometheus_client's HTTP listener, a thread of its own."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
