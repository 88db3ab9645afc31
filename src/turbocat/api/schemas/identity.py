"""Bodies for auth, users, organizations, members, API keys and audit logs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import AwareDatetime, EmailStr, Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import MemberRole, Plan, SystemRole


class SignupRequest(RequestModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    organization_name: str = Field(min_length=1, max_length=255)
    full_name: str | None = Field(default=None, max_length=255)


class LoginRequest(RequestModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)


class UserRead(ReadModel):
    id: uuid.UUID
    email: str
    full_name: str | None
    avatar_url: str | None
    role: SystemRole
    is_active: bool
    email_verified: bool
    last_login_at: dt.datetime | None
    preferences: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


class OrganizationRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    plan: Plan
    trial_ends_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class MyOrganizationRead(OrganizationRead):
    role: MemberRole = Field(description="the caller's role in this organization")


class UserMeRead(UserRead):
    organizations: list[MyOrganizationRead]


class TokenRead(ReadModel):
    access_token: str = Field(description="send as 'Authorization: Bearer <access_token>'")
    token_type: str = "bearer"
    expires_at: dt.datetime
    user: UserRead


class SignupRead(TokenRead):
    organization: OrganizationRead


class UserUpdate(RequestModel):
    full_name: str | None = Field(default=None, max_length=255)
    avatar_url: str | None = Field(default=None, max_length=2048)
    preferences: dict[str, Any] | None = None


class PasswordChange(RequestModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class OrganizationCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255)


class OrganizationUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)


class MemberRead(ReadModel):
    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: MemberRole
    created_at: dt.datetime


class MemberCreate(RequestModel):
    email: EmailStr
    role: MemberRole = MemberRole.MEMBER


class MemberUpdate(RequestModel):
    role: MemberRole


class ApiKeyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255)
    scopes: list[str] = Field(
        min_length=1,
        max_length=64,
        description="e.g. ['workflows:read', 'executions:write'] or ['*']; write implies read",
    )
    expires_at: AwareDatetime | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=100_000)


class ApiKeyRead(ReadModel):
    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[str]
    is_active: bool
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    usage_count: int
    rate_limit_per_minute: int
    user_id: uuid.UUID
    organization_id: uuid.UUID
    created_at: dt.datetime


class ApiKeyCreated(ApiKeyRead):
    secret: str = Field(description="the API key itself; shown once, never again")


class AuditLogRead(ReadModel):
    id: uuid.UUID
    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    changes: dict[str, Any]
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    ip_address: str | None
    user_agent: str | None
    created_at: dt.datetime


class AdminUserRead(UserRead):
    deleted_at: dt.datetime | None


class WorkerRead(ReadModel):
    worker_id: str
    hostname: str
    pid: int | None
    queues: list[str]
    status: str
    concurrency: int
    version: str | None
    last_heartbeat_at: dt.datetime
    started_at: dt.datetime
    stopped_at: dt.datetime | None
