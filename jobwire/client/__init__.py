"""The Python client of Jobwire: submit jobs and follow their events, surviving network loss.

```python
async with Client("http://127.0.0.1:8000") as client:
    job = await client.submit("demo.countdown", seconds=5)
    async for event in job.events():
        print(event.type, event.data)
    result = await job.wait()
```
"""

from jobwire.client.backoff import Backoff
from jobwire.client.client import DEFAULT_URL, Client
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

__all__ = [
    "DEFAULT_URL",
    "RESET",
    "TERMINAL_TYPES",
    "Backoff",
    "Client",
    "ConnectionState",
    "GatewayError",
    "GatewayUnreachable",
    "Job",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobwireError",
    "RequestRejected",
]
