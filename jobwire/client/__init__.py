"""The Python client of Jobwire: submit jobs and follow their events, surviving network loss.

```python
async with Client() as client:  # JOBWIRE_URL and JOBWIRE_API_KEY, unless given
    job = await client.submit("demo.countdown", seconds=5)
    async for event in job.events():
        print(event.type, event.data)
    result = await job.wait()
```

Each name is imported on first use, as in `jobwire` itself: `jobwire.client.target` (which
the `jobwire` command reads for its help texts) loads without httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobwire.exports import lazy_exports

if TYPE_CHECKING:
    from jobwire.client.backoff import Backoff
    from jobwire.client.client import Client
    from jobwire.client.errors import (
        GatewayError,
        GatewayUnreachable,
        JobCancelled,
        JobFailed,
        JobwireError,
        RequestRejected,
    )
    from jobwire.client.events import RESET, TERMINAL_TYPES, JobEvent
    from jobwire.client.job import Job
    from jobwire.client.stream import ConnectionState
    from jobwire.client.target import DEFAULT_URL, InvalidGatewayURL

__all__ = [
    "DEFAULT_URL",
    "RESET",
    "TERMINAL_TYPES",
    "Backoff",
    "Client",
    "ConnectionState",
    "GatewayError",
    "GatewayUnreachable",
    "InvalidGatewayURL",
    "Job",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobwireError",
    "RequestRejected",
]

_HOMES = {
    "Backoff": "jobwire.client.backoff",
    "Client": "jobwire.client.client",
    **dict.fromkeys(
        (
            "GatewayError",
            "GatewayUnreachable",
            "JobCancelled",
            "JobFailed",
            "JobwireError",
            "RequestRejected",
        ),
        "jobwire.client.errors",
    ),
    **dict.fromkeys(("RESET", "TERMINAL_TYPES", "JobEvent"), "jobwire.client.events"),
    "Job": "jobwire.client.job",
    "ConnectionState": "jobwire.client.stream",
    **dict.fromkeys(("DEFAULT_URL", "InvalidGatewayURL"), "jobwire.client.target"),
}


__getattr__, __dir__ = lazy_exports(__name__, __all__, _HOMES)
