"""Full-text search indexes on workflows, agents and templates (PostgreSQL only).

Each index is built on the exact expression ``turbocat.db.dialects.postgres.tsvector`` emits,
so text search in list queries is served by it. SQLite searches words with LIKE instead.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS_INDEXES = (
    ("ix_workflows_fts", "workflows"),
    ("ix_agents_fts", "agents"),
    ("ix_templates_fts", "templates"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table in FTS_INDEXES:
        op.execute(
            f"CREATE INDEX {name} ON {table} USING gin "
            "(to_tsvector('english'::regconfig, "
            "(coalesce(name, '') || ' ' || coalesce(description, ''))))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _ in FTS_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
