"""Version lineages shared by agents and workflows (SPEC section 9).

Versions are rows: the first has ``parent_id`` NULL, every later one points at that first row
(seed 001's history query ``id = $1 OR parent_id = $1``), with an integer ``version``.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import aliased


class Versioned(Protocol):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    version: int


def lineage_id(row: Versioned) -> uuid.UUID:
    return row.parent_id or row.id


def lineage_of(model: Any) -> ColumnElement[uuid.UUID]:
    return func.coalesce(model.parent_id, model.id)


def is_latest(model: Any) -> ColumnElement[bool]:
    """No newer, non-deleted version exists in the row's lineage."""
    newer = aliased(model)
    return ~exists(
        select(newer.id).where(
            and_(
                lineage_of(newer) == lineage_of(model),
                newer.version > model.version,
                newer.deleted_at.is_(None),
            )
        )
    )


def history(model: Any, root: uuid.UUID) -> Any:
    """Every version of a lineage, newest first (deleted ones included, for history)."""
    return (
        select(model)
        .where((model.id == root) | (model.parent_id == root))
        .order_by(model.version.desc())
        .execution_options(include_deleted=True)
    )
