"""Reading the gateway's answers: its JSON errors, `Retry-After`, and credentials."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from jobwire.client.errors import GatewayError, RequestRejected

__all__ = ["authorization", "check_answer", "describe", "json_body", "rejection", "retry_after_s"]

# Answers to retry although they are 4xx: the request itself was fine.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


def authorization(credential: str | None) -> dict[str, str]:
    return {} if not credential else {"Authorization": f"Bearer {credential}"}


def json_body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def rejection(response: httpx.Response) -> RequestRejected:
    """The gateway's `{"error": code, "detail": ...}` as an exception."""
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return RequestRejected(response.status_code, body["error"], body.get("detail"))
    return RequestRejected(response.status_code, "http_error", response.text[:300])


def check_answer(response: httpx.Response, expected: tuple[int, ...]) -> Any:
    """The JSON body of an expected answer; any other answer raises."""
    if response.status_code in expected:
        return json_body(response)
    if 400 <= response.status_code < 500:
        raise rejection(response)
    raise GatewayError(response.status_code, response.text[:300] or response.reason_phrase)


def retry_after_s(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the date form is not worth its parsing here)."""
    raw = response.headers.get("retry-after", "")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None


# What a person watching a terminal should read for the network errors that happen daily.
_PLAIN_WORDS: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectTimeout, "connecting timed out"),
    (httpx.ConnectError, "cannot connect"),
    (httpx.ReadTimeout, "nothing received for too long"),
    (httpx.RemoteProtocolError, "the connection was cut"),
    (httpx.ReadError, "the connection was cut"),
    (httpx.WriteError, "the connection was cut"),
)


def describe(exc: BaseException) -> str:
    name = type(exc).__name__
    for kind, words in _PLAIN_WORDS:
        if isinstance(exc, kind):
            return f"{words} ({name})"
    text = str(exc)
    return f"{name}: {text}" if text else name
