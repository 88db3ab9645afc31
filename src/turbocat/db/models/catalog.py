"""The catalog: components, agent prompts, agents and integrations (SPEC section 3, Catalog)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, SoftDeleteMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import (
    CreatedByMixin,
    OptionalTenantMixin,
    fk,
    fts_index,
    gin_index,
    partial_index,
)
from turbocat.db.types import GUID, JSONDoc, StrList, UTCDateTime, enum_type
from turbocat.domain.enums import (
    AgentStatus,
    AgentType,
    ComponentKind,
    IntegrationProvider,
    IntegrationStatus,
    Visibility,
)


class AgentPromptRow(IdMixin, TimestampMixin, OptionalTenantMixin, CreatedByMixin, Base):
    """A versioned prompt (seed 003) that also covers seed 002's agent templates.

    ``organization_id`` NULL marks a built-in prompt visible to every tenant. Versions of one
    prompt share ``name``; uniqueness is per organization (seed 003 scoped it to the creating
    user, who was the tenant there), and separately among built-ins.
    """

    __tablename__ = "agent_prompts"
    __table_args__ = (
        UniqueConstraint("organization_id", "name", "version"),
        partial_index(
            "uq_agent_prompts_builtin_name_version",
            "name",
            "version",
            unique=True,
            where="organization_id IS NULL",
        ),
        Index("ix_agent_prompts_visibility", "visibility"),
        gin_index("agent_prompts", "capabilities"),
        gin_index("agent_prompts", "tags"),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(50), default="1.0.0")
    role: Mapped[str | None] = mapped_column(String(255))
    prompt_content: Mapped[str] = mapped_column(Text)
    prompt_variables: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    model_provider: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    """Model parameters (temperature, max_tokens, ...) as in seed 002."""
    recommended_models: Mapped[list[Any]] = mapped_column(JSONDoc, default=list)
    capabilities: Mapped[list[str]] = mapped_column(StrList, default=list)
    tags: Mapped[list[str]] = mapped_column(StrList, default=list)
    visibility: Mapped[Visibility] = mapped_column(
        enum_type(Visibility, "visibility"), default=Visibility.ORGANIZATION
    )
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)


class ComponentRow(IdMixin, TimestampMixin, OptionalTenantMixin, CreatedByMixin, Base):
    """What a step can run (seed 003): a built-in kind or a user-registered implementation.

    ``organization_id`` NULL marks a platform-wide row: a built-in kind, or a ``custom``
    component a worker registered from its entry points. Custom components are Python callables
    (``implementation_path`` = ``package.module:function``) served by workers on ``task_queue``
    (docs/components.md).
    """

    __tablename__ = "components"
    __table_args__ = (
        UniqueConstraint("organization_id", "name", "version"),
        partial_index(
            "uq_components_builtin_name_version",
            "name",
            "version",
            unique=True,
            where="organization_id IS NULL",
        ),
        Index("ix_components_name_version", "name", "version"),
        Index("ix_components_kind", "kind"),
        Index("ix_components_visibility", "visibility"),
        gin_index("components", "tags"),
        gin_index("components", "capabilities"),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[ComponentKind] = mapped_column(enum_type(ComponentKind, "component_kind"))
    version: Mapped[str] = mapped_column(String(50), default="1.0.0")
    visibility: Mapped[Visibility] = mapped_column(
        enum_type(Visibility, "visibility"), default=Visibility.ORGANIZATION
    )
    config_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    output_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    tags: Mapped[list[str]] = mapped_column(StrList, default=list)
    capabilities: Mapped[list[str]] = mapped_column(StrList, default=list)
    agent_prompt_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("agent_prompts.id", "SET NULL"), index=True
    )
    model_provider: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str | None] = mapped_column(String(255))
    implementation_path: Mapped[str | None] = mapped_column(String(500))
    package: Mapped[str | None] = mapped_column(String(255))
    """Distribution that provides the implementation (seed 003's npm_package, for Python)."""
    task_queue: Mapped[str | None] = mapped_column(String(255))
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentRow(IdMixin, TimestampMixin, SoftDeleteMixin, TenantMixin, CreatedByMixin, Base):
    """An agent (seeds 000/001). Versions are rows linked by ``parent_id`` (SPEC section 9)."""

    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "max_execution_time IS NULL OR max_execution_time > 0",
            name="max_execution_time_positive",
        ),
        CheckConstraint(
            "max_memory_mb IS NULL OR max_memory_mb > 0", name="max_memory_mb_positive"
        ),
        CheckConstraint(
            "max_concurrent_executions IS NULL OR max_concurrent_executions > 0",
            name="max_concurrent_executions_positive",
        ),
        CheckConstraint(
            "total_executions >= 0 AND successful_executions >= 0 AND failed_executions >= 0"
            " AND avg_execution_time_ms >= 0",
            name="counters_non_negative",
        ),
        Index("ix_agents_organization_id_name", "organization_id", "name"),
        partial_index("ix_agents_type", "type", where="deleted_at IS NULL"),
        partial_index("ix_agents_status", "status", where="deleted_at IS NULL"),
        partial_index("ix_agents_is_public", "is_public", where="deleted_at IS NULL AND is_public"),
        Index("ix_agents_organization_id_created_at", "organization_id", "created_at"),
        gin_index("agents", "tags"),
        gin_index("agents", "capabilities"),
        fts_index("agents"),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[AgentType] = mapped_column(enum_type(AgentType, "agent_type"))
    status: Mapped[AgentStatus] = mapped_column(
        enum_type(AgentStatus, "agent_status"), default=AgentStatus.DRAFT
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("agents.id", "SET NULL"), index=True
    )
    agent_prompt_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("agent_prompts.id", "SET NULL"), index=True
    )
    """An llm agent references a prompt, or carries model and system prompt inline in config."""
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    capabilities: Mapped[list[str]] = mapped_column(StrList, default=list)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    """JSON Schema of the agent's inputs."""
    max_execution_time: Mapped[int | None] = mapped_column(Integer, default=300)
    """Seconds."""
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, default=512)
    max_concurrent_executions: Mapped[int | None] = mapped_column(Integer, default=1)
    total_executions: Mapped[int] = mapped_column(Integer, default=0)
    successful_executions: Mapped[int] = mapped_column(Integer, default=0)
    failed_executions: Mapped[int] = mapped_column(Integer, default=0)
    avg_execution_time_ms: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[str]] = mapped_column(StrList, default=list)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_template: Mapped[bool] = mapped_column(Boolean, default=False)


class IntegrationRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A connection to an external service (seed 004), credentials encrypted at rest.

    ``credentials_encrypted`` is the AES-256-GCM envelope (nonce, ciphertext, tag) whose
    associated data binds it to this row's organization and id; ``credentials_key_id`` names
    the key that sealed it, so keys can rotate.
    """

    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        Index("ix_integrations_provider", "provider"),
        Index("ix_integrations_status", "status"),
        {"info": {"rls": "tenant"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    provider: Mapped[IntegrationProvider] = mapped_column(
        enum_type(IntegrationProvider, "integration_provider")
    )
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    credentials_key_id: Mapped[str | None] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    status: Mapped[IntegrationStatus] = mapped_column(
        enum_type(IntegrationStatus, "integration_status"), default=IntegrationStatus.ACTIVE
    )
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
