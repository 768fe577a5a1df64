"""The `key=value` arguments of `jobwire submit`, read by the job's JSON Schema (from
`GET /catalog`).

Where the schema says a string, the text stays as written (`text=10` is "10"); a number, a
boolean or an object, JSON (`seconds=10`, `flag=true`); an array, a JSON array or
comma-separated items, each read by the items' schema (`tags=a,b`). Where it says nothing (no
schema, an unannotated parameter, the extra arguments of `**kwargs`): JSON when it parses, else
the text. A value that fits none of the types is sent as it reads: the gateway's 422 then names
the argument and what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["UsageError", "read_arguments", "split_assignments"]

Schema = Mapping[str, Any]

_NOT_JSON = object()
_UNIONS = ("anyOf", "oneOf", "allOf")


class UsageError(ValueError):
    """A command line that cannot be run as written."""


def split_assignments(items: Sequence[str]) -> dict[str, str]:
    """`key=value` items as {key: text}; UsageError for an item of another shape."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"arguments are key=value, got {item!r}")
        if key in pairs:
            raise UsageError(f"argument {key!r} given twice")
        pairs[key] = raw
    return pairs


def read_arguments(pairs: Mapping[str, str], schema: Schema | None = None) -> dict[str, Any]:
    """Each text of `pairs` as the value its property of the args `schema` asks for."""
    root: Schema = schema or {}
    properties = root.get("properties", {})
    extra = root.get("additionalProperties")
    return {
        key: _read(raw, properties.get(key, extra if isinstance(extra, Mapping) else None), root)
        for key, raw in pairs.items()
    }


def _read(raw: str, schema: Schema | None, root: Schema) -> Any:
    types = _types(schema, root)
    parsed = _json(raw)
    if "array" in types and (parsed is _NOT_JSON or _json_type(parsed) not in types):
        items = _items(schema, root)
        return [_read(item.strip(), items, root) for item in raw.split(",")] if raw else []
    if parsed is _NOT_JSON:
        return raw
    if "string" in types and _json_type(parsed) not in types - {"string"}:
        return raw  # as written, quotes included: `10` and `"a"` are text to a string
    return parsed


def _types(schema: Schema | None, root: Schema) -> set[str]:
    """The JSON types `schema` accepts (none: it does not say)."""
    schema = _resolved(schema, root)
    if schema is None:
        return set()
    declared = schema.get("type")
    found = {declared} if isinstance(declared, str) else set(declared or ())
    values = [*schema.get("enum", ()), *([schema["const"]] if "const" in schema else [])]
    found |= {_json_type(value) for value in values}
    for key in _UNIONS:
        for branch in schema.get(key, ()):
            found |= _types(branch, root)
    if "integer" in found:
        found.add("number")  # 10.0 is an integer to JSON Schema; either parses as a number
    return found


def _items(schema: Schema | None, root: Schema) -> Schema | None:
    """The schema of an array's items, in `schema` or the branch of it that is an array."""
    schema = _resolved(schema, root)
    if schema is None:
        return None
    if "items" in schema and isinstance(schema["items"], Mapping):
        items: Schema = schema["items"]
        return items
    for key in _UNIONS:
        for branch in schema.get(key, ()):
            if "array" in _types(branch, root):
                return _items(branch, root)
    return None


def _resolved(schema: Schema | None, root: Schema) -> Schema | None:
    """`schema`, or what its `$ref` names (only the local `#/$defs/…` pydantic writes)."""
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        name = schema["$ref"].removeprefix("#/$defs/")
        schema = root.get("$defs", {}).get(name)
    return schema if isinstance(schema, Mapping) else None


def _json(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse)
    except ValueError:
        return _NOT_JSON


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a gateway accepts")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
