"""Which gateway a client talks to, and with which API key: what the caller gave, else the
environment (`JOBWIRE_URL`, `JOBWIRE_API_KEY`), else the gateway `jobwire up` starts.

These are the client's own settings, read the same way by `Client`, `SyncClient` and the
`jobwire submit` / `watch` commands. The gateway and the worker do not read them (their
settings know the names only so as not to warn about them). This module imports nothing
heavier than `shared.settings`, so the `jobwire` command can name them in its help texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.settings import Settings

__all__ = ["API_KEY_ENV", "DEFAULT_URL", "URL_ENV", "InvalidGatewayURL", "Target"]

URL_ENV = "JOBWIRE_URL"
API_KEY_ENV = "JOBWIRE_API_KEY"


def _default_gateway_url() -> str:
    """Where a gateway started with the default settings listens (`jobwire up`)."""
    defaults = Settings()
    return f"http://{defaults.host}:{defaults.port}"


DEFAULT_URL = _default_gateway_url()


class InvalidGatewayURL(ValueError):
    """A gateway URL that is not `http://` or `https://`, a host and an optional port."""


@dataclass(frozen=True, slots=True)
class Target:
    """Which gateway, and the key to use with it."""

    url: str
    api_key: str | None

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, environ: Mapping[str, str]) -> Target:
        """What was given first, then the environment; an empty value counts as not given."""
        return cls(
            url=checked_url(url or environ.get(URL_ENV) or DEFAULT_URL),
            api_key=api_key or environ.get(API_KEY_ENV) or None,
        )


def checked_url(url: str) -> str:
    """`url` without a trailing slash; raises `InvalidGatewayURL` for anything that is not an
    http(s) URL with a host, before it could fail deep inside the HTTP client."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "://" not in url:
        raise InvalidGatewayURL(
            f"the gateway URL must start with http:// or https://, got {url!r}"
            f" (did you mean http://{url.partition('://')[2] or url}?)"
        )
    try:
        _ = parts.port  # parsing it is the check
    except ValueError:
        raise InvalidGatewayURL(f"the gateway URL has no valid port: {url!r}") from None
    if not parts.hostname:
        raise InvalidGatewayURL(f"the gateway URL names no host: {url!r}")
    return url.rstrip("/")
