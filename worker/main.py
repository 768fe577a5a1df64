"""Building and running an arq worker for Jobwire jobs.

- `create_worker(settings)`: a Worker to run in an existing event loop (tests, embedding).
- `run(settings)`: a process that is a worker until SIGINT or SIGTERM (`jobwire worker`).
- `WorkerSettings`: for arq's own CLI, `arq worker.main.WorkerSettings`, configured from the
  `JOBWIRE_*` environment when first looked up (not at import, so importing this module reads
  no environment), its jobs included (`JOBWIRE_JOBS`). arq's CLI builds its own `Worker`
  class, so it stops the arq way rather than with `JobWorker`'s steps; jobs still hand
  themselves back the same way.

Unless given registries, a worker runs the jobs its settings name (`JOBWIRE_JOBS`, see
`worker.jobpaths`), else the demo jobs.

Stopping gives the jobs still running `JOBWIRE_SHUTDOWN_GRACE_S` to finish, then cancels them:
each writes `retrying` ("worker shutting down") and goes back to the queue at once, for another
worker to rerun as the next attempt (see `worker.jobworker`). A second SIGINT/SIGTERM during the
grace period cancels them at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
from collections.abc import Sequence
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Function

from shared.catalog import JobSpec
from shared.clients import retry_policy
from shared.settings import Settings
from worker.jobpaths import load_registries
from worker.jobworker import JobWorker
from worker.lifecycle import ARQ_MAX_TRIES, arq_timeout_s
from worker.metrics import MetricsListener
from worker.presence import Presence
from worker.registry import JobRegistry
from worker.runtime import WorkerRuntime

__all__ = ["create_worker", "run", "serve", "worker_options"]

logger = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def create_worker(
    settings: Settings,
    registries: Sequence[JobRegistry] | None = None,
    *,
    handle_signals: bool = False,
) -> JobWorker:
    """An arq worker for the jobs of `registries` (default: those `settings.jobs` names,
    else the demo jobs).

    With `handle_signals`, the worker stops itself on SIGINT/SIGTERM; leave it off inside a
    program that owns its signals, and stop the worker with `await worker.close()`.
    """
    return JobWorker(
        **worker_options(settings, registries, handle_signals=handle_signals),
        shutdown_grace_s=settings.shutdown_grace_s,
    )


def worker_options(
    settings: Settings,
    registries: Sequence[JobRegistry] | None = None,
    *,
    handle_signals: bool = False,
) -> dict[str, Any]:
    """The arq `Worker` keyword arguments for `settings`."""
    if registries is None:
        registries = load_registries(settings.job_paths)
    functions, specs = _collect(registries, settings)
    lifespan = _Lifespan(settings, specs)
    return {
        "functions": functions,
        "redis_settings": _queue_redis_settings(settings.arq_redis_url),
        "queue_name": settings.queue_name,
        "allow_abort_jobs": True,
        "poll_delay": settings.worker_poll_s,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": arq_timeout_s(settings.job_timeout_s, settings),
        "max_tries": ARQ_MAX_TRIES,
        "handle_signals": handle_signals,
        "on_startup": lifespan.startup,
        "on_shutdown": lifespan.shutdown,
    }


def run(settings: Settings, registries: Sequence[JobRegistry] | None = None) -> None:
    """Runs one worker until SIGINT or SIGTERM."""
    asyncio.run(serve(settings, registries))


async def serve(settings: Settings, registries: Sequence[JobRegistry] | None = None) -> None:
    """Runs one worker in this event loop until SIGINT or SIGTERM, then closes it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker = create_worker(settings, registries)

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            worker.cancel_running_jobs()
        # Begins the stop with the signal's name in its log line; the stop that follows (the
        # worker's task cancelled, then close()) finds it begun and names no signal of its own.
        worker.handle_sig(signum)
        stop.set()

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    running = asyncio.create_task(worker.async_run())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (running, stopping):
            task.cancel()
        await asyncio.gather(running, stopping, return_exceptions=True)
        await worker.close()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    if not running.cancelled():
        running.result()  # a worker that stopped by itself failed: raise why


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        return _worker_settings_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _worker_settings_from_env() -> type:
    options = worker_options(Settings.from_env(), handle_signals=True)
    doc = "arq's CLI runs `arq worker.main.WorkerSettings`; built from JOBWIRE_* variables."
    return type("WorkerSettings", (), {"__module__": __name__, "__doc__": doc, **options})


def _queue_redis_settings(url: str) -> RedisSettings:
    """arq's connection, riding out a Redis restart like every other connection: without
    retries a poll during the restart would raise and end the worker."""
    return dataclasses.replace(RedisSettings.from_dsn(url), **retry_policy())


def _collect(
    registries: Sequence[JobRegistry], settings: Settings
) -> tuple[list[Function], list[JobSpec]]:
    functions: list[Function] = []
    specs: list[JobSpec] = []
    for registry in registries:
        functions += registry.functions(settings)
        specs += registry.specs()
    names = [spec["name"] for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"jobs registered twice: {', '.join(duplicates)}")
    return functions, specs


class _Lifespan:
    """arq's startup and shutdown hooks: the events Redis client, the worker's presence and
    its metrics listener (`JOBWIRE_WORKER_METRICS_PORT`)."""

    def __init__(self, settings: Settings, specs: list[JobSpec]) -> None:
        self._settings = settings
        self._specs = specs
        self._presence: Presence | None = None
        self._metrics_listener: MetricsListener | None = None

    async def startup(self, ctx: dict[Any, Any]) -> None:
        settings = self._settings
        runtime = WorkerRuntime.create(settings)
        runtime.install(ctx)
        runtime.metrics.know_jobs(spec["name"] for spec in self._specs)
        if settings.worker_metrics_port:
            host, port = settings.worker_metrics_host, settings.worker_metrics_port
            self._metrics_listener = runtime.metrics.serve(host, port)
            logger.info("worker metrics on http://%s:%d/metrics", host, port)
        self._presence = Presence(runtime, self._specs)
        await self._presence.start()

    async def shutdown(self, ctx: dict[Any, Any]) -> None:
        if self._metrics_listener is not None:
            await asyncio.to_thread(self._metrics_listener.close)
            self._metrics_listener = None
        if self._presence is not None:
            await self._presence.stop()
            self._presence = None
        runtime = WorkerRuntime.remove(ctx)
        if runtime is not None:
            await runtime.close()
