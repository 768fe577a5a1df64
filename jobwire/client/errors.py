"""What can go wrong for a client, named for what happened.

`JobFailed` and `JobCancelled` are outcomes of the job; the others are about the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobwire.client.events import JobEvent

__all__ = [
    "GatewayError",
    "GatewayUnreachable",
    "JobCancelled",
    "JobFailed",
    "JobwireError",
    "RequestRejected",
    "describe_detail",
]


class JobwireError(Exception):
    """Base of every error this package raises."""


class RequestRejected(JobwireError):
    """The gateway refused the request (a 4xx answer): retrying it unchanged cannot help."""

    def __init__(self, status_code: int, code: str, detail: Any) -> None:
        super().__init__(f"HTTP {status_code} {code}: {_short(describe_detail(detail))}")
        self.status_code = status_code
        self.code = code
        self.detail = detail


class GatewayError(JobwireError):
    """The gateway answered with an error of its own (5xx) or something that is not Jobwire."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


class GatewayUnreachable(JobwireError, ConnectionError):
    """The gateway could not be reached (or, when streaming, not within `give_up_after_s`)."""


class JobFailed(JobwireError):
    """The job ended with `failed`: `type` and `message` are the error the job raised."""

    def __init__(self, event: JobEvent) -> None:
        self.event = event
        self.type = str(event.data.get("type", "Error"))
        self.message = str(event.data.get("message", ""))
        self.attempt = event.attempt
        super().__init__(f"job {event.job} failed: {self.type}: {self.message}")


class JobCancelled(JobwireError):
    """The job ended with `cancelled`; `reason` says by whom or why."""

    def __init__(self, event: JobEvent) -> None:
        self.event = event
        self.reason = str(event.data.get("reason", ""))
        super().__init__(f"job {event.job} cancelled: {self.reason}")


def describe_detail(detail: Any) -> str:
    """An error's `detail` as a person reads it: its `message` first, then every other field as
    `name: value`, lists as `a, b` (`none` when empty); never a Python repr."""
    if isinstance(detail, dict):
        fields = {str(name): value for name, value in detail.items()}
        message = fields.pop("message", None)
        rest = "; ".join(f"{name}: {_value_text(value)}" for name, value in fields.items())
        if message is None:
            return rest
        return f"{_value_text(message)} ({rest})" if rest else _value_text(message)
    return _value_text(detail)


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(item) for item in value) or "none"
    if isinstance(value, dict):
        return f"{{{describe_detail(value)}}}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."
