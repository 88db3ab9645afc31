"""Checking that user-supplied JSON Schemas are themselves valid, and validating data by them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import exceptions, validators

from turbocat.domain.errors import FieldError, ValidationFailed

MAX_ERRORS = 20


def check_json_schema(schema: Mapping[str, Any], path: tuple[str | int, ...]) -> None:
    """Refuse a schema that its own metaschema (default draft 2020-12) rejects."""
    if not isinstance(schema, Mapping):
        raise ValidationFailed.field(path, "must be a JSON Schema object")
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(dict(schema))
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValidationFailed.field(
            (*path, *exc.path),
            f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}",
        ) from None


def validate_instance(
    instance: Any, schema: Mapping[str, Any], path: tuple[str | int, ...]
) -> None:
    """Refuse ``instance`` unless it satisfies ``schema``; each error names its field."""
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(instance), key=lambda e: list(e.path))[:MAX_ERRORS]
    if errors:
        raise ValidationFailed(
            "; ".join(e.message for e in errors[:3]),
            [FieldError((*path, *e.path), e.message, str(e.validator)) for e in errors],
        )
