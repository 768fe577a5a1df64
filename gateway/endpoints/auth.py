"""Who may do what: API keys to submit, read and cancel jobs; signed watch tokens to follow one.

- An API key (`Authorization: Bearer <key>`) acts on the jobs it submitted. The state hash
  records the submitting key's id (`owner`); another key's job answers 404, exactly like a job
  that does not exist, so no answer tells anyone which jobs exist.
- A watch token, returned at submit, opens one job's events and state until it expires:
  `base64url(JSON [job id, expiry, key id]) "." base64url(HMAC-SHA256)`. EventSource cannot
  send headers, so it is also taken from `?token=`; uvicorn's access log prints query
  strings, so `RedactCredentials` blanks it there. A token dies with the key that issued it.
- Keys are compared by their SHA-256 digests with `hmac.compare_digest`, against every key,
  so the time an answer takes says nothing about how much of a key was right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import HTTPConnection

from gateway.endpoints.errors import APIError
from gateway.endpoints.services import Services
from shared.settings import Settings, SettingsError, parse_api_keys

__all__ = [
    "OWNER",
    "Access",
    "Caller",
    "RedactCredentials",
    "Viewer",
    "WatchGrant",
    "access",
    "install_log_redaction",
    "jobs_of_others",
    "redact_target",
    "require_api_key",
    "require_viewer",
]

# The state-hash field naming the key that submitted the job.
OWNER = "owner"
MAX_CREDENTIAL_CHARS = 1_024
MAX_TOKENS = 100
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,960}\.[A-Za-z0-9_-]{43}")
# Bound into every signature, so a MAC made for anything else never passes as a token.
_SIGNING_CONTEXT = b"jobwire watch token v1\x00"
_SECRET_PARAMETERS = frozenset({"token"})


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

    def owns(self, state: Mapping[str, Any]) -> bool:
        return self.api_key_id is None or state.get(OWNER) == self.api_key_id


@dataclass(frozen=True, slots=True)
class WatchGrant:
    """What a verified watch token allows."""

    job_id: str
    key_id: str
    expires_at: int  # unix seconds


class Access:
    """The configured keys and token secret of one gateway, and the checks made with them."""

    def __init__(
        self,
        keys: Mapping[str, str],
        secret: str,
        ttl_s: float,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = enabled
        self._digests = [(_digest(key), key_id) for key_id, key in keys.items()]
        self._key_ids = frozenset(keys)
        self._secret = secret.encode()
        self._ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """Refuses (SettingsError) a gateway that checks keys but has none, or no secret."""
        keys = parse_api_keys(settings.api_keys)
        if settings.auth_enabled:
            missing = [
                name
                for name, value in (
                    ("JOBWIRE_API_KEYS", keys),
                    ("JOBWIRE_TOKEN_SECRET", settings.token_secret),
                )
                if not value
            ]
            if missing:
                raise SettingsError(
                    f"authentication is on but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} empty: give clients API keys "
                    "(JOBWIRE_API_KEYS) and a token secret (JOBWIRE_TOKEN_SECRET), or set "
                    "JOBWIRE_AUTH_DISABLED=true for a gateway nobody else can reach"
                )
        return cls(keys, settings.token_secret, settings.token_ttl_s, enabled=settings.auth_enabled)

    def key_id(self, credential: str) -> str | None:
        """The id of the API key `credential`, or None if it is not one."""
        digest = _digest(credential)
        found = None
        for known, key_id in self._digests:  # no early exit: every key costs the same
            if hmac.compare_digest(known, digest):
                found = key_id
        return found

    def issue(self, job_id: str, key_id: str) -> str | None:
        """A watch token for `job_id` on behalf of `key_id`; None when auth is disabled."""
        if not self.enabled:
            return None
        return self.sign(job_id, key_id, int(self._clock() + self._ttl_s))

    def sign(self, job_id: str, key_id: str, expires_at: int) -> str:
        """A token for `job_id`, valid until `expires_at` (unix seconds)."""
        body = _b64(orjson.dumps([job_id, expires_at, key_id]))
        return f"{body}.{self._signature(body)}"

    def verify(self, token: str) -> WatchGrant:
        """The grant of a genuine, unexpired token; 401 for anything else."""
        if not _TOKEN_SHAPE.fullmatch(token):
            raise _unauthorized("the watch token is not valid")
        body, signature = token.split(".")
        if not hmac.compare_digest(self._signature(body).encode(), signature.encode()):
            raise _unauthorized("the watch token is not valid")
        # Signed by this gateway, so its content is what `sign` wrote.
        job_id, expires_at, key_id = orjson.loads(_unb64(body))
        if key_id not in self._key_ids:
            raise _unauthorized("the key that issued the watch token is no longer accepted")
        if expires_at <= self._clock():
            raise _unauthorized("the watch token has expired")
        return WatchGrant(job_id, key_id, expires_at)

    def looks_like_token(self, credential: str) -> bool:
        return _TOKEN_SHAPE.fullmatch(credential) is not None

    def _signature(self, body: str) -> str:
        return _b64(hmac.digest(self._secret, _SIGNING_CONTEXT + body.encode(), "sha256"))


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
        raise _unauthorized("send an API key: Authorization: Bearer <key>", challenge_only=True)
    key_id = gate.key_id(credential)
    if key_id is None:
        raise _unauthorized("the API key is not valid")
    return Caller(key_id)


def require_viewer(connection: HTTPConnection, job_ids: Sequence[str]) -> Viewer:
    """Who may see `job_ids`: an API key (checked for ownership later, `jobs_of_others`), or
    watch tokens covering every one of them (header or `?token=`, repeated); 401 without valid
    credentials, 403 when the tokens leave a job out."""
    gate = access(connection)
    if not gate.enabled:
        return Viewer(frozenset())
    credential = _bearer(connection)
    tokens = connection.query_params.getlist("token")
    if credential is None and not tokens:
        raise _unauthorized(
            "send an API key or the job's watch token: Authorization: Bearer <key or token>, "
            "or ?token=<token>",
            challenge_only=True,
        )
    if credential is not None:
        key_id = gate.key_id(credential)
        if key_id is not None:
            return Viewer(frozenset({key_id}), api_key_id=key_id)
        if not gate.looks_like_token(credential):
            raise _unauthorized("the API key is not valid")
        tokens = [credential, *tokens]
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


async def jobs_of_others(svc: Services, viewer: Viewer, job_ids: Sequence[str]) -> list[str]:
    """The jobs in `job_ids` the viewer's API key did not submit (or that do not exist)."""
    if viewer.api_key_id is None:
        return []
    async with svc.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(svc.keys.state(job_id), OWNER)
        owners: list[bytes | None] = await pipe.execute()
    mine = viewer.api_key_id.encode()
    return [job_id for job_id, owner in zip(job_ids, owners, strict=True) if owner != mine]


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
        raise _unauthorized("expected the header Authorization: Bearer <credential>")
    return credential


def _unauthorized(detail: str, *, challenge_only: bool = False) -> APIError:
    # RFC 6750: a request without credentials gets the bare challenge, a bad one the error.
    challenge = 'Bearer realm="jobwire"'
    if not challenge_only:
        challenge += ', error="invalid_token"'
    return APIError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "replace")).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RedactCredentials(logging.Filter):
    """Blanks watch tokens in the request targets a log record carries (uvicorn's access log
    prints each request's path with its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, str) and "?" in arg for arg in args):
            record.args = tuple(redact_target(arg) if isinstance(arg, str) else arg for arg in args)
        return True


def redact_target(target: str) -> str:
    """`target` with the value of every `token` query parameter replaced by `[redacted]`."""
    path, separator, query = target.partition("?")
    if not separator:
        return target
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        # Compared as the app reads names (percent-decoded), so `tok%65n=` is caught too.
        if equals and unquote_plus(name).strip().lower() in _SECRET_PARAMETERS:
            pair = f"{name}=[redacted]"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


_REDACTION = RedactCredentials()


def install_log_redaction() -> None:
    """Keeps tokens out of uvicorn's access log (idempotent: one filter however many apps)."""
    logging.getLogger("uvicorn.access").addFilter(_REDACTION)
