"""Jobwire: live, resumable progress for long-running jobs.

What a user imports comes from here: the job author's API (`JobRegistry`, `Progress`,
`Retry`, ...) and the Python client (`Client`, `Job`, `JobEvent`, ...). Each is imported on
first use, so `import jobwire` (and the `jobwire` command) stays light: a client never loads
arq, a worker never loads httpx.

The repository's `shared/`, `worker/` and `gateway/` are installed as top-level packages of
the same names (docs/architecture.md, "Package roots", says why); `jobwire.client` is the
Python client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobwire import client
from jobwire.exports import lazy_exports

if TYPE_CHECKING:
    from jobwire.client import (
        Backoff,
        Client,
        ConnectionState,
        GatewayError,
        GatewayUnreachable,
        InvalidGatewayURL,
        Job,
        JobCancelled,
        JobEvent,
        JobFailed,
        JobwireError,
        RequestRejected,
    )
    from jobwire.client.sync import SyncClient
    from worker import JobEnded, JobFunction, JobRegistry, LogLevel, Progress, Retry

__all__ = [
    "Backoff",
    "Client",
    "ConnectionState",
    "GatewayError",
    "GatewayUnreachable",
    "InvalidGatewayURL",
    "Job",
    "JobCancelled",
    "JobEnded",
    "JobEvent",
    "JobFailed",
    "JobFunction",
    "JobRegistry",
    "JobwireError",
    "LogLevel",
    "Progress",
    "RequestRejected",
    "Retry",
    "SyncClient",
]

_HOMES = {
    **dict.fromkeys(
        ("JobEnded", "JobFunction", "JobRegistry", "LogLevel", "Progress", "Retry"), "worker"
    ),
    "SyncClient": "jobwire.client.sync",
    # The client's own exports come through `jobwire.client`, which loads each on first use.
    **dict.fromkeys(set(__all__) & set(client.__all__), "jobwire.client"),
}

__getattr__, __dir__ = lazy_exports(__name__, __all__, _HOMES)
