"""The OpenAPI 3.1 document of the gateway's HTTP API, served at `GET /openapi.json`.

Written by hand, next to the routes it describes: `components` holds the shapes of bodies
and events, `paths` every route and its answers. `tests/gateway/endpoints/test_openapi.py`
runs schemathesis against a live gateway with it, so a route, a status or a field that drifts
from it fails there. `Authorization` is described as the `bearer` security scheme and `Accept`
by the two media types `POST /jobs` answers with: OpenAPI ignores header parameters of those
names. The `schema` of a `text/event-stream` answer describes one event (`event`, `data`,
`id`), as tools read it before OpenAPI 3.2's `itemSchema`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.endpoints.openapi.components import COMPONENTS, Schema
from gateway.endpoints.openapi.paths import PATHS

__all__ = ["DOCUMENT", "openapi"]

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "Jobwire",
        "version": "1",
        "description": "Live, resumable progress of long-running jobs. Errors are JSON "
        "`{error, detail}`. Limits are counted per API key and gateway process.",
    },
    "paths": PATHS,
    "components": COMPONENTS,
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
