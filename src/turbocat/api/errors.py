"""Domain errors and framework errors -> RFC 9457 problem+json responses.

``HTTPException`` is never raised below ``api/``; services raise ``TurbocatError`` subclasses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from turbocat.db.engine import is_disconnect
from turbocat.domain import errors

log = logging.getLogger("turbocat.api")

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[errors.TurbocatError], int]] = [
    (errors.ValidationFailed, 422),
    (errors.NotFound, 404),
    (errors.InvalidTransition, 409),
    (errors.Conflict, 409),
    (errors.AuthenticationFailed, 401),
    (errors.PermissionDenied, 403),
    (errors.QuotaExceeded, 403),
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
    (errors.FeatureDisabled, 403),
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.SignatureRejected, 401),
]


def status_for(exc: errors.TurbocatError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    instance: str | None = None,
    errors_: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:turbocat:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if errors_:
        body["errors"] = list(errors_)
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: Sequence[str | int], message: str, code: str) -> dict[str, Any]:
    return {
        "field": ".".join(str(p) for p in loc),
        "loc": list(loc),
        "message": message,
        "code": code,
    }


async def _turbocat_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.TurbocatError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    field_errors: list[dict[str, Any]] = []
    if isinstance(exc, errors.ValidationFailed):
        field_errors = [_field(e.path, e.message, e.code) for e in exc.errors]
    if isinstance(exc, errors.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="turbocat"'
    if isinstance(exc, errors.RateLimited | errors.Unavailable):
        headers["Retry-After"] = str(exc.retry_after_seconds)
        extra["retry_after"] = exc.retry_after_seconds
    if isinstance(exc, errors.MissingScope):
        extra["missing_scope"] = exc.scope
    if isinstance(exc, errors.QuotaExceeded):
        extra.update(limit=exc.limit, plan=exc.plan, resets_at=exc.resets_at)
    return problem(
        status,
        exc.title,
        exc.detail,
        code=exc.code,
        instance=request.url.path,
        errors_=field_errors,
        headers=headers,
        **extra,
    )


def _message(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        bad = next(e for e in raw if e.get("type") == "json_invalid")
        return problem(
            400,
            "Malformed JSON",
            f"the request body is not valid JSON: {bad.get('ctx', {}).get('error', 'parse error')}",
            code="malformed_json",
            instance=request.url.path,
        )
    fields = [
        _field(tuple(e.get("loc", ())), _message(e), str(e.get("type", "invalid"))) for e in raw
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return problem(
        422,
        "Validation failed",
        summary or "the request is not valid",
        code="validation_failed",
        instance=request.url.path,
        errors_=fields,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return problem(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        str(exc.detail),
        code=code,
        instance=request.url.path,
        headers=dict(exc.headers or {}),
    )


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Reached only when a race beat a service's own checks; the transaction was rolled back.
    log.warning("integrity error on %s: %s", request.url.path, exc)
    return problem(
        409,
        "Conflict",
        "the change conflicts with existing data (a concurrent request may have made it)",
        code="conflict",
        instance=request.url.path,
    )


DATABASE_RETRY_AFTER_SECONDS = 2


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A lost or refused database connection (a restart, a failover) is the server's temporary
    # state, not a bug: 503 with Retry-After. Any other database error stays a 500.
    if not is_disconnect(exc):
        raise exc
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem(
        503,
        "Database unavailable",
        "the database cannot be reached right now; retry the request shortly",
        code="database_unavailable",
        instance=request.url.path,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        retry_after=DATABASE_RETRY_AFTER_SECONDS,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500,
        "Internal server error",
        "an unexpected error occurred; it has been logged",
        code="internal_error",
        instance=request.url.path,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.TurbocatError, _turbocat_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)  # refused before any DBAPI call
    app.add_exception_handler(Exception, _unexpected)
