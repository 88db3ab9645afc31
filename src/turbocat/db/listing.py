"""List queries shared by every resource: keyset pages, tag filters and text search."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from turbocat.db import dialects
from turbocat.domain.pagination import Cursor

S = TypeVar("S", bound=Select[Any])
SortKey = Literal["created_at", "-created_at", "name", "-name"]


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: Cursor | None = None
    sort: SortKey = "-created_at"


def apply_page(
    stmt: S,
    request: PageRequest,
    *,
    id_col: InstrumentedAttribute[uuid.UUID],
    created_col: InstrumentedAttribute[dt.datetime],
    name_col: InstrumentedAttribute[str] | None = None,
) -> S:
    """Order by the sort key (ties broken by id) and start after the cursor; fetch limit+1."""
    descending = request.sort.startswith("-")
    field = request.sort.lstrip("-")
    sort_col: Any = created_col if field == "created_at" or name_col is None else name_col
    if request.cursor is not None:
        value: Any = (
            request.cursor.created_at() if sort_col is created_col else request.cursor.sort_value
        )
        after = sort_col < value if descending else sort_col > value
        tie = id_col < request.cursor.id if descending else id_col > request.cursor.id
        stmt = stmt.where(or_(after, and_(sort_col == value, tie)))
    order = (sort_col.desc(), id_col.desc()) if descending else (sort_col.asc(), id_col.asc())
    return stmt.order_by(*order).limit(request.limit + 1)


def next_cursor(
    rows: Sequence[Any], request: PageRequest, *, sort_attr: str | None = None
) -> str | None:
    """The cursor after the last row of a page (None on the last page)."""
    if len(rows) <= request.limit:
        return None
    last = rows[request.limit - 1]
    field = sort_attr or request.sort.lstrip("-")
    value = getattr(last, field)
    sort_value = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return Cursor(sort_value, last.id).encode()


def tags_any(dialect: str, column: Any, tags: Sequence[str]) -> ColumnElement[bool]:
    """Rows whose tag array shares at least one tag with ``tags``."""
    if dialect == "postgresql":
        return dialects.postgres.array_overlaps(column, tags)
    return dialects.sqlite.json_array_overlaps(column, tags)


def text_search(dialect: str, columns: Sequence[Any], query: str) -> ColumnElement[bool]:
    """Full-text match of ``query`` against the columns (every word must match)."""
    if dialect == "postgresql":
        return dialects.postgres.full_text_match(columns, query)
    return dialects.sqlite.words_match(columns, query)
