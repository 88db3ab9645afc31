"""Identity and tenancy: organizations, users, memberships, sessions, API keys, audit logs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, SoftDeleteMixin, TenantMixin, TimestampMixin
from turbocat.db.types import GUID, JSONDoc, StrList, UTCDateTime, enum_type
from turbocat.domain.enums import MemberRole, Plan, SystemRole


class OrganizationRow(IdMixin, TimestampMixin, Base):
    """The tenant (seed 004). Its own id is the tenant key."""

    __tablename__ = "organizations"
    __table_args__ = ({"info": {"rls": "organization"}},)

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    plan: Mapped[Plan] = mapped_column(enum_type(Plan, "plan"), default=Plan.STARTER, index=True)
    trial_ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class UserRow(IdMixin, TimestampMixin, SoftDeleteMixin, Base):
    """A person or service account (seeds 000/001). Global: joins organizations by membership."""

    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_email_lower", text("lower(email)"), unique=True),
        Index("ix_users_role", "role"),
        Index("ix_users_created_at", "created_at"),
    )

    email: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    avatar_url: Mapped[str | None] = mapped_column(Text)
    role: Mapped[SystemRole] = mapped_column(
        enum_type(SystemRole, "user_role"), default=SystemRole.USER
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class MembershipRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """A user's role in an organization (seed 004's RBAC)."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("organization_id", "user_id"),
        {"info": {"rls": "membership"}},
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE", onupdate="CASCADE"), index=True
    )
    role: Mapped[MemberRole] = mapped_column(
        enum_type(MemberRole, "member_role"), default=MemberRole.MEMBER
    )
    invited_by_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL", onupdate="CASCADE")
    )


class UserSessionRow(IdMixin, TimestampMixin, Base):
    """A login token (opaque, stored as SHA-256) so that logout revokes it at once."""

    __tablename__ = "user_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE", onupdate="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ip_address: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)


class LoginFailureRow(IdMixin, Base):
    """A failed login, kept for throttling (keyed by the lower-cased email)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_created_at", "email", "created_at"),)

    email: Mapped[str] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ApiKeyRow(IdMixin, TimestampMixin, SoftDeleteMixin, TenantMixin, Base):
    """An API key (seeds 000/001): acts as its user inside one organization, narrowed by scopes."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("rate_limit_per_minute > 0", name="rate_limit_positive"),
        Index("ix_api_keys_key_prefix", "key_prefix"),
        Index("ix_api_keys_expires_at", "expires_at"),
        {"info": {"rls": "api_key"}},
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE", onupdate="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(20))
    scopes: Mapped[list[str]] = mapped_column(StrList, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)


class AuditLogRow(IdMixin, TenantMixin, Base):
    """One change, who made it, and what it changed, secrets redacted (seeds 000/001)."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_resource_type_resource_id", "resource_type", "resource_id"),
        Index("ix_audit_logs_action", "action"),
        Index("ix_audit_logs_organization_id_created_at", "organization_id", "created_at"),
        {"info": {"rls": "tenant"}},
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL", onupdate="CASCADE"), index=True
    )
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, ForeignKey("api_keys.id", ondelete="SET NULL", onupdate="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(50))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(GUID)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDoc, default=dict)
    ip_address: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
