"""Deployments: a workflow or agent version exposed at an endpoint (seeds 000/001)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, SoftDeleteMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import CreatedByMixin, fk, partial_index
from turbocat.db.types import GUID, JSONDoc, UTCDateTime, enum_type
from turbocat.domain.enums import DeploymentStatus, Environment, HealthStatus


class DeploymentRow(IdMixin, TimestampMixin, SoftDeleteMixin, TenantMixin, CreatedByMixin, Base):
    """Exactly one of ``workflow_id``/``agent_id`` is set (a database CHECK).

    The target references CASCADE rather than seed 001's SET NULL: SET NULL would break the
    CHECK, and a deployment of a purged version has nothing left to serve. The endpoint key is
    stored hashed (``api_key_hash``); a request presenting it may find the row before any
    tenant is known (row-level security kind "credential").
    """

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint("(workflow_id IS NULL) <> (agent_id IS NULL)", name="workflow_xor_agent"),
        CheckConstraint(
            "allocated_memory_mb > 0 AND allocated_cpu_shares > 0", name="allocation_positive"
        ),
        CheckConstraint(
            "total_requests >= 0 AND total_errors >= 0 AND avg_response_time_ms >= 0",
            name="counters_non_negative",
        ),
        partial_index("ix_deployments_workflow_id", "workflow_id", where="deleted_at IS NULL"),
        partial_index("ix_deployments_agent_id", "agent_id", where="deleted_at IS NULL"),
        partial_index("ix_deployments_status", "status", where="deleted_at IS NULL"),
        partial_index("ix_deployments_environment", "environment", where="deleted_at IS NULL"),
        {"info": {"rls": "credential", "credential_column": "api_key_hash"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    """Globally unique path segment of the endpoint."""
    description: Mapped[str | None] = mapped_column(Text)
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(GUID, fk("agents.id", "CASCADE"))
    environment: Mapped[Environment] = mapped_column(
        enum_type(Environment, "environment"), default=Environment.PRODUCTION
    )
    status: Mapped[DeploymentStatus] = mapped_column(
        enum_type(DeploymentStatus, "deployment_status"), default=DeploymentStatus.STOPPED
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    environment_vars_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    environment_vars_key_id: Mapped[str | None] = mapped_column(String(64))
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str | None] = mapped_column(String(20))
    allocated_memory_mb: Mapped[int] = mapped_column(Integer, default=512)
    allocated_cpu_shares: Mapped[int] = mapped_column(Integer, default=1024)
    deployed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_health_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    health_status: Mapped[HealthStatus] = mapped_column(
        enum_type(HealthStatus, "health_status"), default=HealthStatus.UNKNOWN
    )
    total_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    total_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_response_time_ms: Mapped[int] = mapped_column(Integer, default=0)
