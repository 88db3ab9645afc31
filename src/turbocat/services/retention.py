"""Retention (SPEC section 8): remove what the policies say is old, in short batches.

``run`` walks every organization (or one) with its effective policy, then the platform-wide
rows (users, built-in templates) with the global defaults, and applies ``SWEEPS`` in order:

1. ``execution_logs`` older than the logs period, even of executions still kept;
2. ``executions`` ended (``completed_at``, else ``created_at``) before their period: completed
   ones by the successful period, failed, timed-out and cancelled ones by the failed period;
   never pending, running or waiting ones. Their logs, work items and step runs go first, each
   in batches; a child or re-run execution is judged on its own (its link is set NULL);
3. ``audit_logs`` by ``created_at``, ``usage_records`` by ``period_end``;
4. soft-deleted rows by ``deleted_at``: deployments, API keys, templates, then agent and
   workflow *lineages* as a whole (all versions deleted past the period), and only once no
   row that retention keeps would go with them through ON DELETE CASCADE: a workflow lineage
   stays while one of its executions is kept, a lineage while a kept deployment uses it.

Every delete is ``DELETE ... WHERE id IN (SELECT id ... LIMIT batch)`` in its own short
transaction (and references from large tables to a purged row, which ON DELETE SET NULL would
update in one go, are set to NULL first the same way), so no table is locked for long and a
crash loses nothing but time: the next run carries on. A dry run counts with the same
predicates and reports the same numbers.

Each sweep is one function per kind of table taking a ``Sweeper`` and a ``Scope``. Where
executions and logs are partitioned by month (PostgreSQL), ``services.retention_months`` first
drops the months whose rows are all past their periods, whole; the sweeps then find only the
rest.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import (
    AgentRow,
    ApiKeyRow,
    AuditLogRow,
    DeploymentRow,
    ExecutionLogRow,
    ExecutionRow,
    OrganizationRow,
    StepRunRow,
    TemplateRow,
    UsageRecordRow,
    UserRow,
    WorkflowRow,
    WorkItemRow,
)
from turbocat.domain.enums import ExecutionStatus
from turbocat.domain.errors import NotFound, ValidationFailed
from turbocat.domain.retention import SETTINGS_KEY, Kind, Policy, parse_overrides
from turbocat.services import audit
from turbocat.services.retention_months import FAILED_STATUSES, drop_expired_months

log = logging.getLogger("turbocat.retention")
SYSTEM = TenantContext(system=True)
PLATFORM = "(platform)"
"""The report's name for rows of no organization (users, built-in templates)."""


Counts = Counter[str]


@dataclass(frozen=True)
class Scope:
    """One organization (or the platform-wide rows: ``organization_id`` None) and its policy."""

    organization_id: uuid.UUID | None
    label: str
    policy: Policy
    now: dt.datetime

    def cutoff(self, kind: Kind) -> dt.datetime | None:
        return self.policy.cutoff(kind, self.now)

    def owns(self, column: Any) -> ColumnElement[bool]:
        if self.organization_id is None:
            return column.is_(None)  # type: ignore[no-any-return]
        return column == self.organization_id  # type: ignore[no-any-return]


@dataclass
class Sweeper:
    """Deletes (or, on a dry run, counts) rows by primary key in batches."""

    db: Database
    batch_size: int
    dry_run: bool

    async def remove(
        self, model: Any, where: ColumnElement[bool], *, cascades: bool = False
    ) -> int:
        """Rows of ``model`` matching ``where``: counted on a dry run, else deleted ``batch_size``
        at a time, each batch in its own transaction; the number the DELETEs reported.
        ``cascades``: rows of a batch may also go by a cascade from another row of the batch
        (which the count leaves out), so only an empty batch ends the loop."""
        if self.dry_run:
            return await self.count(model, where)
        removed = 0
        while True:
            # correlate(None): the candidate rows come from this subquery's own FROM, not from
            # the DELETE's table (which would turn the LIMIT into a per-row test).
            picked = select(model.id).where(where).limit(self.batch_size).correlate(None)
            stmt = delete(model).where(model.id.in_(picked))
            async with self.db.transaction(SYSTEM, offload=True) as session:
                result = await session.execute(
                    stmt, execution_options={"synchronize_session": False}
                )
            done = int(result.rowcount or 0)  # type: ignore[attr-defined]
            removed += done
            if done == 0 or (done < self.batch_size and not cascades):
                return removed

    async def detach(self, column: Any, targets: Any) -> None:
        """Set ``column`` (a nullable reference) to NULL where it points at ``targets`` (a
        subquery of ids), in batches: the ON DELETE SET NULL of a purged deployment, key, user
        or agent would otherwise update all its executions or step runs in one transaction."""
        if self.dry_run:
            return
        table = column.class_
        while True:
            picked = (
                select(table.id).where(column.in_(targets)).limit(self.batch_size).correlate(None)
            )
            stmt = update(table).where(table.id.in_(picked)).values({column.key: None})
            async with self.db.transaction(SYSTEM, offload=True) as session:
                result = await session.execute(
                    stmt, execution_options={"synchronize_session": False}
                )
            if int(result.rowcount or 0) < self.batch_size:  # type: ignore[attr-defined]
                return

    async def count(self, model: Any, where: ColumnElement[bool]) -> int:
        stmt = select(func.count()).select_from(model).where(where)
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            found = await session.execute(stmt.execution_options(include_deleted=True))
        return int(found.scalar_one())

    async def ids(self, model: Any, where: ColumnElement[bool], limit: int) -> list[uuid.UUID]:
        stmt = select(model.id).where(where).limit(limit).execution_options(include_deleted=True)
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            return list((await session.execute(stmt)).scalars())


# ---- predicates -----------------------------------------------------------------------------


def expired_logs(scope: Scope) -> ColumnElement[bool] | None:
    cutoff = scope.cutoff(Kind.LOGS)
    if cutoff is None:
        return None
    return and_(scope.owns(ExecutionLogRow.organization_id), ExecutionLogRow.created_at < cutoff)


def expired_executions(scope: Scope, row: Any = ExecutionRow) -> ColumnElement[bool] | None:
    """Terminal executions of the scope past their period (None: the policy keeps them all)."""
    ended = func.coalesce(row.completed_at, row.created_at)
    clauses = []
    success = scope.cutoff(Kind.SUCCESSFUL_EXECUTIONS)
    if success is not None:
        clauses.append(and_(row.status == ExecutionStatus.COMPLETED, ended < success))
    failed = scope.cutoff(Kind.FAILED_EXECUTIONS)
    if failed is not None:
        clauses.append(and_(row.status.in_(FAILED_STATUSES), ended < failed))
    if not clauses or scope.organization_id is None:
        return None
    return and_(scope.owns(row.organization_id), or_(*clauses))


def purged_soft_delete(scope: Scope, model: Any) -> ColumnElement[bool] | None:
    """Rows of a soft-deleting table deleted before the scope's soft-deleted period."""
    cutoff = scope.cutoff(Kind.SOFT_DELETED)
    if cutoff is None:
        return None
    owner = scope.owns(model.organization_id) if hasattr(model, "organization_id") else true()
    return and_(owner, model.deleted_at.is_not(None), model.deleted_at < cutoff)


def _lineage_purgeable(scope: Scope, model: Any, row: Any) -> ColumnElement[bool] | None:
    """``row`` (an alias of ``model``) belongs to a lineage whose versions were all deleted
    before the cutoff and that no deployment this run keeps still uses."""
    own = purged_soft_delete(scope, row)
    deployment_gone = purged_soft_delete(scope, DeploymentRow)
    if own is None or deployment_gone is None:
        return None
    cutoff = scope.cutoff(Kind.SOFT_DELETED)
    lineage = func.coalesce(row.parent_id, row.id)
    version = aliased(model)
    in_lineage = or_(version.id == lineage, version.parent_id == lineage)
    live_version = exists(
        select(literal(1)).where(
            in_lineage, or_(version.deleted_at.is_(None), version.deleted_at >= cutoff)
        )
    )
    target = DeploymentRow.agent_id if model is AgentRow else DeploymentRow.workflow_id
    deployed = exists(
        select(literal(1))
        .select_from(DeploymentRow)
        .join(version, target == version.id)
        .where(in_lineage, ~deployment_gone)
    )
    return and_(own, ~live_version, ~deployed)


def purgeable_workflow(scope: Scope, row: Any) -> ColumnElement[bool] | None:
    """A soft-deleted workflow lineage past the period whose executions are all going too
    (deleting a workflow version cascades to its executions)."""
    base = _lineage_purgeable(scope, WorkflowRow, row)
    if base is None:
        return None
    version = aliased(WorkflowRow)
    lineage = func.coalesce(row.parent_id, row.id)
    gone = expired_executions(scope)
    kept = exists(
        select(literal(1))
        .select_from(ExecutionRow)
        .join(version, ExecutionRow.workflow_id == version.id)
        .where(
            or_(version.id == lineage, version.parent_id == lineage),
            true() if gone is None else ~gone,
        )
    )
    return and_(base, ~kept)


# ---- sweeps: one per kind of table ----------------------------------------------------------


async def sweep_logs(sweeper: Sweeper, scope: Scope) -> Counts:
    where = expired_logs(scope)
    if where is None:
        return Counts()
    return Counts({"execution_logs": await sweeper.remove(ExecutionLogRow, where)})


async def sweep_executions(sweeper: Sweeper, scope: Scope) -> Counts:
    """Expired executions with their logs, work items and step runs, a batch of executions at
    a time; the children go first, each in batches, so no cascade is large."""
    expired = expired_executions(scope)
    if expired is None:
        return Counts()
    if sweeper.dry_run:
        picked = select(ExecutionRow.id).where(expired)
        counts = await _children(sweeper, scope, picked)
        counts["executions"] = await sweeper.count(ExecutionRow, expired)
        return counts
    counts = Counts()
    while True:
        ids = await sweeper.ids(ExecutionRow, expired, sweeper.batch_size)
        if not ids:
            return counts
        counts += await _children(sweeper, scope, ids)
        # ``expired`` again: an execution never leaves a final status, but this costs nothing.
        counts["executions"] += await sweeper.remove(
            ExecutionRow, and_(ExecutionRow.id.in_(ids), expired)
        )
        if len(ids) < sweeper.batch_size:
            return counts


async def _children(sweeper: Sweeper, scope: Scope, executions: Any) -> Counts:
    """Logs, work items and step runs of ``executions`` (ids, or a subquery selecting them)."""
    counts = Counts()
    logs_gone = expired_logs(scope)
    # The logs sweep ran first and took (or, dry, counted) the old lines: not counted twice.
    logs_left = true() if logs_gone is None else ~logs_gone
    counts["execution_logs"] = await sweeper.remove(
        ExecutionLogRow, and_(ExecutionLogRow.execution_id.in_(executions), logs_left)
    )
    counts["work_items"] = await sweeper.remove(
        WorkItemRow, WorkItemRow.execution_id.in_(executions)
    )
    # Counted before deleting: a step run's loop or parallel body goes with it by cascade,
    # which the DELETE's row count leaves out.
    steps = StepRunRow.execution_id.in_(executions)
    counts["step_runs"] = await sweeper.count(StepRunRow, steps)
    if not sweeper.dry_run:
        await sweeper.remove(StepRunRow, steps, cascades=True)
    return counts


async def sweep_audit_logs(sweeper: Sweeper, scope: Scope) -> Counts:
    cutoff = scope.cutoff(Kind.AUDIT_LOGS)
    if cutoff is None or scope.organization_id is None:
        return Counts()
    where = and_(scope.owns(AuditLogRow.organization_id), AuditLogRow.created_at < cutoff)
    return Counts({"audit_logs": await sweeper.remove(AuditLogRow, where)})


async def sweep_usage_records(sweeper: Sweeper, scope: Scope) -> Counts:
    cutoff = scope.cutoff(Kind.USAGE_RECORDS)
    if cutoff is None or scope.organization_id is None:
        return Counts()
    where = and_(scope.owns(UsageRecordRow.organization_id), UsageRecordRow.period_end < cutoff)
    return Counts({"usage_records": await sweeper.remove(UsageRecordRow, where)})


def _soft_deleted(model: Any, *, detach: Sequence[Any] = ()) -> Sweep:
    """The sweep of a soft-deleting table without versions: rows past the period, once the
    large tables' references to them (``detach``) are set to NULL in batches. Tables without an
    organization (users) are swept in the platform scope only."""
    platform_only = not hasattr(model, "organization_id")

    async def sweep(sweeper: Sweeper, scope: Scope) -> Counts:
        if platform_only and scope.organization_id is not None:
            return Counts()
        where = purged_soft_delete(scope, model)
        if where is None:
            return Counts()
        for column in detach:
            await sweeper.detach(column, select(model.id).where(where))
        return Counts({model.__tablename__: await sweeper.remove(model, where)})

    return sweep


def _lineages(
    model: Any,
    predicate: Callable[[Scope, Any], ColumnElement[bool] | None],
    *,
    detach: Sequence[Any] = (),
) -> Sweep:
    async def sweep(sweeper: Sweeper, scope: Scope) -> Counts:
        if scope.organization_id is None:
            return Counts()
        # An alias, so the predicate's subqueries over the same table correlate to it.
        row = aliased(model)
        where = predicate(scope, row)
        if where is None:
            return Counts()
        for column in detach:
            await sweeper.detach(column, select(row.id).where(where))
        return Counts({model.__tablename__: await sweeper.remove(model, model.id.in_(
            select(row.id).where(where)
        ))})  # fmt: skip

    return sweep


def _agent_lineage(scope: Scope, row: Any) -> ColumnElement[bool] | None:
    return _lineage_purgeable(scope, AgentRow, row)


Sweep = Callable[[Sweeper, Scope], Awaitable[Counts]]

SWEEPS: Sequence[tuple[str, Sweep]] = (
    ("logs", sweep_logs),
    ("executions", sweep_executions),
    ("audit_logs", sweep_audit_logs),
    ("usage_records", sweep_usage_records),
    ("deployments", _soft_deleted(DeploymentRow, detach=[ExecutionRow.deployment_id])),
    (
        "api_keys",
        _soft_deleted(ApiKeyRow, detach=[ExecutionRow.api_key_id, AuditLogRow.api_key_id]),
    ),
    ("templates", _soft_deleted(TemplateRow)),
    ("agents", _lineages(AgentRow, _agent_lineage, detach=[StepRunRow.agent_id])),
    ("workflows", _lineages(WorkflowRow, purgeable_workflow)),
    ("users", _soft_deleted(UserRow, detach=[ExecutionRow.user_id, AuditLogRow.user_id])),
)
"""Applied in this order to every scope: executions after logs (the logs sweep takes the old
lines of kept executions), lineages after deployments and executions (which would hold them)."""


# ---- the run --------------------------------------------------------------------------------


@dataclass
class ScopeReport:
    organization: str
    organization_id: uuid.UUID | None
    policy: dict[str, int | None]
    removed: Counts = field(default_factory=Counts)

    def as_json(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "organization_id": None if self.organization_id is None else str(self.organization_id),
            "policy": self.policy,
            "removed": dict(sorted(self.removed.items())),
        }


@dataclass
class Report:
    """What a run removed (or, dry, would remove), per organization and table."""

    dry_run: bool
    now: dt.datetime
    scopes: list[ScopeReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Organizations left alone, with why (invalid overrides in their settings)."""
    partitions_dropped: list[str] = field(default_factory=list)
    """Monthly partitions dropped whole (PostgreSQL; on a dry run, those that would be)."""

    def totals(self) -> Counts:
        total = Counts()
        for scope in self.scopes:
            total.update(scope.removed)
        return total

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "totals": dict(sorted(self.totals().items())),
            "scopes": [s.as_json() for s in self.scopes],
            "skipped": self.skipped,
            "partitions_dropped": self.partitions_dropped,
        }


def policy_of(org: OrganizationRow, defaults: Policy) -> Policy:
    """The organization's effective policy: its overrides over the defaults."""
    raw = (org.settings or {}).get(SETTINGS_KEY)
    return defaults.with_overrides(parse_overrides(raw))


async def _organizations(db: Database, ref: str | None) -> list[OrganizationRow]:
    stmt = select(OrganizationRow).order_by(OrganizationRow.slug)
    if ref is not None:
        stmt = stmt.where((OrganizationRow.slug == ref) | (OrganizationRow.name == ref))
    async with db.transaction(SYSTEM, readonly=True) as session:
        orgs = list((await session.execute(stmt)).scalars())
    if ref is not None and not orgs:
        raise NotFound("organization", ref)
    return orgs[:1] if ref is not None else orgs


async def run(
    db: Database,
    defaults: Policy,
    now: dt.datetime,
    *,
    dry_run: bool = False,
    batch_size: int = 1000,
    organization: str | None = None,
) -> Report:
    """Apply the retention policies at ``now``: every organization (or only ``organization``,
    a slug or name) with its overrides, then the platform-wide rows unless one was named."""
    report = Report(dry_run=dry_run, now=now)
    sweeper = Sweeper(db, batch_size, dry_run)
    scopes: list[Scope] = []
    for org in await _organizations(db, organization):
        try:
            policy = policy_of(org, defaults)
        except ValidationFailed as exc:
            report.skipped[org.slug] = "; ".join(e.message for e in exc.errors) or exc.detail
            log.warning("retention skips organization %s: %s", org.slug, exc.detail)
            continue
        scopes.append(Scope(org.id, org.slug, policy, now))
    if organization is None:
        scopes.append(Scope(None, PLATFORM, defaults, now))
    months = await drop_expired_months(sweeper, scopes, now)
    report.partitions_dropped = months.dropped
    for scope in scopes:
        removed = Counts()
        if scope.organization_id is not None:
            removed += months.removed.get(scope.organization_id, Counts())
        for _name, sweep in SWEEPS:
            removed += await sweep(sweeper, scope)
        report.scopes.append(
            ScopeReport(scope.label, scope.organization_id, scope.policy.as_json(), removed)
        )
    return report


# ---- per-organization overrides -------------------------------------------------------------

DEFAULT = "default"
"""A change that drops an organization's override of a kind (the global default applies)."""


async def organization(session: AsyncSession, ref: str) -> OrganizationRow:
    stmt = select(OrganizationRow).where(
        (OrganizationRow.slug == ref) | (OrganizationRow.name == ref)
    )
    org = (await session.execute(stmt)).scalars().first()
    if org is None:
        raise NotFound("organization", ref)
    return org


def overrides_of(org: OrganizationRow) -> dict[Kind, int | None]:
    return parse_overrides((org.settings or {}).get(SETTINGS_KEY))


async def set_overrides(
    session: AsyncSession,
    ref: str,
    changes: Mapping[Kind, int | Literal["default"] | None],
    *,
    now: dt.datetime,
) -> OrganizationRow:
    """Change an organization's overrides (``None`` keeps forever, ``"default"`` drops the
    override), audited as ``organization.set_retention``."""
    org = await organization(session, ref)
    before = {k.value: v for k, v in overrides_of(org).items()}
    after = dict(before)
    for kind, value in changes.items():
        if isinstance(value, str):  # DEFAULT
            after.pop(kind.value, None)
        else:
            after[kind.value] = value
    parse_overrides(after)
    settings = dict(org.settings or {})
    if after:
        settings[SETTINGS_KEY] = after
    else:
        settings.pop(SETTINGS_KEY, None)
    org.settings = settings
    org.updated_at = now
    audit.record(
        session, organization_id=org.id, actor=audit.SYSTEM,
        action="organization.set_retention", resource_type="organization", resource_id=org.id,
        now=now, meta=audit.RequestMeta(user_agent="turbocat-cli"),
        before={SETTINGS_KEY: before}, after={SETTINGS_KEY: after},
    )  # fmt: skip
    await session.flush()
    return org
