"""The baseline: SSE from Redis streams the way tutorials write it.

A Starlette route returns a StreamingResponse whose generator runs one blocking XREAD per
connection, so every subscriber holds a Redis connection of its own while it waits. It speaks
the gateway's URL shape and resume rules (`Last-Event-ID` header, else `?last_event_id=`) on
the same Redis keys, so the bench drives it with the same load generator and publisher.

    JOBWIRE_REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.naive_gateway --port 8001
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from shared import sse
from shared.keys import Keys
from shared.settings import Settings

__all__ = ["create_app", "main"]

BLOCK_MS = 15_000
BATCH = 100


def create_app(settings: Settings) -> Starlette:
    keys = Keys(settings.key_prefix)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(settings.events_redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    async def events(request: Request) -> StreamingResponse:
        redis: Redis = request.app.state.redis
        stream_key = keys.events(request.path_params["job_id"])
        cursor = request.headers.get("last-event-id") or request.query_params.get(
            "last_event_id", "0-0"
        )

        async def frames() -> AsyncIterator[bytes]:
            nonlocal cursor
            yield sse.retry(settings.sse_retry_ms)
            while True:
                reply = await redis.xread({stream_key: cursor}, count=BATCH, block=BLOCK_MS)
                if not reply:
                    yield sse.comment("ping")
                    continue
                for raw_id, fields in reply[0][1]:
                    cursor = raw_id.decode()
                    yield sse.frame(fields[b"e"], id=cursor)

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[Route("/jobs/{job_id}/events", events, methods=["GET"])], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        create_app(Settings.from_env()),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
