"""Keeping watch tokens out of the logs.

EventSource and WebSocket cannot send headers, so a browser passes its watch token as
`?token=`; uvicorn's access log prints every request's path with its query string, and so
does the line its WebSocket protocol logs for each handshake. `RedactCredentials` blanks the
token there.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

__all__ = ["RedactCredentials", "install_log_redaction", "redact_target"]

_SECRET_PARAMETERS = frozenset({"token"})


class RedactCredentials(logging.Filter):
    """Blanks watch tokens in the request targets a log record carries (uvicorn's access log
    prints each request's path with its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, str) and "?" in arg for arg in args):
            record.args = tuple(redact_target(arg) if isinstance(arg, str) else arg for arg in args)
        return True


def redact_target(target: str) -> str:
    """`target` with the value of every `token` query parameter replaced by `[redacted]`."""
    path, separator, query = target.partition("?")
    if not separator:
        return target
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        # Compared as the app reads names (percent-decoded), so `tok%65n=` is caught too.
        if equals and unquote_plus(name).strip().lower() in _SECRET_PARAMETERS:
            pair = f"{name}=[redacted]"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


_REDACTION = RedactCredentials()


def install_log_redaction() -> None:
    """Keeps tokens out of uvicorn's access log, and out of the line its WebSocket protocol
    logs per handshake on `uvicorn.error` (idempotent: one filter however many apps)."""
    logging.getLogger("uvicorn.access").addFilter(_REDACTION)
    logging.getLogger("uvicorn.error").addFilter(_REDACTION)
