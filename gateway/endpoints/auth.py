"""Who may do what: API keys to submit, read and cancel jobs; watch tokens to follow one.

- An API key (`Authorization: Bearer <key>`) acts on the jobs it submitted. The state hash
  records the submitting key's id (`owner`); another key's job answers 404, exactly like a job
  that does not exist, so no answer tells anyone which jobs exist.
- A watch token (`gateway.endpoints.tokens`), returned at submit, opens one job's events and
  state. EventSource cannot send headers, so it is also taken from `?token=` (and kept out of
  the access log: `gateway.endpoints.redaction`). Its signature and expiry are checked here;
  whether it opens the job as the job is now (the same owner, the same incarnation, no
  revocation since) is checked where the job's state is read (`Viewer.check_tokens`), or
  against what the hub remembers of the job when its ring vouches for the position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import Holder, TokenHolder
from gateway.endpoints.tokens import Access, WatchGrant, unauthorized
from shared.logs import KEY
from shared.state import OWNER, TokenBinding

__all__ = [
    "OWNER",
    "Caller",
    "Viewer",
    "access",
    "require_api_key",
    "require_viewer",
]

MAX_CREDENTIAL_CHARS = 1_024
MAX_TOKENS = 100


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request with an API key: the key's id ("" when auth is disabled)."""

    key_id: str

    @property
    def counted_keys(self) -> frozenset[Holder]:
        """What its streams count against (nothing when auth is disabled)."""
        return frozenset({self.key_id}) if self.key_id else frozenset()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads a job's state or events: an API key, which must own the jobs; or watch
    tokens, one for each job (`grants`), each of which must match its job's binding; or,
    with auth disabled, anyone (neither).
    """

    api_key_id: str | None = None
    grants: Mapping[str, WatchGrant] = field(default_factory=dict)

    @property
    def counted_keys(self) -> frozenset[Holder]:
        """What an open stream counts against: the API key; or for each job the tokens of the
        key that issued them, apart from that key's own streams."""
        if self.api_key_id is not None:
            return frozenset({self.api_key_id})
        return frozenset(TokenHolder(job_id, grant.key_id) for job_id, grant in self.grants.items())

    @property
    def reads_owner(self) -> bool:
        """Whether seeing a job needs its `owner` field: only an API key must own it."""
        return self.api_key_id is not None

    def may_see(self, owner: str | None) -> bool:
        """Whether a job whose state names `owner` (None: no such field) is this API key's;
        a token's job is checked with `trusts` and `check_tokens`."""
        return self.api_key_id is None or owner == self.api_key_id

    def owns(self, state: Mapping[str, Any]) -> bool:
        return self.may_see(state.get(OWNER))

    def token_generation(self, job_id: str) -> int | None:
        """The token generation of the token given for the job; None: no token."""
        grant = self.grants.get(job_id)
        return None if grant is None else grant.generation

    def trusts(self, job_id: str, binding: TokenBinding | None) -> bool:
        """Whether the token given for the job, if any, opens the job `binding` describes
        (None: not known)."""
        grant = self.grants.get(job_id)
        return grant is None or grant.binding == binding

    def check_tokens(self, bindings: Mapping[str, TokenBinding]) -> None:
        """Refuses the tokens that do not open their jobs as `bindings` says they are now:
        401 for a revoked one; 403, exactly as for a token of another job, for a token of
        another key's job or of an earlier job under the same id."""
        refused = {
            job: binding for job, binding in bindings.items() if not self.trusts(job, binding)
        }
        foreign = [job for job, binding in refused.items() if not self._revoked(job, binding)]
        if foreign:
            raise _not_covered(foreign)
        if refused:
            raise unauthorized("the watch token was revoked")

    def _revoked(self, job_id: str, binding: TokenBinding) -> bool:
        grant = self.grants[job_id]
        return grant.binding[:2] == binding[:2] and grant.generation < binding.generation


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
    KEY.set(key_id)
    return Caller(key_id)


def require_viewer(connection: HTTPConnection, job_ids: Sequence[str]) -> Viewer:
    """Who may see `job_ids`: an API key (whose ownership of them is checked where the jobs
    are read), or watch tokens covering every one of them (header or `?token=`, repeated);
    401 without valid credentials, 403 when the tokens leave a job out."""
    gate = access(connection)
    if not gate.enabled:
        return Viewer()
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
            KEY.set(key_id)
            return Viewer(api_key_id=key_id)
        if not gate.looks_like_token(credential):
            raise unauthorized("the API key is not valid")
        tokens = [credential, *tokens]
    return _token_viewer(gate, tokens, job_ids)


def _token_viewer(gate: Access, tokens: list[str], job_ids: Sequence[str]) -> Viewer:
    if len(tokens) > MAX_TOKENS:
        raise APIError(400, "invalid_request", f"at most {MAX_TOKENS} watch tokens")
    grants: dict[str, WatchGrant] = {}
    for token in tokens:
        grant = gate.verify(token)
        known = grants.get(grant.job_id)
        # Two tokens for one job: the later generation, then the later expiry.
        if known is None or _newer(grant) > _newer(known):
            grants[grant.job_id] = grant
    uncovered = [job_id for job_id in job_ids if job_id not in grants]
    if uncovered:
        raise _not_covered(uncovered)
    issuers = {grants[job_id].key_id for job_id in job_ids}
    if len(issuers) == 1:
        KEY.set(issuers.pop())  # the key whose tokens these are
    return Viewer(grants={job_id: grants[job_id] for job_id in job_ids})


def _newer(grant: WatchGrant) -> tuple[int, int]:
    return grant.generation, grant.expires_at


def _not_covered(job_ids: list[str]) -> APIError:
    return APIError(
        403, "forbidden", {"message": "no watch token given is for these jobs", "jobs": job_ids}
    )


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
