"""workflow_steps keep everything a materialized step carries: join mode, retry jitter,
task queue, description, and the loop/parallel body it belongs to.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN works on both databases; the server defaults fill existing rows.
    op.add_column("workflow_steps", sa.Column("description", sa.Text(), nullable=True))
    op.add_column(
        "workflow_steps",
        sa.Column("join_mode", sa.String(length=8), nullable=False, server_default="all"),
    )
    op.add_column(
        "workflow_steps",
        sa.Column("retry_jitter", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("workflow_steps", sa.Column("task_queue", sa.String(length=255), nullable=True))
    op.add_column("workflow_steps", sa.Column("parent_key", sa.String(length=100), nullable=True))
    op.add_column(
        "workflow_steps", sa.Column("parent_branch", sa.String(length=100), nullable=True)
    )


def downgrade() -> None:
    # SQLite rebuilds the table; reflecting its neighbours warns about the lower(email)
    # expression index on users, which the rebuild does not touch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        _drop_columns()


def _drop_columns() -> None:
    with op.batch_alter_table("workflow_steps") as batch:
        for column in (
            "parent_branch",
            "parent_key",
            "task_queue",
            "retry_jitter",
            "join_mode",
            "description",
        ):
            batch.drop_column(column)
