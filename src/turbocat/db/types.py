"""One type map that works on PostgreSQL and SQLite (SPEC section 3).

- UUID: native ``uuid`` on PostgreSQL, ``CHAR(32)`` on SQLite.
- JSON: ``JSONB`` on PostgreSQL, ``JSON`` on SQLite.
- string arrays (tags, scopes, depends_on): ``TEXT[]`` on PostgreSQL, ``JSON`` on SQLite.
- timestamps: ``timestamptz`` on PostgreSQL; on SQLite naive UTC text, made aware on read.
- enumerations: ``VARCHAR`` with a CHECK constraint built from the domain enum.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import JSON, DateTime, Dialect, Enum, Text, TypeDecorator, Uuid
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

GUID = Uuid(as_uuid=True)
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
StrList = JSON().with_variant(ARRAY(Text()), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on both databases; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def enum_type(enum_cls: type[StrEnum], name: str) -> Enum:
    """VARCHAR + CHECK (never a PostgreSQL enum type), storing the enum's values."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(16, max(len(m.value) for m in enum_cls)),
        validate_strings=True,
        values_callable=lambda cls: [m.value for m in cls],
    )


def utc_now() -> dt.datetime:
    """Row timestamps default to the database layer's clock (services pass ``now`` explicitly)."""
    return dt.datetime.now(dt.UTC)


__all__ = ["GUID", "JSONDoc", "StrList", "UTCDateTime", "enum_type", "utc_now"]
