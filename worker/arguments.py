"""A job's arguments: what its parameters after `progress` accept, as pydantic reads their
annotations.

From the signature a pydantic model is made once, at registration. Its JSON Schema is what the
worker advertises in the catalog (the gateway checks submissions against it); at each attempt
it converts the submitted JSON to the annotated types before the call, so `seconds: float`
given 10 receives 10.0 and a model parameter receives a model instance.

Each model field is named `p0`, `p1`… with the parameter's name as its alias: a parameter may
then be called anything (`json`, `model_config`, `copy`) without clashing with `BaseModel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, ValidationError, create_model
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError

__all__ = ["Arguments", "InvalidArguments"]

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_MODEL_ERRORS = (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema, PydanticUserError)


class InvalidArguments(ValueError):
    """The arguments a job received do not fit its parameters (the gateway checks them at
    submit; this catches what reached the queue another way, or a job changed since)."""


@dataclass(frozen=True, slots=True)
class Arguments:
    model: type[BaseModel]
    parameters: tuple[tuple[str, str], ...]  # (model field, parameter name)
    schema: dict[str, Any]

    @classmethod
    def of(cls, name: str, function: Callable[..., Any]) -> Arguments:
        """The arguments of the job `name`; TypeError when an annotation cannot be read or has
        no JSON Schema (a job's arguments arrive as JSON)."""
        try:
            signature = inspect.signature(function, eval_str=True)
        except (NameError, SyntaxError) as exc:
            raise TypeError(f"{name}: cannot read its annotations: {exc}") from None
        parameters = list(signature.parameters.values())[1:]
        fields = {
            f"p{index}": _field(parameter)
            for index, parameter in enumerate(parameters)
            if parameter.kind in _KEYWORD_KINDS
        }
        extras = next((p for p in parameters if p.kind is p.VAR_KEYWORD), None)
        try:
            model = create_model(name, __base__=_base(extras), **fields)  # type: ignore[call-overload]
            schema = model.model_json_schema()
        except _MODEL_ERRORS as exc:
            reason = str(exc).splitlines()[0]
            raise TypeError(f"{name}: its parameters have no JSON Schema: {reason}") from None
        names = tuple(
            (field, field_info.alias or field) for field, field_info in model.model_fields.items()
        )
        return cls(model, names, schema)

    def convert(self, given: dict[str, Any]) -> dict[str, Any]:
        """`given` (JSON values) as the keyword arguments of the call, of the annotated types;
        a parameter not given gets its default."""
        try:
            instance = self.model.model_validate(given)
        except ValidationError as exc:
            raise InvalidArguments(_describe(exc)) from None
        values = {name: getattr(instance, field) for field, name in self.parameters}
        return {**values, **(instance.__pydantic_extra__ or {})}


def _field(parameter: inspect.Parameter) -> tuple[Any, Any]:
    annotation = Any if parameter.annotation is parameter.empty else parameter.annotation
    default = ... if parameter.default is parameter.empty else parameter.default
    return Annotated[annotation, Field(alias=parameter.name)], default


def _base(extras: inspect.Parameter | None) -> type[BaseModel]:
    """The model's base: no argument beyond the parameters, unless the job takes `**kwargs`,
    whose annotation (if any) each extra argument must then have."""
    if extras is None:
        return _Closed
    if extras.annotation is extras.empty:
        return _Open
    namespace = {
        "__annotations__": {"__pydantic_extra__": dict[str, extras.annotation]},  # type: ignore[name-defined]
        "model_config": ConfigDict(extra="allow"),
        "__module__": __name__,
    }
    return type("TypedExtras", (BaseModel,), namespace)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def _describe(exc: ValidationError) -> str:
    problems = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, p['loc'])) or 'args'}: {p['msg']}" for p in problems)
