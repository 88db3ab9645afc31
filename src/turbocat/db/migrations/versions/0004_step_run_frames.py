"""step_runs know the loop iteration or parallel body (the *frame*) they run in.

``scope`` names the frame ("" at the top level, ``/loop[3]`` for iteration 3 of step loop,
``/par[]`` for the branches of step par, nested by concatenation) and ``parent_id`` points at
the loop or parallel step run that owns the frame. The unique index moves from (step_key,
iteration) to (scope, step_key), which also serves "the runs of one frame".

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from turbocat.db.types import GUID

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        with op.batch_alter_table("step_runs") as batch:
            batch.add_column(
                sa.Column("scope", sa.String(length=1000), nullable=False, server_default="")
            )
            batch.add_column(sa.Column("parent_id", GUID, nullable=True))
            batch.create_foreign_key(
                op.f("fk_step_runs_parent_id_step_runs"),
                "step_runs",
                ["parent_id"],
                ["id"],
                ondelete="CASCADE",
                onupdate="CASCADE",
            )
            batch.drop_index("uq_step_runs_execution_step_iteration_attempt")
            batch.create_index(
                "uq_step_runs_execution_scope_step_attempt",
                ["execution_id", "scope", "step_key", "attempt"],
                unique=True,
            )
            batch.create_index(
                "ix_step_runs_parent_id",
                ["parent_id"],
                postgresql_where=sa.text("parent_id IS NOT NULL"),
                sqlite_where=sa.text("parent_id IS NOT NULL"),
            )


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        with op.batch_alter_table("step_runs") as batch:
            batch.drop_index("ix_step_runs_parent_id")
            batch.drop_index("uq_step_runs_execution_scope_step_attempt")
            batch.create_index(
                "uq_step_runs_execution_step_iteration_attempt",
                ["execution_id", "step_key", "iteration", "attempt"],
                unique=True,
            )
            batch.drop_constraint(op.f("fk_step_runs_parent_id_step_runs"), type_="foreignkey")
            batch.drop_column("parent_id")
            batch.drop_column("scope")
