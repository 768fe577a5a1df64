"""The clients and settings request handlers share, made once per app in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from arq import ArqRedis
from starlette.requests import HTTPConnection

from gateway.engine.hub import Hub
from shared.clients import EventsRedis
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings

__all__ = ["Services", "services"]


@dataclass
class Services:
    settings: Settings
    redis: EventsRedis
    queue: ArqRedis
    publisher: Publisher
    keys: Keys
    hub: Hub
    # Set when the server begins shutting down: open event streams end at once so their
    # clients reconnect to another replica instead of being held until a timeout.
    shutdown: asyncio.Event


def services(connection: HTTPConnection) -> Services:
    value: Services = connection.app.state.services
    return value
