"""Every error a client sees is JSON: `{"error": <code>, "detail": <what was wrong>}`.

No traceback and no exception text from inside the gateway ever reaches a client; unexpected
errors are logged here and answered with a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["APIError", "error_response", "exception_handlers"]

logger = logging.getLogger("jobwire.gateway")

RETRY_AFTER_S = 1

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


class APIError(Exception):
    """An answer to a request that could not be served, with a stable machine-readable code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers


def error_response(
    status_code: int, code: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc.status_code, exc.code, exc.detail, exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, exc.detail, exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("Redis unavailable on %s %s: %r", request.method, request.url.path, exc)
    return error_response(
        503,
        "unavailable",
        f"the job store is unavailable ({type(exc).__name__}); try again shortly",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error")


exception_handlers = {
    APIError: _api_error,
    HTTPException: _http_exception,
    # Redis down or restarting: a temporary state with a clear answer, not a server error.
    RedisError: _unavailable,
    ConnectionError: _unavailable,
    TimeoutError: _unavailable,
    Exception: _unexpected,
}
