"""The web page: `/` and its static files, and `GET /catalog`, the job names the page offers.

The page is plain HTML, CSS and JavaScript modules shipped inside the package, so it works
with no build step and no network beyond the gateway itself (a LAN without internet).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.endpoints.auth import require_api_key
from gateway.endpoints.services import services
from shared.catalog import args_schema, load_catalog

__all__ = ["PAGE_HEADERS", "STATIC_DIR", "catalog", "index", "routes"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page (and /docs) loads nothing from anywhere but the gateway, and renders job data as
# text only.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new deploy's page is picked up on the next load.
    "Cache-Control": "no-cache",
}


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def catalog(request: Request) -> JSONResponse:
    """The jobs workers advertise, by name: name, params, required, accepts_any, doc and the
    JSON Schema of their args (one made from the names for a worker that advertised none)."""
    require_api_key(request)
    svc = services(request)
    specs = await load_catalog(svc.redis, svc.keys)
    jobs = [{**specs[name], "args_schema": args_schema(specs[name])} for name in sorted(specs)]
    return JSONResponse({"jobs": jobs})


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/catalog", catalog, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
