"""Bodies for the template library."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from pydantic import Field, computed_field

from turbocat.api.schemas.catalog import AgentRead
from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.api.schemas.workflows import WorkflowRead
from turbocat.domain.enums import (
    IntegrationProvider,
    TemplateDifficulty,
    TemplateType,
    WorkflowCategory,
)

DATA_HELP = (
    "workflow: {definition, name?, description?, category?, tags?}; agent: {type, config, "
    "name?, description?, parameters?, capabilities?, tags?}; step: {step, vars?, name?, "
    "description?}"
)
CONFIG_HELP = (
    "JSON Schema (type object) of the configuration accepted at instantiation; each property "
    "names a definition var (workflow, step) or a config field (agent)"
)


class _TemplateFields(RequestModel):
    description: str | None = Field(default=None, max_length=10_000)
    category: WorkflowCategory | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    is_public: bool | None = None
    difficulty: TemplateDifficulty | None = None
    estimated_time_savings: str | None = Field(default=None, max_length=100)
    required_integrations: list[IntegrationProvider] | None = None
    optional_integrations: list[IntegrationProvider] | None = None
    configuration_schema: dict[str, Any] | None = Field(default=None, description=CONFIG_HELP)


class TemplateCreate(_TemplateFields):
    name: str = Field(min_length=1, max_length=255)
    type: TemplateType
    template_data: dict[str, Any] = Field(description=DATA_HELP)


class TemplateUpdate(_TemplateFields):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    template_data: dict[str, Any] | None = Field(default=None, description=DATA_HELP)


class TemplateSummary(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="null for official templates")
    name: str
    description: str | None
    type: TemplateType
    category: str
    tags: list[str]
    is_official: bool
    is_public: bool
    usage_count: int
    rating_average: Decimal
    rating_count: int
    difficulty: TemplateDifficulty
    estimated_time_savings: str | None
    required_integrations: list[str]
    optional_integrations: list[str]
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class TemplateRead(TemplateSummary):
    template_data: dict[str, Any]
    configuration_schema: dict[str, Any] | None


class RatingCreate(RequestModel):
    rating: int = Field(ge=1, le=5)
    review: str | None = Field(default=None, max_length=5000)


class InstantiateRequest(RequestModel):
    """Overrides: ``name``/``description``/``tags`` replace the template's; ``configuration`` is
    checked against the template's ``configuration_schema`` and replaces the matching
    ``definition.vars`` (workflow and step templates) or ``config`` fields (agent templates)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=50)
    configuration: dict[str, Any] = Field(default_factory=dict)


class InstantiateResult(ReadModel):
    template: TemplateSummary
    workflow: WorkflowRead | None = None
    agent: AgentRead | None = None
    configuration: dict[str, Any] = Field(description="the configuration applied (with defaults)")
    missing_integrations: list[str] = Field(
        description="required integrations this organization has no active connection for"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warnings(self) -> list[str]:
        return [f"connect a {p} integration before running this" for p in self.missing_integrations]
