"""Checking a submission's `args` against the JSON Schema its job advertises in the catalog.

The gateway knows a job only as JSON (it never imports worker code), so it validates with
jsonschema, Draft 2020-12, whatever produced the schema. Each distinct schema is checked and
compiled once and kept (`_validator`); a submit then costs one validation (docs/architecture.md
has the figures). The answer has one `{"loc": ["args", name, ...], "msg": ...}` per bad field,
ordered by `loc`: a wrong type, a value out of bounds, an argument the job does not take, a
required one missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, TypedDict

import orjson
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator

from shared.catalog import JobSpec, args_schema

__all__ = ["MAX_MESSAGE_CHARS", "Problem", "check_args", "location_order"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300
# Distinct schemas kept compiled: every job of every worker release still running, with room.
_MAX_VALIDATORS = 512

Location = tuple[str | int, ...]


class Problem(TypedDict):
    loc: list[str | int]
    msg: str


def check_args(spec: JobSpec, args: dict[str, Any]) -> list[Problem]:
    """What is wrong with `args` for the job of `spec`, one entry per bad field (none: fine)."""
    validator = _compiled(args_schema(spec))
    if validator is None:
        # A schema no validator can use is the worker's fault: check the names it lists.
        names_only = JobSpec(
            name=spec["name"],
            params=spec["params"],
            required=spec["required"],
            accepts_any=spec["accepts_any"],
            doc=spec["doc"],
        )
        validator = _compiled(args_schema(names_only))
        assert validator is not None
    found: dict[Location, str] = {}
    for error in validator.iter_errors(args):
        for location, message in _located(best_match([error])):
            found.setdefault(location, message)
    return [
        Problem(loc=["args", *location], msg=message)
        for location, message in sorted(found.items(), key=lambda item: location_order(item[0]))
    ]


def location_order(location: Location | list[str | int]) -> list[str]:
    return [str(part) for part in location]


def _compiled(schema: dict[str, Any]) -> Validator | None:
    return _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


@lru_cache(maxsize=_MAX_VALIDATORS)
def _validator(schema: bytes) -> Validator | None:
    decoded = orjson.loads(schema)
    try:
        Draft202012Validator.check_schema(decoded)
    except SchemaError as exc:
        logger.warning("a job's advertised args schema is not valid JSON Schema: %s", exc.message)
        return None
    return Draft202012Validator(decoded, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _located(error: ValidationError) -> Iterator[tuple[Location, str]]:
    """`error` as (where, what) pairs: a missing or unexpected property is named at its own
    place, not at the object holding it."""
    path = tuple(error.absolute_path)
    instance = error.instance
    required = error.validator_value
    if error.validator == "required" and isinstance(instance, dict) and isinstance(required, list):
        for name in required:
            if name not in instance:
                yield (*path, name), "required, but missing"
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        taken = ", ".join(known) or "none"
        what = "unknown argument: this job takes" if not path else "unknown field: it has"
        for name in instance:
            if name not in known:
                yield (*path, name), f"{what} {taken}"
    else:
        yield path, _shortened(error.message)


def _shortened(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
