"""Finding a job from a request: its id from the path, its state snapshot from Redis."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from gateway.endpoints.errors import APIError
from gateway.endpoints.services import Services
from shared.keys import InvalidJobId, validate_job_id
from shared.state import snapshot

__all__ = ["job_not_found", "load_snapshot", "path_job_id"]


def path_job_id(request: HTTPConnection) -> str:
    job_id: str = request.path_params["job_id"]
    try:
        return validate_job_id(job_id)
    except InvalidJobId as exc:
        raise APIError(400, "invalid_job_id", str(exc)) from None


async def load_snapshot(svc: Services, job_id: str) -> dict[str, Any] | None:
    fields: dict[bytes, bytes] = await svc.redis.hgetall(svc.keys.state(job_id))  # type: ignore[misc]
    return snapshot(job_id, fields) if fields else None


def job_not_found(job_id: str) -> APIError:
    return APIError(404, "job_not_found", f"no job {job_id}")
