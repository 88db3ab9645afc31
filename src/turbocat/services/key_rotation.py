"""Re-encryption of every sealed column with the keyring's active key, without downtime.

``SEALED_COLUMNS`` registers each column holding values sealed by the keyring, with the column
naming their key and how their associated data is built. Rotation walks each column in bounded
batches, each batch its own transaction under the system tenant context (platform work across
tenants). A row is rewritten only if its ciphertext is still the one that was read, so a
concurrent change of the same credentials is never overwritten by a stale copy. Readers keep
working throughout: the old keys stay in the ring until no row uses them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import tenancy
from turbocat.db.base import Base
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import DeploymentRow, IntegrationRow, WebhookRow
from turbocat.security.crypto import CryptoError, Keyring, row_aad

AadBuilder = Callable[[uuid.UUID, uuid.UUID], bytes]
"""(organization id, row id) -> associated data."""

DEFAULT_BATCH_SIZE = 200


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values (``value``) and the column naming their key (``key_id``)."""

    model: type[Base]
    value: str
    key_id: str
    aad: AadBuilder = row_aad

    @property
    def table(self) -> Table:
        return cast(Table, self.model.__table__)

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.value}"


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(IntegrationRow, "credentials_encrypted", "credentials_key_id"),
    SealedColumn(WebhookRow, "signing_secrets_encrypted", "signing_key_id"),
    SealedColumn(DeploymentRow, "environment_vars_encrypted", "environment_vars_key_id"),
)
"""Every column sealed with the keyring; a new one must be added here to be rotated."""


@dataclass(frozen=True)
class RotationFailure:
    column: str
    row_id: uuid.UUID
    reason: str


@dataclass
class RotationReport:
    active_key_id: str
    reencrypted: dict[str, int] = field(default_factory=dict)
    skipped_concurrent: int = 0
    """Rows changed by someone else between read and write (they were sealed anew anyway)."""
    failures: list[RotationFailure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.reencrypted.values())


@dataclass(frozen=True)
class KeyUsage:
    column: str
    key_id: str | None
    rows: int


async def _system(session: AsyncSession) -> None:
    await tenancy.enter(session, TenantContext(system=True))


def _stale(column: SealedColumn, active: str) -> ColumnElement[bool]:
    t = column.table
    return and_(
        t.c[column.value].is_not(None),
        or_(t.c[column.key_id].is_(None), t.c[column.key_id] != active),
    )


async def _rotate_batch(
    db: Database,
    column: SealedColumn,
    keyring: Keyring,
    after: uuid.UUID | None,
    batch_size: int,
    report: RotationReport,
) -> uuid.UUID | None:
    """Re-encrypt one batch in one transaction; returns the last id seen (None when done)."""
    t = column.table
    async with db.transaction() as session:
        await _system(session)
        stmt = (
            select(t.c.id, t.c.organization_id, t.c[column.value])
            .where(_stale(column, keyring.active_id))
            .order_by(t.c.id)
            .limit(batch_size)
            .execution_options(include_deleted=True)
        )
        if after is not None:
            stmt = stmt.where(t.c.id > after)
        rows = (await session.execute(stmt)).all()
        for row_id, org_id, blob in rows:
            aad = column.aad(org_id, row_id)
            try:
                plaintext = keyring.decrypt(blob, associated_data=aad)
            except CryptoError as exc:
                report.failures.append(RotationFailure(column.name, row_id, str(exc)))
                continue
            result = await session.execute(
                update(t)
                .where(t.c.id == row_id, t.c[column.value] == blob)
                .values(
                    {
                        column.value: keyring.encrypt(plaintext, associated_data=aad),
                        column.key_id: keyring.active_id,
                    }
                )
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1:
                report.reencrypted[column.name] = report.reencrypted.get(column.name, 0) + 1
            else:
                report.skipped_concurrent += 1
    if len(rows) < batch_size:
        return None
    last: uuid.UUID = rows[-1][0]
    return last


async def rotate_credentials(
    db: Database,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    columns: tuple[SealedColumn, ...] = SEALED_COLUMNS,
) -> RotationReport:
    """Re-encrypt every value not sealed with ``keyring.active_id``; safe to run again.

    A value that does not decrypt (unknown key, wrong row) is reported, never dropped.
    """
    report = RotationReport(active_key_id=keyring.active_id)
    for column in columns:
        report.reencrypted.setdefault(column.name, 0)
        after: uuid.UUID | None = None
        while True:
            after = await _rotate_batch(db, column, keyring, after, batch_size, report)
            if after is None:
                break
    return report


async def key_usage(
    db: Database, columns: tuple[SealedColumn, ...] = SEALED_COLUMNS
) -> list[KeyUsage]:
    """How many rows of each sealed column use each key."""
    out: list[KeyUsage] = []
    async with db.transaction() as session:
        await _system(session)
        for column in columns:
            t = column.table
            stmt = (
                select(t.c[column.key_id], func.count())
                .where(t.c[column.value].is_not(None))
                .group_by(t.c[column.key_id])
                .order_by(t.c[column.key_id])
                .execution_options(include_deleted=True)
            )
            for key_id, count in (await session.execute(stmt)).all():
                out.append(KeyUsage(column.name, key_id, int(count)))
    return out


async def rows_not_using(
    db: Database, key_id: str, columns: tuple[SealedColumn, ...] = SEALED_COLUMNS
) -> int:
    """Sealed values still under another key than ``key_id`` (0 means old keys can go)."""
    usage = await key_usage(db, columns)
    return sum(u.rows for u in usage if u.key_id != key_id)
