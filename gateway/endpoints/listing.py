"""`GET /jobs`: the calling API key's jobs, newest first, a page at a time.

Each item is what `GET /jobs/{id}` answers for the key: the snapshot, `stalled`, and a fresh
`watch_token`. With access control off every caller is the same one, and the list holds every
job submitted while it was off.

Filters (`status`, `name`) are applied to states as they are read, so a page may hold fewer
than `limit` jobs: one request reads at most `MAX_STATES_READ` states, then answers with what
it found and a `next` cursor to go on from. `next` is null once the list is exhausted. The
cursor is the position of the last job looked at (its submit time and id), so jobs submitted
meanwhile never shift a page: no job comes twice, none is skipped.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.endpoints.auth import Caller, access, require_api_key
from gateway.endpoints.errors import APIError
from gateway.endpoints.services import Services, services
from shared import joblist
from shared.events import now_ms
from shared.joblist import Entry, JobRecord
from shared.keys import InvalidJobId, validate_job_id
from shared.state import JobStatus, binding_of, is_stalled, snapshot

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_STATES_READ",
    "PENDING_GRACE_MS",
    "job_view",
    "list_jobs",
    "record_submit",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_STATES_READ = 500
# A job is listed just before it is created: an entry without a state this young may be a job
# being created right now, so it is skipped but kept.
PENDING_GRACE_MS = 60_000
# The longest a job's state lives: refreshed to 7 x the retention by each event (shared.publish).
_LONGEST_STATE_LIFE = 7
_STATUSES = frozenset(status.value for status in JobStatus)
_MAX_CURSOR_CHARS = 256
_DIGITS = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class _Query:
    limit: int
    statuses: frozenset[str]  # empty: any
    name: str | None
    after: Entry | None

    def wants(self, state: dict[str, Any]) -> bool:
        if self.statuses and state.get("status") not in self.statuses:
            return False
        return self.name is None or state.get("name") == self.name


async def record_submit(svc: Services, caller: Caller, job_id: str, submitted_ms: int) -> None:
    """Lists a job about to be created under the key that submits it."""
    settings = svc.settings
    await joblist.add(
        svc.redis,
        svc.keys,
        caller.key_id,
        Entry(submitted_ms, job_id),
        bound=settings.jobs_listed_per_key,
        ttl_s=settings.retention_s * _LONGEST_STATE_LIFE,
    )


def job_view(
    request: Request, job_id: str, record: JobRecord, *, with_token: bool
) -> dict[str, Any]:
    """What `GET /jobs/{id}` answers: the snapshot, whether it stalled, and for an API key a
    fresh watch token (expiring no later than the state); else `watch_token` is null."""
    svc = services(request)
    state = snapshot(job_id, record.fields)
    state["stalled"] = is_stalled(
        state["status"], state["updated_at"], svc.settings.heartbeat_s, now_ms()
    )
    token = None
    if with_token:
        not_after = time.time() + record.ttl_ms / 1000 if record.ttl_ms >= 0 else None
        token = access(request).issue(job_id, binding_of(record.fields), not_after=not_after)
    state["watch_token"] = token
    return state


async def list_jobs(request: Request) -> JSONResponse:
    caller = require_api_key(request)
    query = _read_query(request)
    svc = services(request)
    items: list[dict[str, Any]] = []
    position = query.after
    budget = MAX_STATES_READ
    more = True
    while more and budget > 0 and len(items) < query.limit:
        wanted = min(query.limit - len(items), budget)
        # One entry past those read tells whether the list goes on.
        entries = await joblist.page(svc.redis, svc.keys, caller.key_id, position, wanted + 1)
        more = len(entries) > wanted
        entries = entries[:wanted]
        if not entries:
            break
        records = await joblist.read_jobs(svc.redis, svc.keys, [entry.job_id for entry in entries])
        budget -= len(entries)
        position = entries[-1]
        items += await _keep(request, svc, caller, query, entries, records)
    next_cursor = _encode(position) if more and position is not None else None
    return JSONResponse({"jobs": items, "next": next_cursor})


async def _keep(
    request: Request,
    svc: Services,
    caller: Caller,
    query: _Query,
    entries: Sequence[Entry],
    records: Sequence[JobRecord],
) -> list[dict[str, Any]]:
    """The items among `entries` the query wants; entries of no job, or of a job that is not
    the caller's (its id was taken, or reused since), are taken off the list."""
    kept: list[dict[str, Any]] = []
    stale: list[str] = []
    cutoff = now_ms() - PENDING_GRACE_MS
    for entry, record in zip(entries, records, strict=True):
        if not record.fields:
            if entry.submitted_ms < cutoff:
                stale.append(entry.job_id)
            continue
        if binding_of(record.fields).owner != (caller.key_id or None):
            stale.append(entry.job_id)
            continue
        view = job_view(request, entry.job_id, record, with_token=True)
        if query.wants(view):
            kept.append(view)
    await joblist.prune(svc.redis, svc.keys, caller.key_id, stale)
    return kept


def _read_query(request: Request) -> _Query:
    params = request.query_params
    statuses = frozenset(
        part.strip() for value in params.getlist("status") for part in value.split(",")
    )
    unknown = sorted(statuses - _STATUSES)
    if unknown:
        known = ", ".join(sorted(_STATUSES))
        raise _bad(f"status: {', '.join(map(repr, unknown))} is not one of {known}")
    names = params.getlist("name")
    if len(names) > 1 or (names and not names[0]):
        raise _bad("name: give one job name")
    cursor = params.get("cursor")
    return _Query(
        limit=_limit(params.get("limit")),
        statuses=statuses,
        name=names[0] if names else None,
        after=None if cursor is None else _decode(cursor),
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad(f"limit: a whole number from 1 to {MAX_LIMIT}, got {raw[:40]!r}")
    return int(raw)


def _encode(entry: Entry) -> str:
    raw = f"{entry.submitted_ms}.{entry.job_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(cursor: str) -> Entry:
    """The position a cursor from `next` names; 400 for anything else."""
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        millis, _, job_id = raw.partition(".")
        if not _DIGITS.fullmatch(millis):
            raise ValueError
        return Entry(int(millis), validate_job_id(job_id))
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidJobId):
        raise _bad("cursor: not a cursor this gateway gave (use `next` as it is)") from None


def _bad(detail: str) -> APIError:
    return APIError(400, "invalid_query", detail)
