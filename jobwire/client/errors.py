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
]


class JobwireError(Exception):
    """Base of every error this package raises."""


class RequestRejected(JobwireError):
    """The gateway refused the request (a 4xx answer): retrying it unchanged cannot help."""

    def __init__(self, status_code: int, code: str, detail: Any) -> None:
        super().__init__(f"HTTP {status_code} {code}: {_short(detail)}")
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


def _short(detail: Any) -> str:
    text = detail if isinstance(detail, str) else repr(detail)
    return text if len(text) <= 300 else text[:297] + "..."
