"""Liveness and readiness probes.

What went wrong with Redis is logged, not told: the probe is public, and an error's text can
name hosts, ports or the server's configuration.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.endpoints.services import services
from shared.catalog import ALIVE_WITHIN_S, count_alive

__all__ = ["healthz", "readyz"]

logger = logging.getLogger("jobwire.gateway")


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Redis answers and live delivery works; reports how many workers are alive.

    No live worker still means ready: submitting queues the job, and the answer says so.
    """
    svc = services(request)
    try:
        await svc.redis.ping()
        await svc.queue.ping()
        workers = await count_alive(svc.redis, svc.keys, ALIVE_WITHIN_S)
    except (RedisError, OSError) as exc:
        logger.warning("not ready: Redis: %s: %s", type(exc).__name__, exc)
        return _unavailable("unavailable", None)
    if not svc.hub.ready:
        # Logged by the hub when its pub/sub connection dropped or its reader failed.
        return _unavailable("pubsub unavailable", workers)
    body: dict[str, object] = {"status": "ok", "redis": "ok", "workers": workers}
    if workers == 0:
        body["warning"] = "no worker is alive: submitted jobs wait in the queue"
    return JSONResponse(body)


def _unavailable(redis: str, workers: int | None) -> JSONResponse:
    body = {"status": "unavailable", "redis": redis, "workers": workers}
    return JSONResponse(body, status_code=503)
