"""Column helpers shared by the table modules (foreign keys, owners, optional tenants).

Foreign keys follow seed 001: owned children CASCADE, version parents and optional references
SET NULL, every reference ``ON UPDATE CASCADE``. The owner user of a tenant-owned row is
``created_by_id`` with ``ON DELETE SET NULL``: the organization owns the row (SPEC section 9),
so removing a member must not delete the organization's workflows.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import ForeignKey, Index, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from turbocat.db.types import GUID

OnDelete = Literal["CASCADE", "SET NULL", "RESTRICT"]


def fk(target: str, ondelete: OnDelete) -> ForeignKey:
    return ForeignKey(target, ondelete=ondelete, onupdate="CASCADE")


def owner_column() -> Mapped[uuid.UUID | None]:
    """The user who created a row (kept for audit and "mine" filters; never the tenant key)."""
    return mapped_column(GUID, fk("users.id", "SET NULL"), index=True, sort_order=-80)


class CreatedByMixin:
    @declared_attr
    def created_by_id(cls) -> Mapped[uuid.UUID | None]:
        return owner_column()


class OptionalTenantMixin:
    """Like ``TenantMixin``, but NULL marks a built-in row shared by every tenant."""

    @declared_attr
    def organization_id(cls) -> Mapped[uuid.UUID | None]:
        return mapped_column(
            GUID,
            fk("organizations.id", "CASCADE"),
            index=True,
            sort_order=-90,
        )


def partial_index(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index over the rows matching ``where``, on both databases (SQLite has them too)."""
    predicate = text(where)
    return Index(name, *columns, unique=unique, postgresql_where=predicate, sqlite_where=predicate)


# Descending single-column indexes of the seeds are plain B-trees here: PostgreSQL scans them
# backwards for "recent first", and plain keys compare cleanly in the drift test.
def gin_index(table: str, column: str) -> Index:
    """A GIN index over a TEXT[] column, created on PostgreSQL only (JSON arrays on SQLite)."""
    return Index(f"ix_{table}_{column}_gin", column, postgresql_using="gin").ddl_if(
        dialect="postgresql"
    )


__all__ = [
    "CreatedByMixin",
    "OptionalTenantMixin",
    "fk",
    "gin_index",
    "owner_column",
    "partial_index",
]


def fts_index(table: str) -> Index:
    """PostgreSQL full-text GIN index over name and description (migration 0002); it must be
    the expression ``dialects.postgres.tsvector`` builds, so that searches use it."""
    return Index(
        f"ix_{table}_fts",
        text(
            "to_tsvector('english'::regconfig, "
            "(coalesce(name, '') || ' ' || coalesce(description, '')))"
        ),
        postgresql_using="gin",
    ).ddl_if(dialect="postgresql")
