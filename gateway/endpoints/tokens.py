"""The gateway's credentials: its API keys, and the signed watch tokens it issues and verifies.

- An API key is known by its SHA-256 digest only, compared with `hmac.compare_digest` against
  every key, so the time an answer takes says nothing about how much of a key was right.
- A watch token opens one job's events and state until it expires:
  `base64url(JSON [job id, expiry, key id, incarnation, generation]) "." base64url(HMAC-SHA256)`.
  A token dies with the key that issued it. What it opens is checked where the job is read
  (`WatchGrant.binding` against the job's `shared.state.TokenBinding`): only the job that key
  submitted under that id, not a later one with the same id, and only until the job's tokens
  are revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from gateway.endpoints.errors import APIError
from shared.settings import Settings, SettingsError, parse_api_keys
from shared.state import TokenBinding

__all__ = ["Access", "WatchGrant", "unauthorized"]

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,960}\.[A-Za-z0-9_-]{43}")
# Bound into every signature, so a MAC made for anything else never passes as a token. v1
# tokens named no incarnation: they opened any job of their id, so they are no longer valid.
_SIGNING_CONTEXT = b"jobwire watch token v2\x00"


@dataclass(frozen=True, slots=True)
class WatchGrant:
    """What a verified watch token allows."""

    job_id: str
    key_id: str
    expires_at: int  # unix seconds
    incarnation: str
    generation: int

    @property
    def binding(self) -> TokenBinding:
        """What the job's state must record for this token to open it."""
        return TokenBinding(self.key_id, self.incarnation, self.generation)


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
        keys = parse_api_keys(settings.api_keys, id_secret=settings.token_secret)
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

    def issue(
        self, job_id: str, binding: TokenBinding, *, not_after: float | None = None
    ) -> str | None:
        """A watch token for the job `binding` describes, for the token TTL but not past
        `not_after` (unix seconds); None when auth is disabled or the job has no owner."""
        if not self.enabled or binding.owner is None:
            return None
        expires_at = self._clock() + self._ttl_s
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        return self.sign(job_id, binding, int(expires_at))

    def sign(self, job_id: str, binding: TokenBinding, expires_at: int) -> str:
        """A token for `job_id` as `binding` describes it, valid until `expires_at`."""
        owner, incarnation, generation = binding
        body = _b64(orjson.dumps([job_id, expires_at, owner, incarnation, generation]))
        return f"{body}.{self._signature(body)}"

    def verify(self, token: str) -> WatchGrant:
        """The grant of a genuine, unexpired token; 401 for anything else."""
        if not _TOKEN_SHAPE.fullmatch(token):
            raise unauthorized("the watch token is not valid")
        body, signature = token.split(".")
        if not hmac.compare_digest(self._signature(body).encode(), signature.encode()):
            raise unauthorized("the watch token is not valid")
        # Signed by this gateway, so its content is what `sign` wrote.
        job_id, expires_at, key_id, incarnation, generation = orjson.loads(_unb64(body))
        if key_id not in self._key_ids:
            raise unauthorized("the key that issued the watch token is no longer accepted")
        if expires_at <= self._clock():
            raise unauthorized("the watch token has expired")
        return WatchGrant(job_id, key_id, expires_at, incarnation, generation)

    def looks_like_token(self, credential: str) -> bool:
        return _TOKEN_SHAPE.fullmatch(credential) is not None

    def _signature(self, body: str) -> str:
        return _b64(hmac.digest(self._secret, _SIGNING_CONTEXT + body.encode(), "sha256"))


def unauthorized(detail: str, *, challenge_only: bool = False) -> APIError:
    """The 401 for missing or bad credentials."""
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
