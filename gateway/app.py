"""The gateway's app factory: routes, error handlers, CORS, access control, and the clients
made and closed in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import ArqRedis
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Route

from gateway.endpoints import (
    docs,
    health,
    jobs,
    listing,
    metrics,
    multistream,
    openapi,
    page,
    sockets,
    stream,
    system,
)
from gateway.endpoints.dispatch import GatewayApp
from gateway.endpoints.errors import error_response, exception_handlers
from gateway.endpoints.instruments import GatewayInstruments
from gateway.endpoints.limits import Limits
from gateway.endpoints.redaction import install_log_redaction
from gateway.endpoints.requestlog import install_probe_filter
from gateway.endpoints.services import Services
from gateway.endpoints.tally import RequestTally
from gateway.endpoints.tokens import Access
from gateway.engine.counters import GatewayCounters
from gateway.engine.hub import Hub
from shared.clients import connection_pool, create_events_redis
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("jobwire.gateway")

CLIENT_NAME = "jobwire-gateway"
EVENTS_CONNECTIONS = 4
QUEUE_CONNECTIONS = 2


def create_app(settings: Settings, *, metrics_dir: str | None = None) -> GatewayApp:
    """The gateway app. `app.state.shutdown` is set when the server begins shutting down.
    `metrics_dir`: where the processes sharing the port keep their metrics (prometheus_client's
    multiprocess mode, `gateway.processes.supervisor`); None for a process on its own.

    Raises SettingsError when auth is on without API keys or a token secret.
    """
    shutdown = asyncio.Event()
    access = Access.from_settings(settings)
    counters = GatewayCounters()
    instruments = GatewayInstruments(counters, metrics_dir)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_log_redaction()
        install_probe_filter()
        if not access.enabled:
            logger.warning(
                "authentication is disabled (JOBWIRE_AUTH_DISABLED=true): anyone who can reach "
                "this gateway may submit, watch and cancel any job"
            )
        # Bounded pools: the gateway's Redis connections stay a small constant (at most
        # EVENTS_CONNECTIONS + QUEUE_CONNECTIONS + the hub's one pub/sub connection), however
        # many subscribers it serves; a burst of requests waits for a free connection.
        redis = create_events_redis(
            settings.events_redis_url, max_connections=EVENTS_CONNECTIONS, name=CLIENT_NAME
        )
        queue = ArqRedis(
            connection_pool(
                settings.arq_redis_url, max_connections=QUEUE_CONNECTIONS, name=CLIENT_NAME
            ),
            default_queue_name=settings.queue_name,
        )
        hub = Hub(redis, settings, counters)
        await hub.start(shutdown)
        syncing = (
            None if metrics_dir is None else asyncio.create_task(instruments.sync_forever(hub))
        )
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
            if syncing is not None:
                syncing.cancel()
            await hub.close()
            await queue.aclose()
            await queue.connection_pool.disconnect()
            await redis.aclose()

    routes = [
        Route("/jobs", jobs.submit, methods=["POST"]),
        Route("/jobs", listing.list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", jobs.status, methods=["GET"]),
        Route("/jobs/{job_id}", jobs.cancel, methods=["DELETE"]),
        Route("/jobs/{job_id}/events", stream.events, methods=["GET"]),
        Route("/jobs/{job_id}/tokens", jobs.revoke_tokens, methods=["DELETE"]),
        Route("/events", multistream.events, methods=["GET"], name="multi_events"),
        # The WebSockets themselves are dispatched by GatewayApp; a plain GET gets 426.
        Route("/jobs/{job_id}/ws", sockets.upgrade_required, methods=["GET"]),
        Route("/events/ws", sockets.upgrade_required, methods=["GET"]),
        Route("/system", system.system, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        *page.routes(),
        *docs.routes(),
    ]
    app = GatewayApp(
        job_events=stream.events,
        multi_events=multistream.events,
        job_events_in_ring=stream.events_in_ring,
        multi_events_in_ring=multistream.events_in_ring,
        job_socket=sockets.job_socket,
        multi_socket=sockets.multi_socket,
        routes=routes,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
        middleware=_cors(settings),
        tally=RequestTally(counters, routes),
    )
    app.state.shutdown = shutdown
    app.state.access = access
    app.state.instruments = instruments
    app.state.limits = Limits(settings)
    return app


def _cors(settings: Settings) -> list[Middleware]:
    """Browsers on the allowed origins may call the API; without any, only the gateway's own
    page can. Requests without an `Origin` pass straight through (event streams included)."""
    origins = settings.cors_origin_list
    if not origins:
        return []
    return [
        Middleware(
            JSONCORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    ]


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered like every other error: JSON."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode()  # "Disallowed CORS origin, method", ...
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        return error_response(403, "cors_refused", refused, headers=headers)
