"""Opaque cursors for keyset pagination over (created_at, id)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass

from turbocat.domain.errors import ValidationFailed

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page, in the list's sort order."""

    sort_value: str
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.sort_value, str(self.id)], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            sort_value, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
            return cls(str(sort_value), uuid.UUID(ident))
        except (ValueError, TypeError) as exc:
            raise ValidationFailed.field(("query", "cursor"), "cursor is not valid") from exc

    @classmethod
    def after(cls, created_at: dt.datetime, ident: uuid.UUID) -> Cursor:
        return cls(created_at.isoformat(), ident)

    def created_at(self) -> dt.datetime:
        try:
            return dt.datetime.fromisoformat(self.sort_value)
        except ValueError as exc:
            raise ValidationFailed.field(("query", "cursor"), "cursor is not valid") from exc
