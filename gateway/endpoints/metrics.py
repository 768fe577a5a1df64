"""`GET /metrics`: the gateway's metrics in Prometheus's text format.

Who may read them: a peer on loopback (a Prometheus or `curl` on the same host) without
credentials; anyone else with `Authorization: Bearer` and `JOBWIRE_METRICS_KEY` (a token that
opens nothing else, for a Prometheus elsewhere) or an API key. With auth disabled, anyone. The
numbers name job types and show load, nothing more, but they are nobody else's business.
"""

from __future__ import annotations

import hmac
import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from gateway.endpoints.auth import access, require_api_key
from gateway.endpoints.instruments import GatewayInstruments, redis_facts
from gateway.endpoints.services import services

__all__ = ["metrics"]


async def metrics(request: Request) -> Response:
    _require_scraper(request)
    instruments: GatewayInstruments = request.app.state.instruments
    svc = services(request)
    body = instruments.exposition(svc.hub, await redis_facts(svc))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _require_scraper(request: Request) -> None:
    if not access(request).enabled or _on_loopback(request):
        return
    key = services(request).settings.metrics_key
    if key and hmac.compare_digest(
        request.headers.get("authorization", "").encode(), f"Bearer {key}".encode()
    ):
        return
    require_api_key(request)  # else 401, as every route without a valid key


def _on_loopback(request: Request) -> bool:
    if request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
