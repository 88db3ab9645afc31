"""The platform as a running step sees it: ``agents.base.Services`` over the database.

Credentials are decrypted in a short transaction of the step's organization (RLS applies on
PostgreSQL). Log lines and token usage are buffered here and written by the worker in the
transaction that records the step's outcome, so a step that runs again after a crash does not
leave the lines of its lost attempt behind twice. An llm step's checkpoint
(``save_checkpoint``) writes them early, in the transaction that commits the checkpoint: the
work they describe is then durable and is not done again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update

from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import AgentPromptRow, AgentRow, ExecutionLogRow, StepRunRow
from turbocat.domain.enums import AgentStatus, LogLevel, StepStatus, UsageMetric, Visibility
from turbocat.domain.errors import NotFound, QuotaExceeded, TurbocatError
from turbocat.domain.expressions import JSONValue
from turbocat.domain.plans import Quotas
from turbocat.domain.redaction import redact
from turbocat.engine.agents import checkpoint
from turbocat.engine.agents.base import (
    AgentError,
    Credential,
    Invocation,
    Limits,
    PromptSource,
    RenderedPrompt,
    ToolTarget,
    Usage,
    render_prompt,
    run_agent_tool,
)
from turbocat.security.crypto import Keyring
from turbocat.services import integrations, metering, versions
from turbocat.services.quotas import check_tokens

SYSTEM = TenantContext(system=True)
MAX_BUFFERED_LINES = 2_000
"""Log lines one step run may write; past this one line says how many were dropped."""


@dataclass
class LogLine:
    level: LogLevel
    message: str
    metadata: dict[str, Any]
    at: dt.datetime


@dataclass
class StepServices:
    db: Database
    keyring: Callable[[], Keyring]
    organization_id: uuid.UUID
    clock: Callable[[], dt.datetime]
    quotas: Quotas = field(default_factory=Quotas)
    lines: list[LogLine] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    dropped: int = 0
    step_run: tuple[uuid.UUID, int] | None = None
    """(id, lease epoch) of the step run being run: what checkpoints are fenced on."""

    async def credential(self, integration_id: uuid.UUID) -> Credential:
        context = TenantContext(organization_id=self.organization_id)
        try:
            async with self.db.transaction(context) as session:
                resolved = await integrations.resolve_credentials(
                    session, self.organization_id, integration_id, self.keyring(), self.clock()
                )
        except TurbocatError as exc:  # not found in this organization, disabled, expired
            raise AgentError("integration_unavailable", exc.detail) from None
        return Credential(
            integration_id=resolved.integration_id,
            provider=resolved.provider,
            auth_kind=str(resolved.auth_kind.value),
            secrets=resolved.credentials,
            settings=resolved.settings,
        )

    def log(self, level: LogLevel, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        if len(self.lines) >= MAX_BUFFERED_LINES:
            self.dropped += 1
            return
        self.lines.append(LogLine(level, message, dict(metadata or {}), self.clock()))

    def record_usage(self, usage: Usage) -> None:
        self.usage.append(usage)

    async def check_token_quota(self) -> None:
        if not self.quotas.tokens:  # no plan has a token quota: nothing to read
            return
        async with self.db.transaction(self._tenant, readonly=True) as session:
            try:
                await check_tokens(session, self.organization_id, self.quotas, self.clock())
            except QuotaExceeded as exc:
                raise AgentError(
                    "token_quota_exceeded", exc.detail,
                    details={"limit": exc.limit, "plan": exc.plan, "resets_at": exc.resets_at},
                ) from None  # fmt: skip

    async def prompt(self, prompt_id: uuid.UUID, variables: Mapping[str, Any]) -> RenderedPrompt:
        async with self.db.transaction(self._tenant, readonly=True) as session:
            row = (
                await session.execute(
                    select(AgentPromptRow).where(
                        AgentPromptRow.id == prompt_id,
                        or_(
                            AgentPromptRow.organization_id == self.organization_id,
                            AgentPromptRow.organization_id.is_(None),
                            AgentPromptRow.visibility == Visibility.PUBLIC,
                        ),
                    )
                )
            ).scalar_one_or_none()
            if row is None:
                raise AgentError("prompt_unavailable", f"prompt {prompt_id} no longer exists")
            source = PromptSource(
                row.prompt_content, dict(row.prompt_variables or {}), row.model_name,
                row.model_provider, dict(row.parameters or {}),
            )  # fmt: skip
        return render_prompt(source, variables)

    async def tool(self, type: str, ref: str) -> ToolTarget:
        if type == "workflow":
            return await self._workflow_tool(ref)
        try:
            ident: uuid.UUID | None = uuid.UUID(ref)
        except ValueError:
            ident = None
        stmt = select(AgentRow).where(
            AgentRow.organization_id == self.organization_id, AgentRow.deleted_at.is_(None)
        )
        if ident is not None:
            stmt = stmt.where(AgentRow.id == ident)
        else:
            stmt = stmt.where(AgentRow.name == ref, versions.is_latest(AgentRow))
        async with self.db.transaction(self._tenant, readonly=True) as session:
            row = (await session.execute(stmt.limit(1))).scalar_one_or_none()
            if row is None or row.status == AgentStatus.ARCHIVED:
                raise AgentError("tool_unavailable", f"agent {ref!r} is not available as a tool")
            return ToolTarget(
                type="agent", ref=ref, name=row.name, description=row.description or "",
                parameters=dict(row.parameters or {}), kind=str(row.type.value),
                config=dict(row.config),
                limits=Limits(row.max_execution_time, row.max_memory_mb),
            )  # fmt: skip

    async def _workflow_tool(self, ref: str) -> ToolTarget:
        """A workflow of the organization (id or kebab name; its active version, else its
        newest), whose ``inputs`` schema the model is shown as the tool's parameters."""
        from turbocat.engine import children  # children -> services -> store -> this module

        async with self.db.transaction(self._tenant, readonly=True) as session:
            try:
                row = await children.resolve(session, self.organization_id, ref, None)
            except NotFound:
                raise AgentError(
                    "tool_unavailable", f"workflow {ref!r} is not available as a tool"
                ) from None
            inputs = (row.definition or {}).get("inputs")
            return ToolTarget(
                type="workflow", ref=ref, name=row.kebab_name,
                description=row.description or f"Runs workflow {row.name}",
                parameters=dict(inputs) if isinstance(inputs, dict) else {},
            )  # fmt: skip

    async def run_tool(
        self, target: ToolTarget, arguments: dict[str, JSONValue], parent: Invocation, call_id: str
    ) -> JSONValue:
        return await run_agent_tool(target, arguments, parent, call_id)

    async def load_checkpoint(self) -> dict[str, Any] | None:
        if self.step_run is None:
            return None
        run_id, epoch = self.step_run
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            output = (
                await session.execute(
                    select(StepRunRow.output).where(
                        StepRunRow.id == run_id, StepRunRow.lease_epoch == epoch
                    )
                )
            ).scalar_one_or_none()
        found = output.get(checkpoint.KEY) if isinstance(output, dict) else None
        return found if isinstance(found, dict) else None

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        """One transaction: the checkpoint, fenced on the run's lease epoch and status (a
        worker whose lease was taken over, or whose step was cancelled, writes nothing), with
        the log lines and tokens buffered since the last one."""
        if self.step_run is None:
            return
        run_id, epoch = self.step_run
        lines, usage, now = list(self.lines), list(self.usage), self.clock()
        async with self.db.transaction(SYSTEM) as session:
            fenced = await session.execute(
                update(StepRunRow)
                .where(
                    StepRunRow.id == run_id,
                    StepRunRow.lease_epoch == epoch,
                    StepRunRow.status == StepStatus.RUNNING,
                )
                .values(output={checkpoint.KEY: state}, updated_at=now)
                .returning(StepRunRow.execution_id, StepRunRow.step_key, StepRunRow.started_at),
                execution_options={"synchronize_session": False},
            )
            run = fenced.one_or_none()
            if run is None:
                raise AgentError(
                    "lease_lost",
                    "this worker no longer holds the step (its lease expired or it was "
                    "cancelled); its work is discarded",
                    retryable=True,
                )
            for line in lines:
                session.add(
                    ExecutionLogRow(
                        organization_id=self.organization_id, execution_id=run.execution_id,
                        step_run_id=run_id, level=line.level, message=line.message,
                        metadata_=redact(line.metadata), step_key=run.step_key,
                        step_status=StepStatus.RUNNING, step_started_at=run.started_at,
                        created_at=line.at,
                    )
                )  # fmt: skip
            tokens = sum(u.total_tokens for u in usage)
            if tokens:  # last: the organization's usage row is locked until the commit
                await metering.add(
                    session, self.organization_id, UsageMetric.AI_TOKENS_USED, tokens, now
                )
        del self.lines[: len(lines)]
        del self.usage[: len(usage)]

    @property
    def _tenant(self) -> TenantContext:
        return TenantContext(organization_id=self.organization_id)

    def drain(self) -> list[LogLine]:
        """The buffered lines (and a note of any dropped), emptying the buffer."""
        lines, self.lines = self.lines, []
        if self.dropped:
            note = f"{self.dropped} more log lines of this step were dropped"
            lines.append(LogLine(LogLevel.WARN, note, {}, self.clock()))
            self.dropped = 0
        return lines
