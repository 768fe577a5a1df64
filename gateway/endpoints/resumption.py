"""Where each job of an event stream resumes: one routine for `GET /jobs/{id}/events` (a list
of one job) and `GET /events` (several).

1. The hub's ring first (`Hub.vouch`): a position the ring holds needs no Redis read. For a
   watch token the feed must also know who may watch the job, and the token must match it
   (`Viewer.trusts`); else the job is read from Redis like any other.
2. Everything else in ONE pipelined round trip, however many jobs: for each job the ring could
   not vouch for, its state hash and the stream's word on the position (`XRANGE key P P`, or
   `XINFO STREAM` without a position); for each job it did vouch for, its `owner` field when
   the viewer is an API key. So a token resume the ring vouches for reads nothing from Redis.
3. Ownership is checked one way for every job (`Viewer.may_see` on the `owner` field): another
   key's job is unknown, exactly like a job that does not exist. A watch token read against the
   job's state must match its owner, incarnation and token generation
   (`Viewer.check_tokens`: 403 as for another job's token, 401 when revoked).

The resume rules (`docs/architecture.md`): resuming is exact only from an id the stream still
holds. Any other position — trimmed away, of another job, invented, beyond the last event —
gets a `reset` (reason `unknown_position`) carrying the job's snapshot, then everything the
stream holds; no position at all on a stream whose history was trimmed gets a `reset` with
reason `history_trimmed`. A position at the terminal event is finished: nothing is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ResponseError

from gateway.endpoints.auth import Viewer
from gateway.endpoints.services import Services
from gateway.engine.counters import GatewayCounters, ResumeKind
from gateway.engine.hub import Hub
from gateway.engine.resume import Resume
from shared.state import OWNER, TERMINAL_STATUSES, JobStatus, TokenBinding, binding_of, snapshot
from shared.streamid import StreamId

__all__ = ["UnknownJobs", "count_resumes", "resume_points", "resume_points_in_ring"]

Positions = Mapping[str, StreamId | None]


class UnknownJobs(LookupError):
    """Jobs that do not exist, or that belong to another API key (the two look the same)."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(", ".join(job_ids))
        self.job_ids = job_ids


@dataclass(frozen=True, slots=True)
class _Stored:
    """What Redis holds for one job the ring could not vouch for."""

    fields: dict[bytes, bytes]  # the state hash; empty when the job does not exist
    # The stream vouches: it holds the position, or (no position) none of its history was
    # trimmed.
    vouched: bool

    @property
    def binding(self) -> TokenBinding | None:
        return binding_of(self.fields) if self.fields else None


@dataclass(frozen=True, slots=True)
class _Reads:
    """The answers of the one round trip."""

    stored: dict[str, _Stored]
    owners: dict[str, str | None]  # the `owner` field of every job read (None: none)


async def resume_points(svc: Services, viewer: Viewer, positions: Positions) -> list[Resume]:
    """Where each job of `positions` (job id: the client's position in it) resumes, in that
    order. Raises UnknownJobs, naming them in that order, when any is not the viewer's, and
    APIError when a watch token does not open its job as it is now."""
    from_ring = _vouched_by_ring(svc.hub, viewer, positions)
    unread = {job: position for job, position in positions.items() if job not in from_ring}
    reads = await _read(svc, unread, list(from_ring) if viewer.reads_owner else [])
    viewer.check_tokens(
        {job_id: s.binding for job_id, s in reads.stored.items() if s.binding is not None}
    )
    unknown = [job_id for job_id in positions if not _visible(job_id, viewer, reads)]
    if unknown:
        raise UnknownJobs(unknown)
    return [
        _opened_by(
            viewer.token_generation(job_id),
            from_ring.get(job_id) or _resume(job_id, position, reads.stored[job_id]),
        )
        for job_id, position in positions.items()
    ]


def resume_points_in_ring(hub: Hub, viewer: Viewer, positions: Positions) -> list[Resume] | None:
    """`resume_points` when the ring alone answers it, read synchronously: every job's position
    vouched for by the ring (and its token, if any, trusted), and no `owner` to read for an
    API key. None when anything would need Redis; `resume_points` then answers, refusals
    included."""
    if viewer.reads_owner:  # without an API key, a job is seen by the token that opens it
        return None
    from_ring = _vouched_by_ring(hub, viewer, positions)
    if len(from_ring) != len(positions):
        return None
    return [_opened_by(viewer.token_generation(job_id), from_ring[job_id]) for job_id in positions]


def _opened_by(token_generation: int | None, resume: Resume) -> Resume:
    # A copy only for a watch token: most resumes are opened with a key.
    if token_generation is None:
        return resume
    return replace(resume, token_generation=token_generation)


def count_resumes(counters: GatewayCounters, positions: Positions, resumes: list[Resume]) -> None:
    """Count how each job of a stream request that named a position in it resumes."""
    for resume in resumes:
        if positions[resume.job_id] is not None:
            counters.resumes[_kind(resume)] += 1


def _kind(resume: Resume) -> ResumeKind:
    if resume.finished:
        return ResumeKind.FINISHED
    if resume.from_ring:
        return ResumeKind.RING
    return ResumeKind.REDIS if resume.reset is None else ResumeKind.RESET


def _vouched_by_ring(hub: Hub, viewer: Viewer, positions: Positions) -> dict[str, Resume]:
    vouched = {}
    for job_id, position in positions.items():
        resume = None if position is None else hub.vouch(job_id, position)
        if resume is not None and viewer.trusts(job_id, resume.binding):
            vouched[job_id] = resume
    return vouched


async def _read(svc: Services, unread: Positions, owners_of: list[str]) -> _Reads:
    """One round trip for every job: no transaction (keys of different jobs may live on
    different cluster slots), and errors come back as replies so one missing stream does not
    hide the other answers."""
    if not unread and not owners_of:
        return _Reads({}, {})
    async with svc.redis.pipeline(transaction=False) as pipe:
        for job_id, position in unread.items():
            pipe.hgetall(svc.keys.state(job_id))
            _ask_stream(pipe, svc.keys.events(job_id), position)
        for job_id in owners_of:
            pipe.hget(svc.keys.state(job_id), OWNER)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    stored = {
        job_id: _stored(position, replies[2 * index], replies[2 * index + 1])
        for index, (job_id, position) in enumerate(unread.items())
    }
    owners = {
        job_id: _owner(reply)
        for job_id, reply in zip(owners_of, replies[2 * len(unread) :], strict=True)
    }
    owners |= {job_id: _owner(s.fields.get(OWNER.encode())) for job_id, s in stored.items()}
    return _Reads(stored, owners)


def _ask_stream(
    pipe: Pipeline | ClusterPipeline, stream_key: str, position: StreamId | None
) -> None:
    if position is None:
        pipe.xinfo_stream(stream_key)
    else:
        # XREAD from an id that is not in the stream silently starts at the next one: an id
        # that was trimmed away would look like a clean resume, so check it is really there.
        pipe.xrange(stream_key, str(position), str(position), count=1)


def _stored(position: StreamId | None, fields: Any, answer: Any) -> _Stored:
    if isinstance(fields, Exception):
        raise fields
    if isinstance(answer, ResponseError) and "no such key" in str(answer).lower():
        # XINFO on a missing stream: the job's keys are expiring this instant, so it is
        # answered like a job that is gone.
        return _Stored({}, vouched=False)
    if isinstance(answer, Exception):
        raise answer
    if position is None:
        return _Stored(fields, vouched=int(answer["entries-added"]) <= int(answer["length"]))
    return _Stored(fields, vouched=bool(answer))


def _owner(raw: Any) -> str | None:
    if isinstance(raw, Exception):
        raise raw
    return None if raw is None else bytes(raw).decode()


def _visible(job_id: str, viewer: Viewer, reads: _Reads) -> bool:
    stored = reads.stored.get(job_id)
    if stored is not None and not stored.fields:
        return False
    return viewer.may_see(reads.owners.get(job_id))


def _resume(job_id: str, position: StreamId | None, stored: _Stored) -> Resume:
    state = snapshot(job_id, stored.fields)
    last = StreamId.parse(state["last_event_id"])
    known = {
        "status": state["status"],
        "updated_at": state["updated_at"],
        "binding": stored.binding,
    }
    if position == last and JobStatus(state["status"]) in TERMINAL_STATUSES:
        return Resume(job_id, position, None, finished=True, **known)
    reason = _unvouched(position, last, stored)
    if reason is None:
        return Resume(job_id, position, None, finished=False, **known)
    reset = {"job": job_id, "reason": reason, "state": state}
    return Resume(job_id, None, reset, finished=False, **known)


def _unvouched(position: StreamId | None, last: StreamId, stored: _Stored) -> str | None:
    """Why the stream cannot vouch for continuing from `position`, or None if it can."""
    if position is None:
        return None if stored.vouched else "history_trimmed"
    if position > last or not stored.vouched:
        return "unknown_position"
    return None
