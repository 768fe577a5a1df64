"""API keys as `JOBWIRE_API_KEYS` lists them: comma-separated, each `key` or `name:key`.

Logs and limits name a key by its id, never by the key itself: its name, else `key-` and a
short hash of it.
"""

from __future__ import annotations

import hashlib
import re

from shared.environ import ENV_PREFIX, SettingsError

__all__ = ["MIN_API_KEY_CHARS", "parse_api_keys"]

MIN_API_KEY_CHARS = 16
_KEY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space


def parse_api_keys(raw: str) -> dict[str, str]:
    """Key id -> key, from JOBWIRE_API_KEYS."""
    keys: dict[str, str] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, key = _name_and_key(entry)
        if name in keys or key in keys.values():
            raise SettingsError(f"{ENV_PREFIX}API_KEYS: {name!r} or its key is given twice")
        keys[name] = key
    return keys


def _name_and_key(entry: str) -> tuple[str, str]:
    name, separator, key = entry.partition(":")
    if not separator:
        name, key = "key-" + hashlib.sha256(entry.encode()).hexdigest()[:8], entry
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
