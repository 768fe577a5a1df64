"""Reading `JOBWIRE_*` environment variables: the prefix, each value converted to its
setting's type, and a warning for a prefixed name that is no setting.

A typo such as `JOBWIRE_PROT` would otherwise leave the default in place without a word.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CLIENT_ENV_NAMES",
    "ENV_PREFIX",
    "SettingsError",
    "UnknownSettingWarning",
    "env_name",
    "read_env",
]

ENV_PREFIX = "JOBWIRE_"
# Read by `jobwire submit` / `jobwire watch`, not by the gateway or the worker: not unknown.
CLIENT_ENV_NAMES = frozenset({"JOBWIRE_URL", "JOBWIRE_API_KEY"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A `JOBWIRE_*` variable holds a value its setting cannot take."""


class UnknownSettingWarning(UserWarning):
    """A `JOBWIRE_*` variable names no setting (most often a typo)."""


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def read_env(environ: Mapping[str, str], types: Mapping[str, object]) -> dict[str, Any]:
    """Setting -> value, for each `JOBWIRE_*` variable naming a setting in `types` (name ->
    type, or its name as a string annotation); other prefixed names are warned about."""
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV_NAMES:
            continue
        setting = name[len(ENV_PREFIX) :].lower()
        if setting not in types:
            known = ", ".join(env_name(known) for known in types)
            # stacklevel 3: the warning points at whoever asked for the settings.
            warnings.warn(
                f"{name} is not a Jobwire setting; known: {known}",
                UnknownSettingWarning,
                stacklevel=3,
            )
            continue
        values[setting] = _convert(name, raw, types[setting])
    return values


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(raw)
    return value in _TRUE


def _convert(name: str, raw: str, type_name: object) -> Any:
    converters: dict[object, Callable[[str], Any]] = {
        "str": str,
        "int": int,
        "float": float,
        "bool": _bool,
        str: str,
        int: int,
        float: float,
        bool: _bool,
    }
    convert = converters[type_name]
    try:
        value = convert(raw.strip())
    except ValueError:
        expected = "true or false" if convert is _bool else f"a valid {convert.__name__}"
        raise SettingsError(f"{name}={raw!r} is not {expected}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    return value
