"""Every Redis key and channel name Jobwire uses is built here, and nowhere else.

The keys of one job share the hash tag `{<job id>}` so they live on one Redis Cluster slot
and the publish script may touch them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["JOB_ID_PATTERN", "InvalidJobId", "Keys", "validate_job_id"]

# Letters, digits, `_`, `-` and `.`: safe inside a hash tag, a URL path and a log line.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class InvalidJobId(ValueError):
    """A job id that Jobwire never issues and does not accept."""


def validate_job_id(job_id: str) -> str:
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidJobId(
            "job ids are 1-128 characters of letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return job_id


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "jobwire"

    def events(self, job_id: str) -> str:
        """The job's event stream."""
        return f"{self.prefix}:{{{job_id}}}:events"

    def state(self, job_id: str) -> str:
        """The job's state hash: the snapshot `GET /jobs/{id}` returns."""
        return f"{self.prefix}:{{{job_id}}}:state"

    def live(self, job_id: str) -> str:
        """The pub/sub channel the publish script announces each new event on."""
        return f"{self.prefix}:{{{job_id}}}:live"

    def catalog(self) -> str:
        """Hash of job name -> job spec, advertised by workers for the gateway to validate."""
        return f"{self.prefix}:catalog"

    def workers(self) -> str:
        """Sorted set of worker id -> last-seen unix ms."""
        return f"{self.prefix}:workers"

    def outcomes(self) -> str:
        """Hash of '<outcome>:<job name>' -> attempts that ended so, counted by every worker:
        the jobs by outcome the gateway's `/metrics` shows, whichever worker ran them."""
        return f"{self.prefix}:outcomes"

    def worker_load(self, worker_id: str) -> str:
        """How many jobs the worker runs now; expires unless its presence beat renews it."""
        return f"{self.prefix}:worker:{worker_id}:running"

    def jobs_of(self, key_id: str) -> str:
        """Sorted set of job id -> submit unix ms: the jobs API key `key_id` submitted ("":
        every job submitted with access control off). Hash tag of its own: the key's slot."""
        return f"{self.prefix}:{{key:{key_id}}}:jobs"
