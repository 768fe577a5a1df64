"""The gateway's app factory: routes, error handlers, and the clients made and closed in the
lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import ArqRedis
from starlette.applications import Starlette
from starlette.routing import Route

from gateway import health, jobs, multistream, page, stream
from gateway.errors import exception_handlers
from gateway.hub import Hub
from gateway.services import Services
from shared.clients import connection_pool, create_redis
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("jobwire.gateway")

CLIENT_NAME = "jobwire-gateway"
EVENTS_CONNECTIONS = 4
QUEUE_CONNECTIONS = 2


def create_app(settings: Settings) -> Starlette:
    """The gateway app. `app.state.shutdown` is set when the server begins shutting down."""
    shutdown = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Bounded pools: the gateway's Redis connections stay a small constant (at most
        # EVENTS_CONNECTIONS + QUEUE_CONNECTIONS + the hub's one pub/sub connection), however
        # many subscribers it serves; a burst of requests waits for a free connection.
        redis = create_redis(
            settings.events_redis_url, max_connections=EVENTS_CONNECTIONS, name=CLIENT_NAME
        )
        queue = ArqRedis(
            connection_pool(
                settings.arq_redis_url, max_connections=QUEUE_CONNECTIONS, name=CLIENT_NAME
            ),
            default_queue_name=settings.queue_name,
        )
        hub = Hub(redis, settings)
        await hub.start(shutdown)
        app.state.services = Services(
            settings=settings,
            redis=redis,
            queue=queue,
            publisher=Publisher(redis, settings),
            keys=Keys(settings.key_prefix),
            hub=hub,
            shutdown=shutdown,
        )
        try:
            yield
        finally:
            shutdown.set()
            await hub.close()
            await queue.aclose()
            await queue.connection_pool.disconnect()
            await redis.aclose()

    routes = [
        Route("/jobs", jobs.submit, methods=["POST"]),
        Route("/jobs/{job_id}", jobs.status, methods=["GET"]),
        Route("/jobs/{job_id}", jobs.cancel, methods=["DELETE"]),
        Route("/jobs/{job_id}/events", stream.events, methods=["GET"]),
        Route("/events", multistream.events, methods=["GET"], name="multi_events"),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        *page.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.shutdown = shutdown
    return app
