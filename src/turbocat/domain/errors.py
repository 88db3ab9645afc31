"""The one error root and its typed subclasses.

Services raise these; ``api/errors.py`` maps them to RFC 9457 problem responses and the CLI
prints them. Nothing below ``api/`` knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field; ``path`` locates it, e.g. ``("body", "email")``."""

    path: tuple[str | int, ...]
    message: str
    code: str = "invalid"


class TurbocatError(Exception):
    """Root of every error turbocat raises on purpose."""

    title = "Error"
    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationFailed(TurbocatError):
    title = "Validation failed"
    code = "validation_failed"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)

    @classmethod
    def field(
        cls, path: Sequence[str | int], message: str, code: str = "invalid"
    ) -> ValidationFailed:
        return cls(message, [FieldError(tuple(path), message, code)])


class NotFound(TurbocatError):
    title = "Not found"
    code = "not_found"

    def __init__(self, resource: str, ident: object | None = None) -> None:
        detail = f"{resource} not found" if ident is None else f"{resource} {ident} not found"
        super().__init__(detail)
        self.resource = resource


class Conflict(TurbocatError):
    title = "Conflict"
    code = "conflict"


class InvalidTransition(Conflict):
    title = "Invalid transition"
    code = "invalid_transition"

    def __init__(self, resource: str, current: str, target: str) -> None:
        super().__init__(f"{resource} cannot go from {current!r} to {target!r}")
        self.current = current
        self.target = target


class AuthenticationFailed(TurbocatError):
    title = "Authentication required"
    code = "unauthenticated"


class PermissionDenied(TurbocatError):
    title = "Forbidden"
    code = "forbidden"


class MissingScope(PermissionDenied):
    code = "missing_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the scope {scope!r}")
        self.scope = scope


class QuotaExceeded(TurbocatError):
    title = "Quota exceeded"
    code = "quota_exceeded"

    def __init__(
        self, detail: str, *, limit: str, plan: str | None = None, resets_at: str | None = None
    ) -> None:
        super().__init__(detail)
        self.limit = limit
        self.plan = plan
        self.resets_at = resets_at
        """For a monthly quota: when the next period starts (ISO 8601, UTC)."""


class RateLimited(TurbocatError):
    title = "Too many requests"
    code = "rate_limited"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = max(1, retry_after_seconds)


class Unavailable(TurbocatError):
    """The resource exists but serves nothing now (e.g. a deployment in maintenance)."""

    title = "Service unavailable"
    code = "unavailable"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = max(1, retry_after_seconds)


class FeatureDisabled(TurbocatError):
    title = "Disabled"
    code = "disabled"


class IdempotencyMismatch(Conflict):
    """An idempotency key (or webhook delivery id) reused for a different request."""

    title = "Idempotency key reused"
    code = "idempotency_key_reused"


class PayloadTooLarge(TurbocatError):
    title = "Payload too large"
    code = "payload_too_large"


class UnsupportedMediaType(TurbocatError):
    title = "Unsupported media type"
    code = "unsupported_media_type"


class SignatureRejected(TurbocatError):
    """A signed request (webhook) whose signature is missing, wrong, stale or replayed."""

    title = "Signature rejected"
    code = "invalid_signature"
