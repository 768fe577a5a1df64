"""Who may do what: API keys to submit, read and cancel jobs; watch tokens to follow one.

- An API key (`Authorization: Bearer <key>`) acts on the jobs it submitted. The state hash
  records the submitting key's id (`owner`); another key's job answers 404, exactly like a job
  that does not exist, so no answer tells anyone which jobs exist.
- A watch token (`gateway.endpoints.tokens`), returned at submit, opens one job's events and
  state. EventSource cannot send headers, so it is also taken from `?token=` (and kept out of
  the access log: `gateway.endpoints.redaction`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from gateway.endpoints.errors import APIError
from gateway.endpoints.tokens import Access, unauthorized

__all__ = [
    "OWNER",
    "Caller",
    "Viewer",
    "access",
    "require_api_key",
    "require_viewer",
]

# The state-hash field naming the key that submitted the job.
OWNER = "owner"
MAX_CREDENTIAL_CHARS = 1_024
MAX_TOKENS = 100


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request with an API key: the key's id ("" when auth is disabled)."""

    key_id: str

    @property
    def counted_keys(self) -> frozenset[str]:
        """The keys its requests count against (none when auth is disabled)."""
        return frozenset({self.key_id}) if self.key_id else frozenset()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads a job's state or events.

    `counted_keys`: the keys an open stream counts against — the API key, or the keys that
    issued the tokens. `api_key_id`: the API key used, which must own the jobs; None for
    token holders (a token already names its job) and when auth is disabled.
    """

    counted_keys: frozenset[str]
    api_key_id: str | None = None

    @property
    def reads_owner(self) -> bool:
        """Whether seeing a job needs its `owner` field: only an API key must own it."""
        return self.api_key_id is not None

    def may_see(self, owner: str | None) -> bool:
        """Whether a job whose state names `owner` (None: no such field) is this viewer's."""
        return self.api_key_id is None or owner == self.api_key_id

    def owns(self, state: Mapping[str, Any]) -> bool:
        return self.may_see(state.get(OWNER))


def access(connection: HTTPConnection) -> Access:
    value: Access = connection.app.state.access
    return value


def require_api_key(connection: HTTPConnection) -> Caller:
    """The caller's API key from `Authorization: Bearer`; 401 without a valid one."""
    gate = access(connection)
    if not gate.enabled:
        return Caller("")
    credential = _bearer(connection)
    if credential is None:
        raise unauthorized("send an API key: Authorization: Bearer <key>", challenge_only=True)
    key_id = gate.key_id(credential)
    if key_id is None:
        raise unauthorized("the API key is not valid")
    return Caller(key_id)


def require_viewer(connection: HTTPConnection, job_ids: Sequence[str]) -> Viewer:
    """Who may see `job_ids`: an API key (whose ownership of them is checked where the jobs
    are read), or watch tokens covering every one of them (header or `?token=`, repeated);
    401 without valid credentials, 403 when the tokens leave a job out."""
    gate = access(connection)
    if not gate.enabled:
        return Viewer(frozenset())
    credential = _bearer(connection)
    tokens = connection.query_params.getlist("token")
    if credential is None and not tokens:
        raise unauthorized(
            "send an API key or the job's watch token: Authorization: Bearer <key or token>, "
            "or ?token=<token>",
            challenge_only=True,
        )
    if credential is not None:
        key_id = gate.key_id(credential)
        if key_id is not None:
            return Viewer(frozenset({key_id}), api_key_id=key_id)
        if not gate.looks_like_token(credential):
            raise unauthorized("the API key is not valid")
        tokens = [credential, *tokens]
    return _token_viewer(gate, tokens, job_ids)


def _token_viewer(gate: Access, tokens: list[str], job_ids: Sequence[str]) -> Viewer:
    if len(tokens) > MAX_TOKENS:
        raise APIError(400, "invalid_request", f"at most {MAX_TOKENS} watch tokens")
    issuers: dict[str, str] = {}
    for token in tokens:
        grant = gate.verify(token)
        issuers.setdefault(grant.job_id, grant.key_id)
    uncovered = [job_id for job_id in job_ids if job_id not in issuers]
    if uncovered:
        raise APIError(
            403,
            "forbidden",
            {"message": "no watch token given is for these jobs", "jobs": uncovered},
        )
    return Viewer(frozenset(issuers[job_id] for job_id in job_ids))


def _bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if (
        scheme.lower() != "bearer"
        or not credential
        or " " in credential
        or len(credential) > MAX_CREDENTIAL_CHARS
    ):
        raise unauthorized("expected the header Authorization: Bearer <credential>")
    return credential
