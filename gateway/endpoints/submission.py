"""Reading and checking a `POST /jobs` body: size, content type, JSON shape, and the job's
name and arguments against the catalog the workers advertise.

Every refusal of the arguments is one 422 `invalid_args` whose detail lists one
`{"loc": ["args", name, ...], "msg": ...}` per bad field: names the queue keeps for itself,
and whatever the job's schema refuses (`gateway.endpoints.arguments`)."""

from __future__ import annotations

import hashlib
import inspect
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from arq import ArqRedis
from starlette.requests import ClientDisconnect, Request

from gateway.endpoints.arguments import Problem, check_args, location_order
from gateway.endpoints.errors import APIError
from shared.catalog import JobSpec
from shared.keys import InvalidJobId, validate_job_id

__all__ = ["Submission", "check_against_catalog", "read_submission"]

# The one media type taken. A page on any site may make a browser POST a form, text/plain or a
# body of no type anywhere without asking first; `application/json` makes the browser ask (a
# CORS preflight), which only the origins in JOBWIRE_CORS_ORIGINS pass. So no page elsewhere can
# start jobs here, even on a `jobwire up` with auth disabled.
_JSON = "application/json"
_FIELDS = {"name", "args", "job_id"}
# The args go to `enqueue_job` as keyword arguments, beside its own: an argument named like one
# of them would be an option to arq (`_defer_by`, `_queue_name`...) or a TypeError after the job
# was written down. arq marks its options with `_`, so every such name is refused, the ones to
# come too; and arq calls each job function with `ctx` first.
_ENQUEUE_PARAMETERS = inspect.signature(ArqRedis.enqueue_job).parameters.values()
_RESERVED_ARGS = frozenset(
    {"ctx"}
    | {p.name for p in _ENQUEUE_PARAMETERS if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
)
MAX_IDEMPOTENCY_KEY_CHARS = 255
# The ids an Idempotency-Key names. Reserved: key names are no secret (every watch token shows
# its own), so a job id chosen with this prefix could take another key's idempotent id first.
IDEMPOTENT_PREFIX = "idem-"


@dataclass(frozen=True, slots=True)
class Submission:
    name: str
    args: dict[str, Any]
    job_id: str


async def read_submission(request: Request, max_bytes: int, caller: str = "") -> Submission:
    """The submission in `request`; `caller` scopes its Idempotency-Key (the API key's id)."""
    _check_content_type(request.headers.get("content-type"))
    body = await _read_body(request, max_bytes)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and isinstance(value, dict):
        value = _with_idempotent_job_id(value, idempotency_key, caller)
    elif isinstance(value, dict):
        _refuse_reserved_job_id(value.get("job_id"))
    return _parse(value)


def _with_idempotent_job_id(value: dict[str, Any], key: str, caller: str) -> dict[str, Any]:
    """A retried POST with the same Idempotency-Key names the same job, so it is not run twice."""
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise APIError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
        )
    if "job_id" in value:
        raise APIError(400, "invalid_request", "give 'job_id' or Idempotency-Key, not both")
    digest = hashlib.sha256(f"{caller}\x00{key}".encode()).hexdigest()[:32]
    return {**value, "job_id": f"{IDEMPOTENT_PREFIX}{digest}"}


def _refuse_reserved_job_id(job_id: object) -> None:
    if isinstance(job_id, str) and job_id.startswith(IDEMPOTENT_PREFIX):
        raise APIError(
            400,
            "invalid_job_id",
            f"job ids starting with {IDEMPOTENT_PREFIX!r} are reserved for submits with an "
            "Idempotency-Key: choose another id, or send the Idempotency-Key header",
        )


def check_against_catalog(submission: Submission, catalog: dict[str, JobSpec]) -> None:
    spec = catalog.get(submission.name)
    if spec is None:
        raise APIError(
            422,
            "unknown_job",
            {"message": f"no job is named {submission.name!r}", "known": sorted(catalog)},
        )
    reserved = _reserved(submission.args)
    ordinary = {name: value for name, value in submission.args.items() if name not in reserved}
    problems = [*_reserved_problems(reserved), *check_args(spec, ordinary)]
    if problems:
        problems.sort(key=lambda problem: location_order(problem["loc"]))
        raise APIError(422, "invalid_args", problems)


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != _JSON:
        sent = repr(media_type[:100]) if media_type else "no Content-Type"
        raise APIError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: {_JSON}, not {sent}",
        )


def _reserved(args: dict[str, Any]) -> set[str]:
    """The arguments the queue would take as its own."""
    return {name for name in args if name.startswith("_") or name in _RESERVED_ARGS}


def _reserved_problems(names: set[str]) -> list[Problem]:
    return [Problem(loc=["args", name], msg=_why_reserved(name)) for name in names]


def _why_reserved(name: str) -> str:
    if name.startswith("_"):
        return "names starting with '_' are reserved for the job queue's options"
    return f"{name!r} is reserved by the job queue"


async def _read_body(request: Request, max_bytes: int) -> bytes:
    too_large = APIError(413, "payload_too_large", f"the body must be at most {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # The client is gone: nobody reads this answer; it only keeps the log clean.
        raise APIError(
            400, "incomplete_body", "the connection closed before the body ended"
        ) from None
    return b"".join(chunks)


def _parse(value: Any) -> Submission:
    if not isinstance(value, dict):
        raise APIError(400, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise APIError(400, "invalid_request", f"unknown fields: {', '.join(unknown)}")
    name, args, job_id = value.get("name"), value.get("args", {}), value.get("job_id")
    if not isinstance(name, str) or not name:
        raise APIError(400, "invalid_request", "'name' must be a non-empty string")
    if not isinstance(args, dict):
        raise APIError(400, "invalid_request", "'args' must be a JSON object")
    if job_id is None:
        job_id = uuid.uuid4().hex
    elif not isinstance(job_id, str):
        raise APIError(400, "invalid_request", "'job_id' must be a string")
    try:
        validate_job_id(job_id)
    except InvalidJobId as exc:
        raise APIError(400, "invalid_job_id", str(exc)) from None
    return Submission(name=name, args=args, job_id=job_id)
