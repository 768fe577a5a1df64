"""API keys as `JOBWIRE_API_KEYS` lists them: comma-separated, each `key` or `name:key`.

Logs, limits, watch tokens, a job's `owner` and the `reset` events that carry its state name a
key by its id, never by the key itself: its name, else `key-` and 32 hex digits of an
HMAC-SHA256 of the key under `JOBWIRE_TOKEN_SECRET`.

Why keyed: the id is seen by whoever holds a watch token (the token is signed, not encrypted)
or a `reset` event, and by anyone who can read Redis. A plain hash of the key, as the id once
was, lets them test guesses of the key offline, as fast as they can hash; a keyed one says
nothing about the key to anyone without the secret, and whoever has the secret can already
sign tokens. Only the gateway needs ids (workers never see a key), and a gateway with access
control on refuses to start without the secret. The price: changing the secret changes the ids
of unnamed keys, so the jobs they submitted before are no longer theirs — a key that must keep
its jobs across a change of secret should have a name.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from shared.environ import ENV_PREFIX, SettingsError

__all__ = ["MIN_API_KEY_CHARS", "parse_api_keys", "unnamed_key_id"]

MIN_API_KEY_CHARS = 16
_KEY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space
# Bound into every id's MAC, so no MAC made with the same secret for anything else (a watch
# token's signature) is ever an id, nor an id a signature.
_ID_CONTEXT = b"jobwire api key id v1\x00"
_ID_HEX_DIGITS = 32


def parse_api_keys(raw: str, *, id_secret: str) -> dict[str, str]:
    """Key id -> key, from JOBWIRE_API_KEYS; unnamed keys' ids are keyed with `id_secret`
    (JOBWIRE_TOKEN_SECRET)."""
    keys: dict[str, str] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, key = _name_and_key(entry, id_secret)
        if name in keys or key in keys.values():
            raise SettingsError(f"{ENV_PREFIX}API_KEYS: {name!r} or its key is given twice")
        keys[name] = key
    return keys


def unnamed_key_id(key: str, id_secret: str) -> str:
    """The id of a key given without a name."""
    mac = hmac.new(id_secret.encode(), _ID_CONTEXT + key.encode(), hashlib.sha256)
    return "key-" + mac.hexdigest()[:_ID_HEX_DIGITS]


def _name_and_key(entry: str, id_secret: str) -> tuple[str, str]:
    name, separator, key = entry.partition(":")
    if not separator:
        name, key = unnamed_key_id(entry, id_secret), entry
    elif not _KEY_NAME.fullmatch(name):
        raise SettingsError(
            f"{ENV_PREFIX}API_KEYS: the name {name[:40]!r} must be 1-64 letters, digits, "
            "'_', '-' or '.' (a key containing ':' needs a name: name:key)"
        )
    if len(key) < MIN_API_KEY_CHARS or not _KEY_CHARS.fullmatch(key):
        raise SettingsError(
            f"{ENV_PREFIX}API_KEYS: the key named {name!r} must be at least "
            f"{MIN_API_KEY_CHARS} printable characters, without spaces or commas"
        )
    return name, key
