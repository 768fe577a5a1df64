"""`/docs`: the OpenAPI document (`/openapi.json`) as an interactive page, Swagger UI.

Swagger UI's files come from the `swagger-ui-bundle-v2` package, installed with the gateway
and served from here: the page fetches nothing from a CDN and works without internet. Its one
script of our own is a file (`static/docs.js`), so the page keeps the web page's strict
Content-Security-Policy: no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Route
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from gateway.endpoints.errors import APIError
from gateway.endpoints.page import PAGE_HEADERS, STATIC_DIR

__all__ = ["ASSETS", "asset", "page", "routes"]

SWAGGER_UI = Path(swagger_ui_path)
# The files the page loads; nothing else of the package (its demo page, source maps) is served.
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "index.css",
        "swagger-ui-bundle.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)
# A release's files never change under the same name; a new release comes with a new gateway.
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


async def page(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "docs.html", headers=PAGE_HEADERS)


async def asset(request: Request) -> FileResponse:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise APIError(404, "not_found", f"no such file: {name}")
    return FileResponse(SWAGGER_UI / name, headers=_ASSET_HEADERS)


def routes() -> list[BaseRoute]:
    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
