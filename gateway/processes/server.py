"""Serving the gateway with uvicorn, with open event streams ended as shutdown begins, and
request heads that must arrive in time."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from gateway.app import create_app
from gateway.processes.gcpolicy import GcPolicy
from gateway.processes.protocol import (
    GatewayServerState,
    HeadDeadlines,
    StreamingHttpProtocol,
    StreamInRing,
    forwarded_addresses,
)
from gateway.processes.wsprotocol import StreamingWebSocketProtocol
from shared.settings import Settings

__all__ = ["GatewayServer", "serve"]

# A stream takes no messages from its client (they are dropped): a larger one is refused with
# close code 1009 before it is buffered.
WS_MAX_MESSAGE_BYTES = 4096
# How long uvicorn waits for open requests once streams were asked to end.
GRACEFUL_SHUTDOWN_S = 10


class GatewayServer(uvicorn.Server):
    """A uvicorn server that tells the app when shutdown begins, not when it ends.

    uvicorn runs the app's lifespan shutdown only after every connection closed, which an
    event stream never does by itself; setting the app's `shutdown` event first lets streams
    end at once, so clients reconnect elsewhere while this process drains.

    With `head_timeout_s`, its connections share a `HeadDeadlines` (through uvicorn's
    `server_state`, which uvicorn hands every connection it makes), swept by one task while the
    server runs; without, request heads have no time limit, as under plain uvicorn. With
    `stream_in_ring` (the app's), they answer the stream requests the ring vouches for
    themselves (`gateway.processes.protocol`).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        shutdown: asyncio.Event,
        gc_policy: GcPolicy | None = None,
        *,
        head_timeout_s: float | None = None,
        stream_in_ring: StreamInRing | None = None,
    ) -> None:
        super().__init__(config)
        self.head_deadlines = None if head_timeout_s is None else HeadDeadlines(head_timeout_s)
        forwarded = (
            forwarded_addresses(config.forwarded_allow_ips) if config.proxy_headers else None
        )
        self.server_state = GatewayServerState(self.head_deadlines, stream_in_ring, forwarded)
        self._app_shutdown = shutdown
        self._gc_policy = gc_policy
        self._head_sweeper: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.head_deadlines is not None:
            self._head_sweeper = asyncio.create_task(self.head_deadlines.run(), name="head sweep")
        if self._gc_policy is not None:
            self._gc_policy.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._app_shutdown.set()
        await super().shutdown(sockets)
        if self._head_sweeper is not None:
            self._head_sweeper.cancel()
            await asyncio.gather(self._head_sweeper, return_exceptions=True)
        if self._gc_policy is not None:
            await self._gc_policy.stop()


def build_server(
    settings: Settings,
    gc_policy: GcPolicy | None = None,
    *,
    metrics_dir: str | None = None,
    **config: object,
) -> GatewayServer:
    app = create_app(settings, metrics_dir=metrics_dir)
    uvicorn_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        http=StreamingHttpProtocol,
        ws=StreamingWebSocketProtocol,
        # Frames are built once per event and shared: a compressed frame would be one
        # connection's. Pings are the hub's (only to idle streams, JOBWIRE_PING_S), as on SSE.
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        log_config=_log_config(settings),
        **config,  # type: ignore[arg-type]
    )
    return GatewayServer(
        uvicorn_config,
        app.state.shutdown,
        gc_policy,
        head_timeout_s=settings.head_timeout_s,
        stream_in_ring=app.stream_in_ring,
    )


def _log_config(settings: Settings) -> dict[str, Any] | None:
    """uvicorn's own human format for text logs; none for JSON, so that its loggers propagate
    to the root logger `shared.logs.configure_logging` set up."""
    return LOGGING_CONFIG if settings.log_format == "text" else None


def serve(
    settings: Settings, sock: socket.socket | None = None, *, metrics_dir: str | None = None
) -> None:
    """Run the gateway as this process's only job, owning its garbage-collection policy;
    on `sock` when given (one of several processes, keeping metrics in `metrics_dir`), else on
    the settings' host and port."""
    server = build_server(settings, GcPolicy(settings.gc_full_collect_s), metrics_dir=metrics_dir)
    server.run(sockets=None if sock is None else [sock])
