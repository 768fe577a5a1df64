"""What the gateway's logs say about a request: its id, and which requests the access log skips.

Every request gets a request id: the client's (or its proxy's) `X-Request-ID` when it is a
plain token of at most 128 characters, else a new one. It is answered in the response's
`X-Request-ID` header and is the `request_id` of every log line written while the request is
handled (uvicorn's access line included: uvicorn writes it when the response starts, in the
request's task). Health and readiness probes, polled every few seconds by orchestrators, are
left out of the access log.
"""

from __future__ import annotations

import logging
import random
import re

from starlette.types import Message, Scope, Send

from shared.logs import REQUEST_ID

__all__ = ["PROBE_PATHS", "SkipProbes", "install_probe_filter", "request_id", "tagged_send"]

HEADER = b"x-request-id"
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# Letters, digits and the punctuation of UUIDs, trace ids and base64: nothing that could
# forge a log line or a header.
_SANE = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")


def request_id(scope: Scope) -> str:
    """The request's id: its sane `X-Request-ID`, else a new one; set for its log lines."""
    given = next((value for name, value in scope["headers"] if name == HEADER), b"")
    text = given.decode("latin-1")
    # 128 random bits in hex, as a UUID's hex, from Python's generator: an id names a
    # request, it guards nothing, and os.urandom is a system call paid by every reconnect of
    # a storm.
    chosen = text if text and _SANE.fullmatch(text) else f"{random.getrandbits(128):032x}"
    REQUEST_ID.set(chosen)
    return chosen


def tagged_send(send: Send, value: str) -> Send:
    """`send`, adding `X-Request-ID: value` to the response's head."""
    header = (HEADER, value.encode("latin-1"))

    async def send_tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return send_tagged


class SkipProbes(logging.Filter):
    """Drops uvicorn's access lines for `/healthz` and `/readyz`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str):
            return args[2].partition("?")[0] not in PROBE_PATHS
        return True


_SKIP_PROBES = SkipProbes()


def install_probe_filter() -> None:
    """Keeps probes out of uvicorn's access log (idempotent: one filter however many apps)."""
    logging.getLogger("uvicorn.access").addFilter(_SKIP_PROBES)
