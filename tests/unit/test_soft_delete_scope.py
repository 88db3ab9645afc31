"""Which statements get the hide-soft-deleted criteria: every one that reads a table with
soft-deleted rows anywhere (columns, joins, aliases, subqueries), and no other (the option
costs about as much as a prebuilt statement's whole execution)."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import aliased

from turbocat.db.engine import _reads_soft_deleted
from turbocat.db.models import AgentRow, ExecutionRow, StepRunRow, UserRow, WorkflowRow
from turbocat.services.versions import is_latest


def test_statements_without_soft_deleted_tables_skip_the_criteria() -> None:
    assert not _reads_soft_deleted(select(StepRunRow).where(StepRunRow.id == bindparam("i")))
    assert not _reads_soft_deleted(select(ExecutionRow.id).where(ExecutionRow.workflow_id.in_([])))


def test_any_occurrence_of_a_soft_deleted_table_gets_it() -> None:
    assert _reads_soft_deleted(select(WorkflowRow))
    assert _reads_soft_deleted(
        select(StepRunRow.id).join(AgentRow, AgentRow.id == StepRunRow.agent_id)
    )
    saved = aliased(UserRow)
    assert _reads_soft_deleted(
        select(ExecutionRow.id).join(saved, saved.id == ExecutionRow.user_id)
    )
    inner = select(WorkflowRow.id).where(WorkflowRow.name == "x").scalar_subquery()
    assert _reads_soft_deleted(select(ExecutionRow.id).where(ExecutionRow.workflow_id == inner))
    assert _reads_soft_deleted(
        select(ExecutionRow.id).where(exists().where(is_latest(WorkflowRow)))
    )


def test_the_answer_is_remembered_per_shape_not_per_value() -> None:
    first = select(StepRunRow.id).where(StepRunRow.execution_id == "a")
    again = select(StepRunRow.id).where(StepRunRow.execution_id == "b")
    assert not _reads_soft_deleted(first) and not _reads_soft_deleted(again)
    assert _reads_soft_deleted(select(WorkflowRow.id).where(WorkflowRow.name == "b"))
