"""The REST side of a job: submit, read its state, cancel it, revoke its watch tokens.

Each needs an API key (`gateway.endpoints.auth`); reading the state takes the job's watch token too.
A job belongs to the key that submitted it: another key gets 404, as for no job at all.

The same submit again (same id, name, args and key) answers 200 with a fresh watch token for
the job as it is now (its current token generation), which expires no later than the job's
state does: a token of a finished job lasts at most `JOBWIRE_RETENTION_S`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import orjson
from arq.constants import abort_jobs_ss
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from gateway.endpoints.auth import Caller, Viewer, access, require_api_key, require_viewer
from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import limits
from gateway.endpoints.listing import job_view, record_submit
from gateway.endpoints.lookup import job_not_found, load_snapshot, path_job_id
from gateway.endpoints.position import parse_position, requested
from gateway.endpoints.resumption import UnknownJobs, resume_points
from gateway.endpoints.services import Services, services
from gateway.endpoints.stream import event_stream
from gateway.endpoints.submission import Submission, check_against_catalog, read_submission
from gateway.engine.resume import Resume
from shared.catalog import load_catalog
from shared.events import EventType, make_event, now_ms
from shared.joblist import read_jobs
from shared.state import (
    CANCEL_REQUESTED,
    INCARNATION,
    OWNER,
    TERMINAL_STATUSES,
    TOKEN_GENERATION,
    JobStatus,
    TokenBinding,
    binding_of,
)
from shared.streamid import StreamId

__all__ = ["cancel", "revoke_tokens", "status", "submit"]

# Statuses in which the job sits in arq's queue rather than running: arq drops an aborted
# queued job without calling it, so the gateway writes `cancelled` itself.
_WAITING = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})


async def submit(request: Request) -> ASGIApp:
    """Queue a job: 202 (200 for the same job again) with its URLs, or with
    `Accept: text/event-stream` its event stream right away (the LLM-API pattern).

    A submit-and-stream retried after a lost connection (the same POST and Idempotency-Key,
    plus `Last-Event-ID`, as `fetch-event-source` sends it) resumes like a GET stream: after
    that id, or 204 at the terminal event, or a `reset` when the stream cannot vouch for it
    (a position sent with the POST that created the job is one)."""
    svc = services(request)
    caller = require_api_key(request)
    if not _wants_stream(request):
        limits(request).take_submit(caller.key_id)
        submission = await _read(request, svc, caller)
        return _accepted(request, submission.job_id, await _queue(svc, caller, submission))
    raw = requested(request)
    # Read before anything is queued: a malformed position queues nothing.
    position = None if raw is None else parse_position(raw)
    with limits(request).stream_slot(caller.counted_keys) as slot:
        limits(request).take_submit(caller.key_id)
        submission = await _read(request, svc, caller)
        queued = await _queue(svc, caller, submission)
        resume = await _resume_submitted(svc, caller, submission.job_id, position, queued)
        if resume.finished:
            return Response(status_code=204)
        return event_stream(svc, [resume], release=slot.hand_over())


async def _resume_submitted(
    svc: Services, caller: Caller, job_id: str, position: StreamId | None, queued: _Queued
) -> Resume:
    """Where a submit-and-stream starts: a job created now and no position, at its `queued`
    event with nothing read; any other (a retried POST, with the `Last-Event-ID` it had), by
    the resume routine of every stream, so the retry continues exactly after that id."""
    if queued.code == 202 and position is None:
        return Resume(job_id, after=None, reset=None, finished=False, binding=queued.binding)
    viewer = Viewer(api_key_id=caller.key_id or None)
    try:
        [resume] = await resume_points(svc, viewer, {job_id: position})
    except UnknownJobs:
        # Its state expired between the two reads.
        raise job_not_found(job_id) from None
    return resume


async def _read(request: Request, svc: Services, caller: Caller) -> Submission:
    # The caller scopes the Idempotency-Key: two keys sending the same one get two jobs.
    submission = await read_submission(request, svc.settings.max_body_bytes, caller.key_id)
    check_against_catalog(submission, await load_catalog(svc.redis, svc.keys))
    return submission


class _Queued(NamedTuple):
    """A submitted job: queued now (202), or the same job again (200)."""

    status: str
    code: int
    binding: TokenBinding  # what a watch token for it is bound to
    not_after: float | None = None  # unix s: when its state expires, for a job that exists


async def _queue(svc: Services, caller: Caller, submission: Submission) -> _Queued:
    queued = make_event(
        EventType.QUEUED,
        submission.job_id,
        attempt=0,
        data={"name": submission.name, "args": submission.args},
    )
    # Listed first, so no job exists unlisted; a listed job never created is dropped on read.
    await record_submit(svc, caller, submission.job_id, queued["ts"])
    # The owner is written with the job: it is never anybody else's, not for an instant.
    result = await svc.publisher.publish(queued, create=True, owner=caller.key_id)
    if not result.accepted:
        return await _same_job(svc, submission, caller, result.status or "queued")
    job = await svc.queue.enqueue_job(submission.name, _job_id=submission.job_id, **submission.args)
    if job is None:
        await _refuse_duplicate(svc, submission.job_id)
    binding = TokenBinding(caller.key_id or None, result.incarnation or "", 0)
    return _Queued(JobStatus.QUEUED.value, 202, binding)


async def status(request: Request) -> JSONResponse:
    """The job's state snapshot, for its API key or its watch token; for the key, with a fresh
    watch token (a token never renews itself: whoever holds one keeps it until it expires)."""
    svc = services(request)
    job_id = path_job_id(request)
    viewer = require_viewer(request, [job_id])
    (record,) = await read_jobs(svc.redis, svc.keys, [job_id])
    fields = record.fields
    if fields:
        viewer.check_tokens({job_id: binding_of(fields)})
    if not fields or not viewer.may_see(binding_of(fields).owner):
        raise job_not_found(job_id)
    with_token = viewer.api_key_id is not None
    return JSONResponse(job_view(request, job_id, record, with_token=with_token))


async def cancel(request: Request) -> JSONResponse:
    svc = services(request)
    job_id = path_job_id(request)
    caller = require_api_key(request)
    state = await load_snapshot(svc, job_id)
    if state is None or (caller.key_id and state.get(OWNER) != caller.key_id):
        raise job_not_found(job_id)
    job_status = JobStatus(state["status"])
    if job_status in TERMINAL_STATUSES:
        raise APIError(409, "job_finished", f"job {job_id} already {job_status.value}")
    await svc.redis.hset(svc.keys.state(job_id), CANCEL_REQUESTED, str(now_ms()))  # type: ignore[misc]
    await _abort_in_queue(svc, job_id)
    if job_status in _WAITING:
        event = make_event(
            EventType.CANCELLED, job_id, state["attempt"], {"reason": "cancelled before start"}
        )
        await svc.publisher.publish(event)
        return JSONResponse({"job_id": job_id, "status": "cancelled"}, 202)
    return JSONResponse({"job_id": job_id, "status": "cancelling"}, 202)


async def revoke_tokens(request: Request) -> Response:
    """Refuse every watch token issued for the job so far (API key of its submitter): 204.
    Streams they opened end, on every gateway; a token issued later works."""
    svc = services(request)
    job_id = path_job_id(request)
    caller = require_api_key(request)
    if await svc.publisher.revoke_tokens(job_id, caller.key_id) is None:
        raise job_not_found(job_id)
    return Response(status_code=204)


_SAME_JOB_FIELDS = ("name", "args", OWNER, INCARNATION, TOKEN_GENERATION)


async def _same_job(
    svc: Services, submission: Submission, caller: Caller, job_status: str
) -> _Queued:
    """The job already under this id, if it is this submission's; else 409."""
    key = svc.keys.state(submission.job_id)
    async with svc.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(key, list(_SAME_JOB_FIELDS))
        pipe.pttl(key)
        values, ttl_ms = await pipe.execute()
    fields = {
        name.encode(): value
        for name, value in zip(_SAME_JOB_FIELDS, values, strict=True)
        if value is not None
    }
    binding = binding_of(fields)
    name, args = fields.get(b"name"), fields.get(b"args")
    if (
        name is None
        or args is None
        or (caller.key_id and binding.owner != caller.key_id)
        or name.decode() != submission.name
        or orjson.loads(args) != submission.args
    ):
        # Another key's job is told apart from nothing else: the id is simply taken.
        raise APIError(
            409,
            "job_id_taken",
            f"job {submission.job_id} exists with a different name, args or API key",
        )
    not_after = time.time() + ttl_ms / 1000 if ttl_ms >= 0 else None
    return _Queued(job_status, 200, binding, not_after)


async def _refuse_duplicate(svc: Services, job_id: str) -> None:
    """arq still holds a job or result under this id (its state expired before arq's did)."""
    failed = make_event(
        EventType.FAILED,
        job_id,
        attempt=0,
        data={"type": "DuplicateJobId", "message": "the queue already holds a job with this id"},
    )
    await svc.publisher.publish(failed)
    raise APIError(409, "job_id_taken", f"the queue already holds a job {job_id}")


async def _abort_in_queue(svc: Services, job_id: str) -> None:
    """Ask arq to abort the job; a worker running it sees this within its poll delay."""
    # What arq's Job.abort() does, without its polling for the outcome: the stream carries it.
    await svc.queue.zadd(abort_jobs_ss, {job_id: now_ms()})


def _accepted(request: Request, job_id: str, queued: _Queued) -> JSONResponse:
    status_url = str(request.url_for("status", job_id=job_id))
    body = {
        "job_id": job_id,
        "status": queued.status,
        "status_url": status_url,
        "events_url": str(request.url_for("events", job_id=job_id)),
        # Opens this job's events (and state) without the API key: for a browser's
        # EventSource (`?token=`) or whoever is handed the job. None when auth is disabled.
        "watch_token": access(request).issue(job_id, queued.binding, not_after=queued.not_after),
    }
    return JSONResponse(body, queued.code, headers={"Location": status_url})


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")
