"""Logging set-up, the same for every Jobwire process (gateway, worker, supervisor, CLI).

`JOBWIRE_LOG_FORMAT=text` (the default) writes lines for people, as before; `json` writes one
JSON object per line — `time`, `level`, `logger`, `message`, and `job_id`, `request_id` and
`key` when the code that logged ran for a job, a request or an API key. Those three come from
context variables: the gateway's request middleware and stream dispatch set `request_id`,
authentication sets `key` (the key's name, never the key), a worker's job sets `job_id`. Each
request and each job runs in its own asyncio task, so what one sets is never seen by another.

uvicorn (error and access loggers) and arq log through the root logger in JSON mode, so their
lines are JSON too (`gateway.processes.server` gives uvicorn no logging config of its own then).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

from shared.settings import Settings

__all__ = [
    "JOB_ID",
    "KEY",
    "REQUEST_ID",
    "JsonLineFormatter",
    "configure_logging",
    "log_context",
]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

JOB_ID: ContextVar[str | None] = ContextVar("jobwire_job_id", default=None)
REQUEST_ID: ContextVar[str | None] = ContextVar("jobwire_request_id", default=None)
KEY: ContextVar[str | None] = ContextVar("jobwire_key", default=None)
_CONTEXT = {"job_id": JOB_ID, "request_id": REQUEST_ID, "key": KEY}

# The fields every line starts with; then the context, then the record's own extras.
_FIRST = ("time", "level", "logger", "message")
# uvicorn's access record: `%s - "%s %s HTTP/%s" %d` of these, after redaction.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
# Extras that only repeat the message (uvicorn's coloured copy of it).
_DROPPED_EXTRAS = frozenset({"color_message"})


def configure_logging(settings: Settings) -> None:
    """Sends every log record of this process to stderr in the settings' format and level."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonLineFormatter())
        # A warning printed by `warnings` would be the one line that is not JSON.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
    else:
        handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])


@contextmanager
def log_context(variable: ContextVar[str | None], value: str) -> Iterator[None]:
    """`variable` is `value` for the log lines written inside the block."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


class JsonLineFormatter(OrjsonFormatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the log
    context, uvicorn's access fields, the record's extras, and `exc_info` for a traceback."""

    def __init__(self) -> None:
        super().__init__(reserved_attrs=[*_RESERVED, *_DROPPED_EXTRAS])

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.getMessage()
        for name, variable in _CONTEXT.items():
            value = record.__dict__.get(name) or variable.get()
            if value is not None:
                log_data[name] = value
        log_data.update(_access_fields(record))
        super().add_fields(log_data, record, message_dict)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields (its arguments are already redacted: the redaction is
    a filter on the `uvicorn.access` logger, which runs before any handler formats)."""
    if record.name != "uvicorn.access":
        return {}
    args = record.args
    if not isinstance(args, tuple) or len(args) != len(_ACCESS_FIELDS):
        return {}
    return dict(zip(_ACCESS_FIELDS, args, strict=True))


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
    logging.getLogger("jobwire").critical("uncaught exception", exc_info=(kind, error, traceback))


# Every attribute a plain record has: not extras.
_RESERVED = (
    *vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)),
    "message",
    "asctime",
    *_FIRST,
    *_CONTEXT,
)
