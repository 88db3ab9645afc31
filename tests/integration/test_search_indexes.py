"""Expression indexes alembic cannot compare: they exist, and queries use them (PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from turbocat.config import Settings
from turbocat.db.dialects import postgres
from turbocat.db.engine import Database
from turbocat.db.models import AgentRow, TemplateRow, WorkflowRow

pytestmark = pytest.mark.pg


async def test_full_text_and_email_indexes_exist_and_are_used(pg_url: str) -> None:
    db = Database.from_settings(Settings(database_url=pg_url), app_role=False)
    try:
        async with db.transaction() as session:
            names = set(
                (
                    await session.execute(
                        text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
                    )
                ).scalars()
            )
            assert {
                "ix_workflows_fts",
                "ix_agents_fts",
                "ix_templates_fts",
                "uq_users_email_lower",
            } <= names
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            for model, index in (
                (WorkflowRow, "ix_workflows_fts"),
                (AgentRow, "ix_agents_fts"),
                (TemplateRow, "ix_templates_fts"),
            ):
                query = select(model.id).where(
                    postgres.full_text_match([model.name, model.description], "invoice totals")
                )
                compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
                plan = "\n".join((await session.execute(text(f"EXPLAIN {compiled}"))).scalars())
                assert index in plan, plan
            plan = "\n".join(
                (
                    await session.execute(
                        text("EXPLAIN SELECT id FROM users WHERE lower(email) = 'a@b.c'")
                    )
                ).scalars()
            )
            assert "uq_users_email_lower" in plan, plan
    finally:
        await db.dispose()
