"""Indexes for two queries the engine runs all the time, which read whole tables without them.

- ``ix_step_runs_waiting``: every worker tick asks when the next signal wait times out
  (``min(scheduled_for)`` of the waiting runs) and maintenance looks for the waits that are
  due; both scanned all of ``step_runs``, so a tick cost more with every step ever run.
  Partial, like the claim and lease indexes: only the waiting rows are in it.
- ``ix_executions_workflow_id_status``: a workflow with ``max_concurrent_executions`` (10 by
  default) counts its running executions at every start and every finish; by workflow alone
  that read every execution the workflow ever had.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "status = 'waiting'"


def upgrade() -> None:
    op.create_index(
        "ix_step_runs_waiting",
        "step_runs",
        ["scheduled_for"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )
    # On PostgreSQL ``executions`` is partitioned (0006): the index is made on every partition,
    # and on the ones created later.
    op.create_index("ix_executions_workflow_id_status", "executions", ["workflow_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_executions_workflow_id_status", table_name="executions")
    op.drop_index("ix_step_runs_waiting", table_name="step_runs")
